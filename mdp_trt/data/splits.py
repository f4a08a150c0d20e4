"""Fixed, balanced train / validation / test splits of a labelled set, drawn per class.

The accuracy study needs a test set that nothing is ever chosen on (calibration, fine-tuning,
configuration) and a validation set for every choice. Both are drawn per class by their own
``seed`` (recorded with every result), independently of any training or fine-tuning seed, so a
fine-tuning seed never changes which images are held out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mdp_trt.data.datasets import ArrayDataset
from mdp_trt.errors import InputError

__all__ = ["Splits", "class_splits"]


@dataclass(frozen=True)
class Splits:
    name: str  # the labelled set they come from
    seed: int  # the draw of the held-out images
    train: ArrayDataset
    val: ArrayDataset
    test: ArrayDataset


def class_splits(x: np.ndarray, y: np.ndarray, *, seed: int, test_per_class: int,
                 val_per_class: int = 0, name: str = "the data") -> Splits:
    """``test_per_class`` images of each class form the test set and the next
    ``val_per_class`` the validation set (both drawn by ``seed``), the rest the training set;
    every part keeps the set's order otherwise (shuffling is for batches)."""
    classes = int(y.max()) + 1
    counts = np.bincount(y, minlength=classes)
    held = test_per_class + val_per_class
    if test_per_class < 1 or val_per_class < 0 or held >= counts.min():
        raise InputError(f"{name}: test_per_class {test_per_class} + val_per_class "
                         f"{val_per_class} must leave training images of every class (its "
                         f"rarest class has {counts.min()}); give smaller held-out parts")
    rng = np.random.default_rng(seed)
    part = np.zeros(len(y), dtype=np.int8)  # 0 train, 1 validation, 2 test
    for label in range(classes):
        drawn = rng.permutation(np.flatnonzero(y == label))
        part[drawn[:test_per_class]] = 2
        part[drawn[test_per_class:held]] = 1
    datasets = [ArrayDataset(x[part == k], y[part == k], source=f"{name} ({kind} split)")
                for k, kind in enumerate(("train", "validation", "test"))]
    return Splits(name, seed, *datasets)
