"""The study's digit ResNets: identity blocks, training, export equal to the module, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the digit ResNets are PyTorch modules (pip install torch)")

from mdp_trt.bench.accuracy import evaluate_accuracy, predict  # noqa: E402
from mdp_trt.data.datasets import ArrayDataset  # noqa: E402
from mdp_trt.bench.digit_resnet import (DigitResNet, TrainOptions,  # noqa: E402
                                         export_classifier, load_checkpoint, save_checkpoint,
                                         train_classifier)


def _toy(n=64, size=8, seed=0) -> ArrayDataset:
    """Two separable classes: bright top half or bright bottom half."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(0, 0.1, (n, 1, size, size)).astype(np.float32)
    for i, label in enumerate(y):
        x[i, 0, : size // 2] += 1.0 if label else 0.0
        x[i, 0, size // 2:] += 0.0 if label else 1.0
    return ArrayDataset(x, y)


def test_blocks_with_equal_widths_have_identity_skips():
    model = DigitResNet((8, 16), blocks=3)
    skips = [type(block.skip).__name__ for block in model.stages]
    # stage 1: 3 identity; stage 2: a projection (stride 2, wider) then 2 identity
    assert skips == ["Identity"] * 3 + ["Sequential"] + ["Identity"] * 2


def test_training_learns_and_the_export_computes_what_the_module_does(tmp_path):
    torch.manual_seed(0)
    model = DigitResNet((8, 16), blocks=1, classes=2)
    data = _toy()
    train_classifier(model, data, TrainOptions(epochs=4, seed=0, batch_size=16, lr=0.05),
                     report=lambda _: None)
    path = export_classifier(model, (1, 1, 8, 8), tmp_path / "toy.onnx")
    assert evaluate_accuracy(path, data) > 0.9
    assert [p.name for p in tmp_path.iterdir()] == ["toy.onnx"]  # nothing partial left
    with torch.no_grad():
        expected = model(torch.from_numpy(data.x[:5])).numpy()
    np.testing.assert_allclose(predict(path, data.x[:5]), expected, rtol=1e-4, atol=1e-4)


def test_a_checkpoint_restores_architecture_and_weights(tmp_path):
    torch.manual_seed(1)
    model = DigitResNet((8, 16), blocks=2, classes=3).eval()
    again = load_checkpoint(save_checkpoint(model, tmp_path / "m.pt"))
    assert (again.widths, again.blocks, again.classes) == ((8, 16), 2, 3)
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x))
