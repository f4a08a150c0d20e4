"""scikit-learn's bundled 8x8 digits (1 797 images, 0..16 grey levels): a second real data set
for accuracy evidence, offline.

Images are scaled to [0, 1] and normalised by fixed constants (the whole set's mean and standard
deviation, computed once and written here so that training, fine-tuning and evaluation cannot
drift apart); shape (N, 1, 8, 8) float32, labels int64.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from mdp_trt.data.splits import Splits, class_splits
from mdp_trt.errors import BackendUnavailable

__all__ = ["DIGITS_MEAN", "DIGITS_STD", "digits_three_way"]

DIGITS_MEAN, DIGITS_STD = 0.3053, 0.3760
TEST_PER_CLASS, VAL_PER_CLASS = 50, 25  # of 174..183 per class: about 105 left to train on


@lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise BackendUnavailable("the 8x8 digits come with scikit-learn: "
                                 "pip install 'mdp-trt[bench]' (or pip install scikit-learn)") from exc
    digits = load_digits()
    x = ((digits.images[:, None] / 16.0 - DIGITS_MEAN) / DIGITS_STD).astype(np.float32)
    y = digits.target.astype(np.int64)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def digits_three_way(seed: int, *, test_per_class: int = TEST_PER_CLASS,
                     val_per_class: int = VAL_PER_CLASS) -> Splits:
    """Train / validation / test parts of the 8x8 digits, drawn per digit by ``seed``."""
    x, y = _digits_arrays()
    return class_splits(x, y, seed=seed, test_per_class=test_per_class,
                        val_per_class=val_per_class, name="scikit-learn's 8x8 digits")
