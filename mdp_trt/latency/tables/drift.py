"""Machine drift during profiling: a reference cell timed between batches of cells.

A slowdown lasting minutes inflates every cell timed during it, which the noisy-series retry of
one cell cannot see. So ``REFERENCE`` is timed before the first cell and after every batch of
``every_cells`` cells or ``every_s`` seconds. The quiet speed is read from the references between
batches (the fastest while fewer than ``QUIET_MIN_REFS`` exist, then their 20th percentile; never
the opening one); a batch whose references are slower than that by more than ``tolerance`` (or
the reference's own spread, when larger) is measured again, keeping each cell's fastest timing,
up to ``max_attempts`` times in all. A profile of at most ``every_cells`` cells is not guarded,
unless it is a later round of one that was (``DriftHistory``: adaptive cells time a profile in
rounds, and the rounds after the first are mostly short).
Details and the observations behind them: docs/latency-model-notes.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from mdp_trt.latency.protocol import LatencyBackend, Measurement
from mdp_trt.signature import LayerSignature

__all__ = ["DriftPolicy", "DriftLog", "DriftHistory", "REFERENCE", "QUIET_MIN_REFS", "measure_guarded",
           "workers_record"]

log = logging.getLogger(__name__)

QUIET_MIN_REFS = 5

# A mid-sized 3x3 conv (about 60 MFLOP, ~1 ms on one CPU core): long enough to time steadily,
# short enough to repeat often, and dominated by the same kernels as most table cells.
REFERENCE = LayerSignature("Conv", 64, 64, kernel=(3, 3), strides=(1, 1), pads=(1, 1, 1, 1),
                           dilations=(1, 1), input_hw=(28, 28), activation="Relu")


@dataclass(frozen=True)
class DriftPolicy:
    """When to time the reference cell and how much slowdown to accept (see module doc).

    A reference timing (about 0.15 s) per 64 cells (about 8 s of profiling) costs ~2%.
    """

    every_cells: int = 64
    every_s: float = 30.0
    tolerance: float = 0.08
    max_attempts: int = 3

    def __post_init__(self) -> None:
        if self.every_cells < 1 or self.every_s <= 0 or self.tolerance <= 0 or self.max_attempts < 1:
            raise ValueError(f"inconsistent drift policy: {self}")


@dataclass(frozen=True)
class DriftLog:
    """What the guard saw: every reference timing (ms, in order), how many cell timings were
    repeated, and how many batches were still disturbed after ``max_attempts``."""

    reference_ms: tuple[float, ...] = ()
    remeasured_cells: int = 0
    unresolved_batches: int = 0

    @property
    def max_drift(self) -> float:
        """Largest relative excess of a reference timing over the fastest one."""
        if not self.reference_ms:
            return 0.0
        best = min(self.reference_ms)
        return max(self.reference_ms) / best - 1

    def to_json(self) -> dict:
        return {**asdict(self), "reference_ms": list(self.reference_ms), "max_drift": self.max_drift}

    @classmethod
    def joined(cls, logs: Sequence["DriftLog"]) -> "DriftLog":
        """One log for guarded runs timed in turn on one device (a Ray worker's chunks)."""
        return cls(tuple(ms for log in logs for ms in log.reference_ms),
                   sum(log.remeasured_cells for log in logs),
                   sum(log.unresolved_batches for log in logs))


@dataclass
class DriftHistory:
    """The reference timings of a profile's earlier rounds on this device (``measure_guarded``
    appends to it): a later round, however short, is guarded and judged by the same quiet
    speed."""

    reference_ms: list[float] = field(default_factory=list)
    spreads: list[float] = field(default_factory=list)


def workers_record(logs: Mapping[str, Sequence[DriftLog]]) -> dict:
    """The drift record of cells timed on several workers (worker name -> its runs' logs).

    ``max_drift``, ``remeasured_cells`` and ``unresolved_batches`` mean what ``DriftLog.to_json``
    gives for one device (the largest drift, the sums), and ``workers`` holds each worker's own
    record. Reference timings are compared within a worker only: each times its own device.
    """
    per_worker = {name: DriftLog.joined(runs) for name, runs in sorted(logs.items())}
    return {
        "max_drift": max((log.max_drift for log in per_worker.values()), default=0.0),
        "remeasured_cells": sum(log.remeasured_cells for log in per_worker.values()),
        "unresolved_batches": sum(log.unresolved_batches for log in per_worker.values()),
        "workers": {name: log.to_json() for name, log in per_worker.items()},
    }


Cell = tuple[LayerSignature, int, int]  # signature, out_channels, in_channels
OnMeasured = Callable[[int, Measurement, float | None], None]


def measure_guarded(backend: LatencyBackend, cells: Sequence[Cell], on_measured: OnMeasured, *,
                    policy: DriftPolicy | None = DriftPolicy(),
                    reference: LayerSignature = REFERENCE,
                    clock: Callable[[], float] = time.monotonic,
                    history: DriftHistory | None = None) -> DriftLog:
    """Measure ``cells`` on the active ``backend`` under the reference-cell guard.

    ``on_measured(index, measurement, drift)`` is called as soon as cell ``index`` is timed
    (so an interrupted run keeps it), and again whenever a re-measurement is faster. ``drift``
    is the relative excess of the latest reference timing over the quiet one (None when the
    profile is too short to be guarded, or ``policy`` is None: no guard). ``history``: the
    earlier rounds' references, extended by this call's; the log has this call's only.
    """
    history = history if history is not None else DriftHistory()
    if policy is None or (len(cells) <= policy.every_cells and not history.reference_ms):
        for index, (sig, out_ch, in_ch) in enumerate(cells):
            on_measured(index, backend.measure_layer(sig, out_ch, in_ch), None)
        return DriftLog()

    def time_reference() -> float:
        m = backend.measure_layer(reference, reference.out_channels, reference.in_channels)
        refs.append(m.median_ms)
        spreads.append(m.spread)
        return refs[-1]

    def quiet() -> tuple[float, float]:
        """The machine's quiet reference time and that timing's spread (see module doc)."""
        # The opening reference follows the idle set-up, not a batch of cells: once a closing
        # one exists, only those count.
        first = 1 if len(refs) > 1 else 0
        pool = refs[first:]
        if len(pool) < QUIET_MIN_REFS:
            index = first + int(np.argmin(pool))
        else:
            index = first + pool.index(float(np.quantile(pool, 0.2, method="inverted_cdf")))
        return refs[index], spreads[index]

    refs, spreads = history.reference_ms, history.spreads
    earlier = len(refs)
    best: dict[int, Measurement] = {}

    def measure(index: int, drift: float) -> None:
        m = backend.measure_layer(*cells[index])
        if index not in best or m.median_ms < best[index].median_ms:
            best[index] = m
            on_measured(index, m, drift)

    remeasured = unresolved = 0
    opening = time_reference()
    start = 0
    while start < len(cells):
        # The first pass decides the batch's extent (count or time); repeats redo exactly it.
        batch_start, stop = clock(), start
        drift = opening / quiet()[0] - 1
        while stop < len(cells) and stop - start < policy.every_cells and (
                stop == start or clock() - batch_start < policy.every_s):
            measure(stop, drift)
            stop += 1
        for attempt in range(1, policy.max_attempts + 1):
            if attempt > 1:
                # The last closing reference was disturbed: only a fresh one tells whether the
                # repeat starts on a quiet machine.
                opening = time_reference()
                drift = opening / quiet()[0] - 1
                for index in range(start, stop):
                    measure(index, drift)
                remeasured += stop - start
            closing = time_reference()
            quiet_ms, quiet_spread = quiet()
            worst = max(opening, closing) / quiet_ms - 1
            tolerance = max(policy.tolerance, quiet_spread)
            if worst <= tolerance:
                break
            if attempt < policy.max_attempts:
                log.warning("reference cell took %.3f ms around cells %d-%d, %.0f%% above its "
                            "quiet %.3f ms: the machine is loaded; measuring those %d cells "
                            "again", max(opening, closing), start + 1, stop, 100 * worst, quiet_ms,
                            stop - start)
            else:
                unresolved += 1
                log.warning("reference cell still %.0f%% above its quiet %.3f ms after %d "
                            "timings of cells %d-%d: the machine stays loaded, keeping each "
                            "cell's fastest timing (re-profile on a quiet machine for exact "
                            "tables)", 100 * worst, quiet_ms, attempt, start + 1, stop)
        start, opening = stop, closing
    return DriftLog(tuple(refs[earlier:]), remeasured, unresolved)
