"""The timing loop shared by every backend: warm-up, an adaptive repeat count, robust statistics.

``CELL_POLICY`` bounds a table cell to about 0.1 s of timed runs; ``MODEL_POLICY`` times a whole
model for at least 30 runs and 3 s. Models that are compared (a candidate with the original) are
timed by ``time_interleaved`` in alternating blocks of ``block_s`` seconds, so that a slow spell
of the machine falls on all of them, and compared by each block's mean time per call (a median
of single calls understates the shorter model on a loaded machine). The ratio is the median of
the rounds' ratios with a distribution-free 95% interval; rounds go on until the interval is
within ``ratio_halfwidth`` or ``compare_s`` has passed (then it is marked unreliable). Why, with
the measurements: docs/latency-model-notes.md.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from mdp_trt.latency.protocol import RATIO_HALFWIDTH, Comparison, Measurement, Ratio

__all__ = ["TimingPolicy", "CELL_POLICY", "MODEL_POLICY", "time_runs", "time_interleaved",
           "summarise", "median_interval", "ratio_of_rounds"]


@dataclass(frozen=True)
class TimingPolicy:
    """How long to warm up and to time (seconds) and the bounds on the number of timed runs.

    Warm-up runs until both ``warmup_runs`` runs and ``warmup_s`` seconds are done (the first
    runs allocate buffers and fill caches). The timed run count is ``budget_s / estimate``
    clamped to ``[min_repeats, max_repeats]``, where the estimate is the fastest warm-up run.
    A series whose relative spread exceeds ``max_spread`` was disturbed (another process took
    the core for part of it); it is timed again, up to ``retries`` more times, and the series
    with the lowest median is kept, because interference only ever adds time. ``block_s`` is the
    length of one block when several models are timed interleaved (``time_interleaved``), which
    goes on past the repeat count until each ratio's 95% interval is within ``ratio_halfwidth``
    (relative) or ``compare_s`` seconds have passed.
    """

    warmup_runs: int = 2
    warmup_s: float = 0.01
    budget_s: float = 0.1
    min_repeats: int = 5
    max_repeats: int = 200
    max_spread: float = 0.5
    retries: int = 2
    block_s: float = 0.3
    ratio_halfwidth: float = RATIO_HALFWIDTH
    compare_s: float = 30.0

    def __post_init__(self) -> None:
        if (self.min_repeats < 1 or self.max_repeats < self.min_repeats or self.warmup_runs < 1
                or self.retries < 0 or self.max_spread <= 0 or self.block_s <= 0
                or self.ratio_halfwidth <= 0 or self.compare_s < 0):
            raise ValueError(f"inconsistent timing policy: {self}")


CELL_POLICY = TimingPolicy()
# Compared models alternate in 0.1 s blocks: a round's ratio then pairs two moments 0.1 s
# apart, and 30 s hold ~100 rounds. In 0.3 s blocks (~40 rounds) a 64x64 ResNet-18 plan's
# ratio with two busy processes on a 2-core VM stayed at +-2.6% to +-6% after 30 s, where an
# independent timing in 50 ms chunks reached +-1.4% to +-2% in 20 s (busy_machine results).
MODEL_POLICY = TimingPolicy(warmup_runs=5, warmup_s=0.5, budget_s=3.0, min_repeats=30,
                            max_repeats=10_000, block_s=0.1)


def summarise(samples_ms: list[float] | np.ndarray) -> Measurement:
    """Median, p10/p90 and relative spread of per-run times in milliseconds."""
    data = np.asarray(samples_ms, dtype=np.float64)
    if data.size == 0:
        raise ValueError("no samples to summarise")
    p10, median, p90 = (float(x) for x in np.percentile(data, [10, 50, 90]))
    spread = (p90 - p10) / median if median > 0 else 0.0
    return Measurement(median_ms=median, spread=spread, repeats=int(data.size), p10_ms=p10,
                       p90_ms=p90)


def time_runs(run: Callable[[], object], policy: TimingPolicy = CELL_POLICY) -> Measurement:
    """Time ``run()`` (one inference call with pre-bound inputs) under ``policy``."""
    repeats = _repeats(policy, _warm_up(run, policy))
    best: Measurement | None = None
    for _ in range(1 + policy.retries):
        m = summarise(_series(run, repeats))
        if best is None or m.median_ms < best.median_ms:
            best = m
        if m.spread <= policy.max_spread:
            break
    return best


# Rounds below which a median's 95% interval is the whole range of the ratios (order statistics).
_MIN_ROUNDS = 6


def time_interleaved(runs: Sequence[Callable[[], object]],
                     policy: TimingPolicy = MODEL_POLICY) -> Comparison:
    """Time each of ``runs`` as ``time_runs`` would (warm-up, then at least its repeat count),
    but in rounds of one block of about ``policy.block_s`` seconds per run, each block opened by
    one untimed call (switching models evicts the previous one's weights from cache); the order
    within a round alternates. Each measurement pools its run's blocks; each run after the first
    gets its ``Ratio`` to the first from the rounds' block means (module docstring). No retries:
    a slow spell falls on every run alike."""
    if not runs:
        return Comparison([], [])
    start = time.perf_counter_ns()
    estimates = [_warm_up(run, policy) for run in runs]
    per_block = [max(1, int(policy.block_s / e)) for e in estimates]
    minimum = max(_MIN_ROUNDS if len(runs) > 1 else 1,
                  *(math.ceil(_repeats(policy, e) / n) for e, n in zip(estimates, per_block)))
    samples: list[list[np.ndarray]] = [[] for _ in runs]
    while True:
        order = range(len(runs)) if len(samples[0]) % 2 == 0 else reversed(range(len(runs)))
        for k in order:
            runs[k]()
            samples[k].append(_series(runs[k], per_block[k]))
        rounds = len(samples[0])
        if rounds < minimum:
            continue
        ratios = [ratio_of_rounds(_block_means(out) / _block_means(samples[0]), policy)
                  for out in samples[1:]]
        spent = (time.perf_counter_ns() - start) / 1e9
        if all(r.reliable for r in ratios) or spent >= policy.compare_s:
            return Comparison([summarise(np.concatenate(out)) for out in samples], ratios)


def _block_means(blocks: list[np.ndarray]) -> np.ndarray:
    return np.array([block.mean() for block in blocks])


def median_interval(values: Sequence[float] | np.ndarray, level: float = 0.95
                    ) -> tuple[float, float]:
    """A distribution-free ``level`` confidence interval for the median of ``values``: the
    order statistics k and n-1-k (0-based) for the largest k whose binomial tail
    P(Binomial(n, 1/2) <= k) is at most (1 - level) / 2; the whole range for fewer values."""
    data = np.sort(np.asarray(values, dtype=np.float64))
    n = len(data)
    tail, k = 0.0, -1
    while k + 1 < n and tail + math.comb(n, k + 1) / 2 ** n <= (1 - level) / 2:
        k += 1
        tail += math.comb(n, k) / 2 ** n
    k = max(k, 0)
    return float(data[k]), float(data[n - 1 - k])


def ratio_of_rounds(ratios: np.ndarray, policy: TimingPolicy = MODEL_POLICY) -> Ratio:
    """The median of the rounds' ``ratios`` with its 95% interval, reliable when the interval
    is within ``policy.ratio_halfwidth`` of it."""
    low, high = median_interval(ratios)
    return Ratio.within(float(np.median(ratios)), low, high, len(ratios), policy.ratio_halfwidth)


def _warm_up(run: Callable[[], object], policy: TimingPolicy) -> float:
    """Warm-up calls; the fastest one (s) is the least disturbed estimate of a steady run on a
    busy machine."""
    warm: list[int] = []
    start = time.perf_counter_ns()
    while len(warm) < policy.warmup_runs or time.perf_counter_ns() - start < policy.warmup_s * 1e9:
        t0 = time.perf_counter_ns()
        run()
        warm.append(time.perf_counter_ns() - t0)
    return max(min(warm), 1) / 1e9


def _repeats(policy: TimingPolicy, estimate_s: float) -> int:
    return int(min(policy.max_repeats, max(policy.min_repeats, policy.budget_s / estimate_s)))


def _series(run: Callable[[], object], repeats: int) -> np.ndarray:
    """``repeats`` timed calls, in milliseconds."""
    samples = np.empty(repeats, dtype=np.float64)
    for i in range(repeats):
        t0 = time.perf_counter_ns()
        run()
        samples[i] = time.perf_counter_ns() - t0
    return samples / 1e6
