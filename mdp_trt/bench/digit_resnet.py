"""Small residual classifiers for the bundled digit sets, trained here: the accuracy evidence's
models (``models/train_digits.py``, ``benchmarks/accuracy.py``).

Architecture: a 3x3 stem and stages of BasicBlocks (``widths`` channels, the first stage at the
input resolution, every later one halving it), global average pooling and a linear classifier.
Every block whose input and output widths agree has an identity skip, so it is removable; the
first block of each later stage has a 1x1 projection skip. Training is seeded and
single-process: a rerun on the same torch version gives the same weights. BatchNorm is folded
into the convolutions at export.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from mdp_trt.data.datasets import ArrayDataset

__all__ = ["DigitResNet", "TrainOptions", "export_classifier", "load_checkpoint", "save_checkpoint",
           "train_classifier"]


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.skip = nn.Identity()
        if stride != 1 or cin != cout:
            self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.skip(x))


class DigitResNet(nn.Module):
    def __init__(self, widths: tuple[int, ...] = (24, 48, 96), blocks: int = 2, classes: int = 10):
        super().__init__()
        self.widths, self.blocks, self.classes = tuple(widths), blocks, classes
        self.stem = nn.Sequential(nn.Conv2d(1, widths[0], 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU())
        layers, cin = [], widths[0]
        for stage, width in enumerate(widths):
            for index in range(blocks):
                layers.append(BasicBlock(cin, width, 2 if stage and not index else 1))
                cin = width
        self.stages = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes))

    def forward(self, x):
        return self.head(self.stages(self.stem(x)))


@dataclass(frozen=True)
class TrainOptions:
    epochs: int = 5
    seed: int = 0  # initialisation, batch order and augmentation
    batch_size: int = 64
    lr: float = 0.1  # OneCycle's peak
    shift: int = 2  # pixels of random translation: the only augmentation
    # SGD with Nesterov momentum suits the ResNets; transformers train with AdamW (``digit_vit``)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    weight_decay: float = 5e-4


def _shifted(x: np.ndarray, shift: int, rng: np.random.Generator) -> np.ndarray:
    """Each image translated by up to ``shift`` pixels (background-filled)."""
    if not shift:
        return x
    size = x.shape[-2:]
    padded = np.pad(x, ((0, 0), (0, 0), (shift, shift), (shift, shift)), constant_values=x.min())
    dy, dx = rng.integers(0, 2 * shift + 1, size=(2, len(x)))
    return np.stack([p[:, a:a + size[0], b:b + size[1]] for p, a, b in zip(padded, dy, dx)])


def train_classifier(model: nn.Module, train: ArrayDataset, options: TrainOptions,
                     report=print) -> nn.Module:
    """``options.optimizer`` with a OneCycle schedule; returns ``model`` in eval mode."""
    torch.manual_seed(options.seed)
    rng = np.random.default_rng(options.seed)
    batches = -(-len(train.y) // options.batch_size)
    if options.optimizer == "adamw":
        optimiser = torch.optim.AdamW(model.parameters(), lr=options.lr,
                                      weight_decay=options.weight_decay)
    else:
        optimiser = torch.optim.SGD(model.parameters(), lr=options.lr, momentum=0.9, nesterov=True,
                                    weight_decay=options.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=options.lr,
                                                   total_steps=options.epochs * batches)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(options.epochs):
        model.train()
        order = rng.permutation(len(train.y))
        total = 0.0
        for start in range(0, len(order), options.batch_size):
            index = order[start:start + options.batch_size]
            x = torch.from_numpy(_shifted(train.x[index], options.shift, rng))
            loss = loss_fn(model(x), torch.from_numpy(train.y[index]))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += loss.item() * len(index)
        report(f"epoch {epoch + 1}/{options.epochs}: train loss {total / len(order):.4f}")
    return model.eval()


def export_classifier(model: nn.Module, input_shape: tuple[int, ...], path: str | Path) -> Path:
    """ONNX with BN folded (the dynamo exporter's optimiser), one file, input ``image`` of the
    static ``input_shape``, output ``logits``."""
    path = Path(path)
    example = torch.zeros(*input_shape)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model.eval(), (example,), dynamo=True, input_names=["image"],
                                    output_names=["logits"], optimize=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")  # a crash leaves no half-written model
    program.save(str(partial), external_data=False)
    os.replace(partial, path)
    return path


def save_checkpoint(model: DigitResNet, path: str | Path) -> Path:
    """The module's architecture and weights (what Torch-Pruning needs: it prunes modules)."""
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    torch.save({"widths": model.widths, "blocks": model.blocks, "classes": model.classes,
                "state_dict": model.state_dict()}, partial)
    os.replace(partial, path)
    return path


def load_checkpoint(path: str | Path) -> DigitResNet:
    data = torch.load(path, map_location="cpu", weights_only=True)
    model = DigitResNet(tuple(data["widths"]), data["blocks"], data["classes"])
    model.load_state_dict(data["state_dict"])
    return model.eval()
