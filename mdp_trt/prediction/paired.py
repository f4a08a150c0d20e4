"""A candidate's measured latency on the footing of the prediction: timed with the original.

The latency model is calibrated on the baseline measurement of the original. A candidate timed
alone later runs in another machine state: on a 2-core VM the same model's timing moved by up
to 20% between minutes, enough to send the closed loop after noise. Timed together with the
original (interleaved, on CPU), the candidate's *ratio* to the original survives a slow spell of
the machine; that ratio times the baseline is its latency in the machine state of the baseline
measurement, the one its prediction refers to. The timing itself is the caller's (a backend's
``benchmark_models``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

from mdp_trt.latency.protocol import Ratio

__all__ = ["PairedTiming", "paired_measure"]


class PairedTiming(NamedTuple):
    """A candidate's latency at the baseline's machine state (``ms``), the original's latency
    in the comparison (``original_ms``) and the candidate's ``ratio`` to the original."""

    ms: float
    original_ms: float
    ratio: Ratio


def paired_measure(compare: Callable[[Sequence[Path]], Sequence], original: Path,
                   baseline_ms: float) -> Callable[[Path], PairedTiming]:
    """A measure for candidate models: each timed together with the ``original`` by
    ``compare`` (paths -> results with ``latency_ms`` and, after the first, ``ratio``:
    ``benchmark_models``) and its ratio to the original scaled to ``baseline_ms``."""
    def timed(path: Path) -> PairedTiming:
        now, candidate = compare([original, path])
        return PairedTiming(candidate.ratio.value * baseline_ms, now.latency_ms, candidate.ratio)
    return timed
