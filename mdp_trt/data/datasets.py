"""Calibration and fine-tuning data: image batches as numpy arrays, loaded from disk.

Two sources, chosen by what ``path`` is:
- an ``.npz`` file with array ``x`` (N x C x H x W) and optionally ``y`` (N class indices). It is
  used as-is: no resizing and no normalisation, so it must already be preprocessed exactly as
  the model expects (the way to feed a model trained with its own normalisation, e.g. MNIST);
- a folder of images (png, jpg, jpeg, bmp). Images in sub-folders are labelled by the index of
  their sub-folder in sorted name order (``cat/``, ``dog/`` -> 0, 1), as torchvision's
  ImageFolder does; images directly in the folder carry no labels. Each image is converted to
  the model's channel count (1: grey, 3: RGB), resized to its H x W (bilinear), scaled to [0, 1]
  and, for 3 channels, normalised with the ImageNet mean and standard deviation that torchvision
  classifiers are trained with.
"""

from __future__ import annotations

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
    """Samples ``x`` (N x C x H x W float32) and optional labels ``y`` (N int64)."""

    x: np.ndarray
    y: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.y is not None and (self.y.ndim != 1 or len(self.y) != len(self.x)):
            raise InputError(f"the labels y have shape {list(self.y.shape)}; give one label per "
                             f"sample of x ({len(self.x)} samples)")

    def __len__(self) -> int:
        return len(self.x)

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
        return ArrayDataset(self.x[mask], None if self.y is None else self.y[mask])

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
        x = archive["x"]
        y = archive["y"] if "y" in archive.files else None
    if x.ndim != 4:
        raise InputError(f"{path}: x has shape {list(x.shape)}; give N x C x H x W images")
    if input_shape is not None and tuple(x.shape[1:]) != tuple(input_shape[1:]):
        raise InputError(f"{path}: samples are {'x'.join(map(str, x.shape[1:]))} (C x H x W) "
                         f"but the model takes {'x'.join(map(str, input_shape[1:]))}; the .npz is "
                         "used as-is, so save it at the model's channels and size")
    if y is not None:
        if y.ndim != 1 or len(y) != len(x):
            raise InputError(f"{path}: y has shape {list(y.shape)} but x holds {len(x)} samples; "
                             "give one class index per sample")
        y = y.astype(np.int64)
    return ArrayDataset(np.ascontiguousarray(x, dtype=np.float32), y)


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
    return ArrayDataset(x, y)


def _read_image(path: Path, input_shape: tuple[int, ...]) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    channels, height, width = input_shape[1:]
    try:
        with Image.open(path) as image:
            image = image.convert("L" if channels == 1 else "RGB")
            image = image.resize((width, height), Image.Resampling.BILINEAR)
            pixels = np.asarray(image, dtype=np.float32) / 255.0
    except (OSError, UnidentifiedImageError) as err:
        raise InputError(f"{path} is not a readable image ({err})") from err
    if channels == 1:
        return pixels[None]
    pixels = (pixels - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))
