"""Balanced per-class splits: disjoint parts, the seed alone decides, held-out sizes checked."""

from __future__ import annotations

import numpy as np
import pytest

from mdp_trt.data.splits import class_splits
from mdp_trt.errors import InputError


def _labelled(per_class=(12, 10, 15)):
    y = np.concatenate([np.full(n, c) for c, n in enumerate(per_class)])
    x = np.arange(len(y), dtype=np.float32).reshape(-1, 1, 1, 1)  # each sample names itself
    return x, y


def test_parts_are_balanced_disjoint_and_cover_the_set():
    x, y = _labelled()
    splits = class_splits(x, y, seed=3, test_per_class=4, val_per_class=2, name="toy")
    assert np.bincount(splits.test.y).tolist() == [4, 4, 4]
    assert np.bincount(splits.val.y).tolist() == [2, 2, 2]
    assert np.bincount(splits.train.y).tolist() == [6, 4, 9]
    ids = [set(part.x.ravel().tolist()) for part in (splits.train, splits.val, splits.test)]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert set().union(*ids) == set(range(len(y)))
    assert (splits.name, splits.seed) == ("toy", 3)


def test_the_seed_alone_decides_and_validation_never_moves_the_test_part():
    x, y = _labelled()
    a = class_splits(x, y, seed=3, test_per_class=4, val_per_class=2)
    b = class_splits(x, y, seed=3, test_per_class=4, val_per_class=0)
    c = class_splits(x, y, seed=4, test_per_class=4, val_per_class=2)
    np.testing.assert_array_equal(a.test.x, b.test.x)
    assert not np.array_equal(a.test.x, c.test.x)
    assert len(b.val.y) == 0


@pytest.mark.parametrize("test, val", [(0, 1), (5, 5), (3, -1)])
def test_held_out_parts_must_leave_training_images(test, val):
    x, y = _labelled()
    with pytest.raises(InputError, match="toy: test_per_class"):
        class_splits(x, y, seed=0, test_per_class=test, val_per_class=val, name="toy")
