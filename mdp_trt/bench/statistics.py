"""Seed statistics of the accuracy study: mean and spread, and paired differences with a
Student-t interval (seeds pair runs: the same fine-tuning seed draws the same batches)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Spread", "PairedDifference", "spread", "paired_difference"]


@dataclass(frozen=True)
class Spread:
    mean: float
    sd: float  # sample standard deviation (n - 1); 0 for one value
    n: int


@dataclass(frozen=True)
class PairedDifference:
    mean: float  # mean of a[i] - b[i]
    low: float  # the ``level`` interval of that mean (Student t, n - 1 degrees of freedom)
    high: float
    n: int

    @property
    def verdict(self) -> str:
        """'ahead', 'behind' or 'tied' (the interval contains 0)."""
        return "ahead" if self.low > 0 else "behind" if self.high < 0 else "tied"


def spread(values: Sequence[float]) -> Spread:
    n = len(values)
    if not n:
        raise ValueError("the spread of no values is undefined")
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return Spread(mean, sd, n)


def paired_difference(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> PairedDifference:
    """Mean of ``a[i] - b[i]`` with its ``level`` t-interval (needs two pairs at least)."""
    from scipy.stats import t

    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"a paired difference needs two or more pairs, got {len(a)} and {len(b)} values")
    d = spread([x - y for x, y in zip(a, b)])
    half = t.ppf((1 + level) / 2, d.n - 1) * d.sd / math.sqrt(d.n)
    return PairedDifference(d.mean, d.mean - half, d.mean + half, d.n)
