"""Calibration and fine-tuning data: image batches as numpy arrays, loaded from disk.

Two sources, chosen by what ``path`` is:
- an ``.npz`` file with array ``x`` (N x C x H x W) and optionally ``y`` (N class indices). It is
  used as-is: no resizing and no normalisation, so it must already be preprocessed exactly as
  the model expects (the way to feed a model trained with its own normalisation, e.g. MNIST).
  NaN or inf samples and float or negative labels are refused, never converted;
- a folder of images (png, jpg, jpeg, bmp). Images in sub-folders are labelled by the index of
  their sub-folder in sorted name order (``cat/``, ``dog/`` -> 0, 1), as torchvision's
  ImageFolder does; images directly in the folder carry no labels. Each image is converted to
  the model's channel count (1: grey, 3: RGB), resized to its H x W (bilinear), scaled to [0, 1]
  and, for 3 channels, normalised with the ImageNet mean and standard deviation that torchvision
  classifiers are trained with.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from mdp_trt.errors import InputError

__all__ = ["ArrayDataset", "load_dataset", "IMAGE_SUFFIXES", "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True, eq=False)  # arrays have no single truth value: identity equality
class ArrayDataset:
    """Samples ``x`` (N x ... float32, all finite) and optional labels ``y`` (N int64 class
    indices, >= 0); ``source`` names where they came from in error messages.

    Construction checks and converts: x must be real numbers (cast to float32; a value beyond
    float32's range becomes inf and is refused), y must be integers (float labels are refused
    rather than truncated: 0.9 would silently become class 0)."""

    x: np.ndarray
    y: np.ndarray | None = None
    source: str = "the data"

    def __post_init__(self) -> None:
        # frozen: normalised arrays are set once here, before anyone sees the dataset
        object.__setattr__(self, "x", _checked_samples(self.x, self.source))
        if self.y is not None:
            object.__setattr__(self, "y", _checked_labels(self.y, len(self.x), self.source))

    def check_classes(self, classes: int) -> None:
        """Raise InputError unless every label is a class index of a model with ``classes``
        outputs (negative labels are refused at construction)."""
        if self.y is not None and self.y.size and self.y.max() >= classes:
            raise InputError(f"{self.source}: labels must be class indices in 0..{classes - 1} "
                             f"(the model has {classes} outputs); y holds "
                             f"{self.y.min()}..{self.y.max()}")

    def __len__(self) -> int:
        return len(self.x)

    def save(self, path: str | Path) -> Path:
        """Write an ``.npz`` that ``load_dataset`` reads back unchanged (arrays ``x`` and, when
        labelled, ``y``), atomically: a crash leaves the old file or none, never half of one."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        arrays = {"x": self.x} if self.y is None else {"x": self.x, "y": self.y}
        with open(partial, "wb") as stream:
            np.savez(stream, **arrays)
        os.replace(partial, path)
        return path

    def split(self, fraction: float, seed: int = 0) -> tuple["ArrayDataset", "ArrayDataset"]:
        """(first, rest): a random ``fraction`` of the samples (rounded) and the others, each in
        the original order; the same seed gives the same split."""
        if not 0 < fraction < 1:
            raise InputError(f"split fraction {fraction} must be in (0, 1)")
        order = np.random.default_rng(seed).permutation(len(self))
        first = np.zeros(len(self), dtype=bool)
        first[order[:int(round(fraction * len(self)))]] = True
        return self._subset(first), self._subset(~first)

    def _subset(self, mask: np.ndarray) -> "ArrayDataset":
        return ArrayDataset(self.x[mask], None if self.y is None else self.y[mask], self.source)

    def batches(self, batch_size: int, shuffle: bool = False,
                seed: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """(x, y) batches of ``batch_size`` samples (the last one smaller), in order or in a
        permutation drawn from ``seed``; y is None when the dataset has no labels."""
        if batch_size < 1:
            raise InputError(f"batch size {batch_size} must be >= 1")
        order = np.random.default_rng(seed).permutation(len(self)) if shuffle else np.arange(len(self))
        for start in range(0, len(self), batch_size):
            index = order[start:start + batch_size]
            yield self.x[index], None if self.y is None else self.y[index]


def _checked_samples(x: np.ndarray, source: str) -> np.ndarray:
    """``x`` as contiguous float32, refused when it holds anything but finite real numbers."""
    if x.dtype.kind not in "biuf":
        raise InputError(f"{source}: x has dtype {x.dtype}; save the samples as real numbers "
                         "(float32)")
    with np.errstate(over="ignore"):  # values beyond float32 become inf: reported below
        x = np.ascontiguousarray(x, dtype=np.float32)
    # a float64 sum of float32 values cannot overflow, so it is finite exactly when every value
    # is; one pass without a mask the size of x (the mask is built only to report bad data)
    if x.size and not np.isfinite(x.sum(dtype=np.float64)):
        per_sample = np.count_nonzero(~np.isfinite(x.reshape(len(x), -1)), axis=1)
        nan = np.count_nonzero(np.isnan(x))
        bad = np.flatnonzero(per_sample)
        raise InputError(f"{source}: x holds {nan} NaN and {per_sample.sum() - nan} inf values "
                         f"(as float32) in {len(bad)} of {len(x)} samples (first: sample "
                         f"{bad[0]}); replace or drop those samples")
    return x


def _checked_labels(y: np.ndarray, samples: int, source: str) -> np.ndarray:
    """``y`` as int64, refused unless it holds one non-negative integer per sample."""
    if y.ndim != 1 or len(y) != samples:
        raise InputError(f"{source}: y has shape {list(y.shape)} but x holds {samples} samples; "
                         "give one class index per sample")
    if y.dtype.kind not in "iu":
        raise InputError(f"{source}: y must hold integer class indices, got {y.dtype}; if the "
                         "values are whole numbers, cast with y.astype(np.int64) before saving")
    y = y.astype(np.int64)
    negative = np.flatnonzero(y < 0)
    if negative.size:
        raise InputError(f"{source}: y holds {negative.size} negative labels (first: sample "
                         f"{negative[0]}, {y[negative[0]]}); class indices start at 0")
    return y


def load_dataset(path: str | Path, input_shape: tuple[int, ...] | None = None) -> ArrayDataset:
    """The dataset at ``path`` (an .npz or an image folder, see the module docstring).

    ``input_shape`` is the model's input (N x C x H x W): an .npz must match its C, H and W; a
    folder is converted to them (a folder needs it). Raises InputError naming the file and the fix.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder; give an .npz with an array 'x' or a "
                         "folder of images")
    if path.is_dir():
        if input_shape is None:
            raise InputError(f"{path}: images are resized to the model's input, which is unknown "
                             "here; give the input shape")
        return _load_folder(path, input_shape)
    if path.suffix.lower() != ".npz":
        raise InputError(f"{path}: data must be an .npz file (arrays x, y) or a folder of images")
    return _load_npz(path, input_shape)


def _load_npz(path: Path, input_shape: tuple[int, ...] | None) -> ArrayDataset:
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise InputError(f"{path} is not a readable .npz file ({err})") from err
    with archive:
        if "x" not in archive.files:
            held = ", ".join(archive.files) or "nothing"
            raise InputError(f"{path} has no array 'x' (it holds: {held}); save the samples as "
                             "x (N x C x H x W)")
        try:
            x = archive["x"]
            y = archive["y"] if "y" in archive.files else None
        except (OSError, EOFError, ValueError, zipfile.BadZipFile) as err:
            # object arrays (which need pickle) and damaged members fail only when read
            raise InputError(f"{path}: its arrays cannot be read ({err}); save plain numeric "
                             "arrays with np.savez") from err
    if x.ndim != 4:
        raise InputError(f"{path}: x has shape {list(x.shape)}; give N x C x H x W images")
    if input_shape is not None and tuple(x.shape[1:]) != tuple(input_shape[1:]):
        raise InputError(f"{path}: samples are {'x'.join(map(str, x.shape[1:]))} (C x H x W) "
                         f"but the model takes {'x'.join(map(str, input_shape[1:]))}; the .npz is "
                         "used as-is, so save it at the model's channels and size")
    return ArrayDataset(x, y, str(path))


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _load_folder(folder: Path, input_shape: tuple[int, ...]) -> ArrayDataset:
    if len(input_shape) != 4 or input_shape[1] not in (1, 3):
        raise InputError(f"images are loaded for N x 1|3 x H x W models; this model takes "
                         f"{'x'.join(map(str, input_shape))}: give an .npz instead")
    classes = [d for d in sorted(folder.iterdir()) if d.is_dir() and _images(d)]
    loose = _images(folder)
    if classes and loose:
        raise InputError(f"{folder} holds images both directly ({loose[0].name}) and in class "
                         f"sub-folders ({classes[0].name}/); keep only one layout")
    files = [(p, label) for label, d in enumerate(classes) for p in _images(d)] or \
            [(p, None) for p in loose]
    if not files:
        raise InputError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)}), directly or "
                         "in class sub-folders")
    x = np.stack([_read_image(p, input_shape) for p, _ in files])
    y = np.asarray([label for _, label in files], dtype=np.int64) if classes else None
    return ArrayDataset(x, y, str(folder))


def _read_image(path: Path, input_shape: tuple[int, ...]) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    channels, height, width = input_shape[1:]
    try:
        with Image.open(path) as image:
            image = image.convert("L" if channels == 1 else "RGB")
            image = image.resize((width, height), Image.Resampling.BILINEAR)
            pixels = np.asarray(image, dtype=np.float32) / 255.0
    except (OSError, UnidentifiedImageError, ImportError) as err:
        # ImportError: a decoder plugin another library hooked into Pillow (ultralytics loads
        # a HEIF one when Pillow cannot identify a file) is not installed.
        raise InputError(f"{path} is not a readable image ({err})") from err
    if channels == 1:
        return pixels[None]
    pixels = (pixels - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))
