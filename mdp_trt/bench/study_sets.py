"""The labelled sets of the accuracy study, each split once by a recorded seed.

``SPLIT_SEED`` draws the held-out parts; it is fixed here, not a run option, so that no fine-tuning
seed or configuration can move an image between the training and the test part.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mdp_trt.data.digits import digits_three_way
from mdp_trt.data.mnist import mnist_three_way
from mdp_trt.data.splits import Splits

__all__ = ["SPLIT_SEED", "STUDY_EPOCHS", "STUDY_MODELS", "STUDY_SETS"]

SPLIT_SEED = 20261207

# A study is a data set with the model trained on it; "mnist-vit" is the MNIST split again,
# with a transformer (the same images in every part).
STUDY_SETS: dict[str, Callable[[int], Splits]] = {
    "mnist": mnist_three_way,
    "digits": digits_three_way,
    "mnist-vit": mnist_three_way,
}

# The trained model of each study (``models/train_digits.py``; the ResNets' PyTorch checkpoint
# is the .pt beside it), in the checkout: benchmarks run from one.
_MODELS = Path(__file__).resolve().parents[2] / "models"
STUDY_MODELS: dict[str, Path] = {
    "mnist": _MODELS / "mnist_resnet_deep.onnx",
    "digits": _MODELS / "digits_resnet_deep.onnx",
    "mnist-vit": _MODELS / "mnist_vit.onnx",
}

# Fine-tuning epochs per study: about 165 steps of 64 images each (3 500 and 1 047 training
# images); fixed before any run, never chosen on the test part.
STUDY_EPOCHS: dict[str, int] = {"mnist": 3, "digits": 10, "mnist-vit": 3}
