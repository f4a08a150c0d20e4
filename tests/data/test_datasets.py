"""Datasets from .npz files and image folders; splits and batches."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mdp_trt.data import ArrayDataset, load_dataset
from mdp_trt.data.datasets import IMAGENET_MEAN, IMAGENET_STD
from mdp_trt.errors import InputError

SHAPE = (1, 3, 8, 6)


def _npz(tmp_path, name="d.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def _dataset(n=10, labels=True):
    x = np.arange(n * 3 * 2 * 2, dtype=np.float32).reshape(n, 3, 2, 2)
    return ArrayDataset(x, np.arange(n, dtype=np.int64) % 3 if labels else None)


def test_npz_is_used_as_is(tmp_path):
    x = np.random.default_rng(0).standard_normal((5, 3, 8, 6)) * 100  # float64, unnormalised
    data = load_dataset(_npz(tmp_path, x=x, y=np.array([0, 1, 2, 1, 0], np.int32)), SHAPE)
    assert data.x.dtype == np.float32 and data.y.dtype == np.int64
    np.testing.assert_allclose(data.x, x.astype(np.float32))
    assert data.y.tolist() == [0, 1, 2, 1, 0] and len(data) == 5
    assert load_dataset(_npz(tmp_path, "nolabels.npz", x=x)).y is None


@pytest.mark.parametrize("arrays,message", [
    ({"images": np.zeros((2, 3, 8, 6))}, r"no array 'x' \(it holds: images\)"),
    ({"x": np.zeros((2, 8, 6))}, r"x has shape \[2, 8, 6\]; give N x C x H x W"),
    ({"x": np.zeros((2, 1, 8, 6))}, r"samples are 1x8x6 .* the model takes 3x8x6"),
    ({"x": np.zeros((2, 3, 6, 8))}, r"samples are 3x6x8 .* the model takes 3x8x6"),
    ({"x": np.zeros((2, 3, 8, 6)), "y": np.zeros(3)}, r"y has shape \[3\] but x holds 2"),
])
def test_bad_npz_is_refused_with_the_reason(tmp_path, arrays, message):
    with pytest.raises(InputError, match=message):
        load_dataset(_npz(tmp_path, **arrays), SHAPE)


def test_missing_path_and_wrong_kind_are_refused(tmp_path):
    with pytest.raises(InputError, match="nope.npz: no such file or folder"):
        load_dataset(tmp_path / "nope.npz")
    (tmp_path / "data.csv").write_text("1,2")
    with pytest.raises(InputError, match="must be an .npz file"):
        load_dataset(tmp_path / "data.csv")


def _image(path, color, size=(12, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def test_class_folders_give_sorted_labels_resized_normalised_images(tmp_path):
    _image(tmp_path / "dog" / "a.png", (255, 0, 0))
    _image(tmp_path / "cat" / "b.jpg", (0, 0, 0))
    _image(tmp_path / "cat" / "c.BMP", (255, 255, 255))
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    data = load_dataset(tmp_path, SHAPE)
    assert data.x.shape == (3, 3, 8, 6) and data.x.dtype == np.float32
    assert data.y.tolist() == [0, 0, 1]  # cat/b, cat/c, dog/a
    mean, std = np.asarray(IMAGENET_MEAN), np.asarray(IMAGENET_STD)
    np.testing.assert_allclose(data.x[0, :, 0, 0], (0 - mean) / std, atol=1e-5)
    np.testing.assert_allclose(data.x[1, :, 3, 3], (1 - mean) / std, atol=1e-5)
    np.testing.assert_allclose(data.x[2, :, 4, 2], ([1, 0, 0] - mean) / std, atol=1e-5)


def test_loose_images_have_no_labels_and_grey_models_get_one_channel(tmp_path):
    _image(tmp_path / "x.png", (255, 255, 255))
    data = load_dataset(tmp_path, (1, 1, 4, 4))
    assert data.y is None and data.x.shape == (1, 1, 4, 4)
    np.testing.assert_allclose(data.x, 1.0)  # grey models: [0, 1], no ImageNet statistics


def test_bad_folders_are_refused(tmp_path):
    with pytest.raises(InputError, match="holds no images"):
        load_dataset(tmp_path, SHAPE)
    _image(tmp_path / "x.png", (0, 0, 0))
    with pytest.raises(InputError, match="give the input shape"):
        load_dataset(tmp_path)
    with pytest.raises(InputError, match="give an .npz instead"):
        load_dataset(tmp_path, (1, 4, 8, 8))
    _image(tmp_path / "cls" / "y.png", (0, 0, 0))
    with pytest.raises(InputError, match="both directly .* and in class sub-folders"):
        load_dataset(tmp_path, SHAPE)
    (tmp_path / "cls" / "broken.png").write_bytes(b"not a png")
    (tmp_path / "x.png").unlink()
    with pytest.raises(InputError, match="broken.png is not a readable image"):
        load_dataset(tmp_path, SHAPE)


def test_split_is_a_seeded_partition_in_order():
    data = _dataset(10)
    first, rest = data.split(0.3, seed=4)
    assert len(first) == 3 and len(rest) == 7
    ids = sorted(first.x[:, 0, 0, 0].tolist() + rest.x[:, 0, 0, 0].tolist())
    assert ids == data.x[:, 0, 0, 0].tolist()
    assert first.x[:, 0, 0, 0].tolist() == sorted(first.x[:, 0, 0, 0].tolist())
    assert np.array_equal(data.split(0.3, seed=4)[0].x, first.x)
    assert not np.array_equal(data.split(0.3, seed=5)[0].x, first.x)
    np.testing.assert_array_equal(first.y, (first.x[:, 0, 0, 0] / 12).astype(np.int64) % 3)
    with pytest.raises(InputError, match="fraction 1.0 must be in"):
        data.split(1.0)


def test_batches_cover_every_sample_once():
    data = _dataset(10)
    ordered = list(data.batches(4))
    assert [len(x) for x, _ in ordered] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([x for x, _ in ordered]), data.x)
    shuffled = list(data.batches(4, shuffle=True, seed=1))
    seen = np.concatenate([y for _, y in shuffled])
    keys = np.concatenate([x[:, 0, 0, 0] for x, _ in shuffled])
    assert sorted(keys.tolist()) == data.x[:, 0, 0, 0].tolist()
    assert keys.tolist() != data.x[:, 0, 0, 0].tolist()
    np.testing.assert_array_equal(seen, (keys / 12).astype(np.int64) % 3)  # labels follow samples
    assert all(y is None for _, y in _dataset(3, labels=False).batches(2))


def test_labels_must_match_samples():
    with pytest.raises(InputError, match=r"y has shape \[2\] but x holds 3 samples; give one "
                                         "class index per sample"):
        ArrayDataset(np.zeros((3, 1, 2, 2), np.float32), np.zeros(2, np.int64))


def _images_with(value, at, dtype=np.float32):
    """Six all-zero 3x8x6 samples with ``value`` at the (sample, c, h, w) positions ``at``."""
    x = np.zeros((6, 3, 8, 6), dtype)
    for index in at:
        x[index] = value
    return x


@pytest.mark.parametrize("x,message", [
    (_images_with(np.nan, [(4, 0, 1, 1)]),
     r"1 NaN and 0 inf values \(as float32\) in 1 of 6 samples \(first: sample 4\); replace or "
     "drop those samples"),
    (_images_with(np.inf, [(2, 0, 0, 0), (2, 1, 0, 0), (5, 2, 7, 5)]),
     r"0 NaN and 3 inf values \(as float32\) in 2 of 6 samples \(first: sample 2\)"),
    (_images_with(-np.inf, [(1, 0, 0, 0)]) + _images_with(np.nan, [(0, 2, 0, 0)]),
     r"1 NaN and 1 inf values \(as float32\) in 2 of 6 samples \(first: sample 0\)"),
    # finite as float64, but inf once stored as the float32 that every model takes
    (_images_with(1e39, [(3, 0, 0, 0)], np.float64),
     r"0 NaN and 1 inf values \(as float32\) in 1 of 6 samples \(first: sample 3\)"),
])
def test_non_finite_samples_are_refused_naming_the_file_and_sample(tmp_path, x, message):
    path = _npz(tmp_path, x=x, y=np.zeros(6, np.int64))
    with pytest.raises(InputError, match=rf"d.npz: x holds {message}"):
        load_dataset(path, SHAPE)


@pytest.mark.parametrize("y,message", [
    (np.array([0, 1, 2, 1], np.float32),
     r"y must hold integer class indices, got float32; if the values are whole numbers, cast "
     r"with y.astype\(np.int64\)"),
    # 0.9 would have been truncated to class 0
    (np.array([0.0, 1.0, 0.9, 1.0]), "y must hold integer class indices, got float64"),
    (np.array([True, False, True, True]), "y must hold integer class indices, got bool"),
    (np.array([0, -1, 2, -3], np.int8), r"y holds 2 negative labels \(first: sample 1, -1\); "
                                        "class indices start at 0"),
    (np.array(["cat", "dog", "cat", "dog"]), "y must hold integer class indices, got <U3"),
])
def test_labels_that_are_no_class_indices_are_refused(tmp_path, y, message):
    path = _npz(tmp_path, x=np.zeros((4, 3, 8, 6), np.float32), y=y)
    with pytest.raises(InputError, match=f"d.npz: {message}"):
        load_dataset(path, SHAPE)


def test_integer_labels_of_any_width_become_int64(tmp_path):
    for dtype in (np.uint8, np.int16, np.uint32):
        data = load_dataset(_npz(tmp_path, x=np.zeros((3, 3, 8, 6)), y=np.array([2, 0, 1], dtype)))
        assert data.y.dtype == np.int64 and data.y.tolist() == [2, 0, 1]


def test_arrays_that_are_no_numbers_are_refused(tmp_path):
    with pytest.raises(InputError, match=r"d.npz: x has dtype <U1; save the samples as real"):
        load_dataset(_npz(tmp_path, x=np.full((2, 3, 8, 6), "a")), SHAPE)
    objects = np.empty((2, 3, 8, 6), object)
    with pytest.raises(InputError, match=r"o.npz: its arrays cannot be read .*Object arrays.*; "
                                         "save plain numeric arrays"):
        load_dataset(_npz(tmp_path, "o.npz", x=objects), SHAPE)


def test_directly_built_datasets_are_checked_and_subsets_keep_the_source():
    with pytest.raises(InputError, match=r"^the data: x holds 1 NaN"):
        ArrayDataset(_images_with(np.nan, [(0, 0, 0, 0)]))
    with pytest.raises(InputError, match=r"^mine: y must hold integer class indices"):
        ArrayDataset(np.zeros((2, 3)), np.zeros(2), source="mine")
    data = ArrayDataset(np.zeros((4, 3), np.float64), np.array([0, 1, 2, 3], np.int32), "mine")
    assert data.x.dtype == np.float32 and data.y.dtype == np.int64
    assert data.split(0.5)[0].source == "mine"


def test_labels_beyond_the_model_classes_are_refused():
    data = ArrayDataset(np.zeros((3, 2), np.float32), np.array([0, 4, 2]), "d.npz")
    data.check_classes(5)
    ArrayDataset(np.zeros((3, 2), np.float32)).check_classes(1)  # no labels: nothing to check
    with pytest.raises(InputError, match=r"d.npz: labels must be class indices in 0..3 \(the model "
                                         r"has 4 outputs\); y holds 0..4"):
        data.check_classes(4)


def test_a_pillow_plugin_that_cannot_load_still_gives_a_clear_error(tmp_path, monkeypatch):
    """ultralytics patches Image.open to import a HEIF plugin when Pillow cannot identify a
    file; without the plugin installed, the broken file is still named."""
    from PIL import Image

    def patched_open(path, *args, **kwargs):
        raise ModuleNotFoundError("No module named 'pi_heif'")

    _image(tmp_path / "cls" / "y.png", (0, 0, 0))
    monkeypatch.setattr(Image, "open", patched_open)
    with pytest.raises(InputError, match=r"y.png is not a readable image \(No module named 'pi_heif'\)"):
        load_dataset(tmp_path, SHAPE)


def test_a_saved_dataset_loads_back_unchanged_and_leaves_no_partial_file(tmp_path):
    x = np.arange(12, dtype=np.float32).reshape(3, 1, 2, 2)
    for y in (None, np.array([2, 0, 1])):
        path = ArrayDataset(x, y).save(tmp_path / "set.npz")
        loaded = load_dataset(path)
        np.testing.assert_array_equal(loaded.x, x)
        assert (loaded.y is None) == (y is None) and (y is None or (loaded.y == y).all())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set.npz"]
