"""The host as every backend describes it: its CPU (named in CPU fingerprints, so a cache row's
device means the same CPU whichever backend wrote it), the cores this process may use (the cap
on ``threads``) and its last-level cache (what cold cells overflow)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

__all__ = ["cpu_description", "usable_cores", "llc_bytes"]


def cpu_description() -> str:
    """CPU model name (from /proc/cpuinfo where there is one) and logical core count."""
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.lower().startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    model = model or platform.processor() or platform.machine() or "unknown CPU"
    return f"{model}, {os.cpu_count() or 1} cores"


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
