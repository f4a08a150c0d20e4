"""Timing and describing CUDA devices, shared by the GPU backends (torch-cuda, tensorrt).

A GPU runs work asynchronously: a host clock around a launch measures the launch, not the
kernel. ``time_device_runs`` therefore records an event pair around every run on the device's
stream, queues the whole series, synchronises once, and reads each pair's elapsed time. The
policy (warm-up, repeat count from the fastest warm-up run, retry of a noisy series keeping the
lowest median) is ``timing.TimingPolicy``'s, so a GPU cell means what a CPU cell means.
The runtime-specific parts (how to make, record and read events, how to synchronise) come in as
a ``DeviceClock``.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

from mdp_trt.latency.backends.timing import TimingPolicy, summarise
from mdp_trt.latency.protocol import Measurement

__all__ = ["DeviceClock", "time_device_runs", "gpu_description"]


@dataclass(frozen=True)
class DeviceClock:
    """One runtime's event API: ``new_event()`` makes a timing event, ``record(event)`` enqueues
    it on the stream the runs use, ``elapsed_ms(start, end)`` reads a completed pair,
    ``synchronize()`` waits until the stream is idle, ``release(event)`` frees an event (for
    runtimes whose events are not garbage-collected)."""

    new_event: Callable[[], object]
    record: Callable[[object], None]
    elapsed_ms: Callable[[object, object], float]
    synchronize: Callable[[], None]
    release: Callable[[object], None] = lambda event: None


def time_device_runs(run: Callable[[], object], clock: DeviceClock,
                     policy: TimingPolicy) -> Measurement:
    """Time ``run()`` (which only enqueues work on the clock's stream) under ``policy``."""
    warm: list[float] = []
    start = time.perf_counter()
    while len(warm) < policy.warmup_runs or time.perf_counter() - start < policy.warmup_s:
        t0 = time.perf_counter()
        run()
        clock.synchronize()
        warm.append(time.perf_counter() - t0)
    # Host time of a synchronised run bounds the device time from above: a safe estimate for
    # choosing the repeat count.
    estimate_s = max(min(warm), 1e-9)
    repeats = int(min(policy.max_repeats, max(policy.min_repeats, policy.budget_s / estimate_s)))
    # Events are reused across series; a series is read only after the stream is idle.
    events = [(clock.new_event(), clock.new_event()) for _ in range(repeats)]
    best: Measurement | None = None
    try:
        for _ in range(1 + policy.retries):
            for begin, end in events:
                clock.record(begin)
                run()
                clock.record(end)
            clock.synchronize()
            m = summarise([clock.elapsed_ms(begin, end) for begin, end in events])
            if best is None or m.median_ms < best.median_ms:
                best = m
            if m.spread <= policy.max_spread:
                break
    finally:
        clock.synchronize()
        for pair in events:
            for event in pair:
                clock.release(event)
    return best


def gpu_description(device: int = 0) -> str:
    """The GPU's product name and memory, as the driver reports it (``nvidia-smi``).

    One description for every GPU backend, independent of which CUDA runtime each loads, so a
    cache row's device means the same board whichever backend wrote it. ``device`` is the index
    among the devices visible to this process (``CUDA_VISIBLE_DEVICES``, which Ray sets).
    """
    # nvidia-smi numbers boards physically; a process (a Ray worker) may see only some of them.
    visible = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    board = visible[device] if device < len(visible) else str(device)
    try:
        result = subprocess.run(
            ["nvidia-smi", f"--id={board}", "--query-gpu=name,memory.total",
             "--format=csv,noheader"], capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return f"CUDA device {device}"
    return result.stdout.strip() or f"CUDA device {device}"
