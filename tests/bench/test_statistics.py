"""Seed statistics: sample spread and paired Student-t intervals, against hand-computed values."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("scipy", reason="the t quantiles come from scipy (pip install scipy)")

from mdp_trt.bench.statistics import paired_difference, spread  # noqa: E402


def test_spread_uses_the_sample_deviation():
    s = spread([1.0, 2.0, 3.0, 4.0])
    assert (s.mean, s.n) == (2.5, 4)
    assert s.sd == pytest.approx(math.sqrt(5 / 3))
    assert spread([7.0]).sd == 0.0
    with pytest.raises(ValueError):
        spread([])


def test_paired_difference_matches_the_t_interval_by_hand():
    # differences 1, 2, 3: mean 2, sd 1, t(0.975, 2 dof) = 4.302653
    d = paired_difference([11.0, 12.0, 13.0], [10.0, 10.0, 10.0])
    half = 4.302653 / math.sqrt(3)
    assert d.mean == pytest.approx(2.0)
    assert (d.low, d.high) == (pytest.approx(2 - half, abs=1e-5), pytest.approx(2 + half, abs=1e-5))
    assert d.verdict == "tied"  # the interval [-0.48, 4.48] holds 0


@pytest.mark.parametrize("a, b, verdict", [([5, 6, 5, 6], [1, 1, 1, 1], "ahead"),
                                           ([1, 1, 1, 1], [5, 6, 5, 6], "behind")])
def test_clear_differences_get_a_verdict(a, b, verdict):
    assert paired_difference(a, b).verdict == verdict


def test_pairing_needs_two_equal_length_samples():
    with pytest.raises(ValueError, match="two or more pairs"):
        paired_difference([1.0], [2.0])
    with pytest.raises(ValueError):
        paired_difference([1.0, 2.0], [2.0])
