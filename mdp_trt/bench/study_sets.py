"""The labelled sets of the accuracy study, each split once by a recorded seed.

``SPLIT_SEED`` draws the held-out parts; it is fixed here, not a run option, so that no fine-tuning
seed or configuration can move an image between the training and the test part.
"""

from __future__ import annotations

from collections.abc import Callable

from mdp_trt.data.digits import digits_three_way
from mdp_trt.data.mnist import mnist_three_way
from mdp_trt.data.splits import Splits

__all__ = ["SPLIT_SEED", "STUDY_SETS"]

SPLIT_SEED = 20261207

STUDY_SETS: dict[str, Callable[[int], Splits]] = {
    "mnist": mnist_three_way,
    "digits": digits_three_way,
}
