"""scikit-learn's 8x8 digits: shapes, the fixed normalisation, the study's three parts."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sklearn", reason="the 8x8 digits come with scikit-learn (pip install scikit-learn)")

from mdp_trt.data.digits import DIGITS_MEAN, DIGITS_STD, digits_three_way  # noqa: E402


def test_three_parts_balanced_and_normalised():
    splits = digits_three_way(seed=0)
    assert splits.test.x.shape == (500, 1, 8, 8) and splits.val.x.shape == (250, 1, 8, 8)
    assert len(splits.train.y) == 1797 - 750
    assert np.bincount(splits.test.y).tolist() == [50] * 10
    everything = np.concatenate([splits.train.x, splits.val.x, splits.test.x])
    # grey levels 0..16 scaled to [0, 1], then the whole set's fixed mean and deviation
    assert everything.min() == pytest.approx(-DIGITS_MEAN / DIGITS_STD, abs=1e-5)
    assert everything.max() == pytest.approx((1 - DIGITS_MEAN) / DIGITS_STD, abs=1e-5)
    assert abs(everything.mean()) < 1e-3 and everything.std() == pytest.approx(1, abs=1e-3)
