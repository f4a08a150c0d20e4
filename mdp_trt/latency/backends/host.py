"""The host as every backend describes it: its CPU (named in CPU fingerprints, so a cache row's
device means the same CPU whichever backend wrote it), the cores this process may use (the cap
on ``threads``) and its last-level cache (what cold cells overflow)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

__all__ = ["cpu_description", "usable_cores", "llc_bytes"]


# Widest vector extension first: ORT and PyTorch pick their kernels by it.
_VECTOR_ISAS = ("avx512f", "avx2", "avx", "sse4_2", "asimd", "neon")


def cpu_description(cpuinfo: str | None = None) -> str:
    """CPU model name, family / model numbers and widest vector extension (from /proc/cpuinfo
    where there is one), and logical core count. A VM may call two CPU generations the same
    ("AMD EPYC": Zen 3 with AVX2 and Zen 4 with AVX-512 ran the same model 2x apart), and
    cached cells of one must not stand for the other. ``cpuinfo``: the file's text (tests)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.split("\n\n", 1)[0].splitlines():  # the first processor's block
        key, _, value = line.partition(":")
        fields.setdefault(key.strip().lower(), value.strip())
    model = fields.get("model name") or platform.processor() or platform.machine() or "unknown CPU"
    flags = set((fields.get("flags") or fields.get("features") or "").split())
    details = [isa for isa in _VECTOR_ISAS if isa in flags][:1]
    if "cpu family" in fields and "model" in fields:
        details.insert(0, f"family {fields['cpu family']} model {fields['model']}")
    detail = f" ({', '.join(details)})" if details else ""
    return f"{model}{detail}, {os.cpu_count() or 1} cores"


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, which a container or ``taskset``
    narrows), where the platform tells; else all logical cores."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def llc_bytes() -> int:
    """Size of the largest CPU cache in bytes (sysfs); 32 MiB where it cannot be read."""
    sizes = []
    for entry in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        try:
            text = entry.read_text().strip().upper()
        except OSError:
            continue
        scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
        digits = text.rstrip("KMG")
        if digits.isdigit():
            sizes.append(int(digits) * scale)
    return max(sizes, default=32 * 2**20)
