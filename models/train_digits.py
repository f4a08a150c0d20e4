"""Train the residual digit classifiers that the accuracy evidence prunes, and export them.

    python models/train_digits.py --preset mnist-deep   # models/mnist_resnet_deep.onnx + .pt
    python models/train_digits.py --preset digits-deep  # models/digits_resnet_deep.onnx + .pt
    python models/train_digits.py --preset mnist-small  # models/mnist_resnet.onnx (the demo's)
    python models/train_digits.py --preset mnist-vit    # models/mnist_vit.onnx (issue 18)

Presets (architecture: ``mdp_trt.bench.digit_resnet``):
- ``mnist-small``: widths 24/48/96, 2 blocks per stage, on the 4 000 training digits of
  ``mnist_splits(0)`` (the first accuracy runs' model; the tests and examples use it);
- ``mnist-deep``: widths 16/32/64, 3 blocks per stage (7 removable), on the training part of
  ``mnist_three_way(SPLIT_SEED)``: 3 500 train, 500 validation, 1 000 test;
- ``digits-deep``: the same on scikit-learn's 8x8 digits (``digits_three_way``);
- ``mnist-vit``: a small DeiT-style transformer (``mdp_trt.bench.digit_vit``: 4 blocks of 4
  heads x 16 channels, MLPs 256 wide) on the same MNIST split, AdamW for 30 epochs.
The ``.pt`` beside a deep model holds the PyTorch module (Torch-Pruning prunes modules). Prints
the validation accuracy of the exported model (ONNX Runtime); the test part is not looked at.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch

from mdp_trt.bench.accuracy import evaluate_accuracy
from mdp_trt.bench.digit_resnet import (DigitResNet, TrainOptions, export_classifier,
                                         save_checkpoint, train_classifier)
from mdp_trt.bench.digit_vit import VIT_TRAINING, VitShape, digit_vit
from mdp_trt.bench.study_sets import SPLIT_SEED, STUDY_SETS

HERE = Path(__file__).resolve().parent
PRESETS = {
    "mnist-small": dict(widths=(24, 48, 96), blocks=2, data="mnist-2way", output="mnist_resnet.onnx"),
    "mnist-deep": dict(widths=(16, 32, 64), blocks=3, data="mnist", output="mnist_resnet_deep.onnx"),
    "digits-deep": dict(widths=(32, 64, 128), blocks=3, data="digits", output="digits_resnet_deep.onnx"),
    "mnist-vit": dict(transformer=VitShape(), data="mnist", output="mnist_vit.onnx"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=PRESETS, default="mnist-deep")
    parser.add_argument("-o", "--output", type=Path, default=None)
    parser.add_argument("--epochs", type=int, default=None,
                        help="default: 5 for the ResNets, the transformer's VIT_TRAINING")
    parser.add_argument("--seed", type=int, default=0, help="initialisation and batch order")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    preset = PRESETS[args.preset]
    output = args.output or HERE / preset["output"]
    if preset["data"] == "mnist-2way":
        from mdp_trt.data.mnist import mnist_splits

        train, check = mnist_splits(0)
        checked = "test"
    else:
        splits = STUDY_SETS[preset["data"]](SPLIT_SEED)
        train, check, checked = splits.train, splits.val, "validation"
    torch.manual_seed(args.seed)  # the initialisation
    if "transformer" in preset:
        model, options = digit_vit(preset["transformer"]), VIT_TRAINING
    else:
        model, options = DigitResNet(preset["widths"], preset["blocks"]), TrainOptions()
    options = replace(options, seed=args.seed, epochs=args.epochs or options.epochs)
    train_classifier(model, train, options)
    export_classifier(model, (1, *train.x.shape[1:]), output)
    if preset["data"] != "mnist-2way" and "transformer" not in preset:
        save_checkpoint(model, output.with_suffix(".pt"))
    accuracy = evaluate_accuracy(output, check)
    print(f"wrote {output} ({output.stat().st_size / 1e6:.2f} MB); {checked} accuracy "
          f"{accuracy:.2%} on {len(check.y)} held-out digits (ONNX Runtime)")


if __name__ == "__main__":
    main()
