import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from mdp_trt.errors import InputError
from mdp_trt.latency.backends.inputs import ModelInput, model_inputs, random_feeds


def identity_model(path, shape, elem=TensorProto.FLOAT):
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", elem, shape)],
        [helper.make_tensor_value_info("y", elem, shape)])
    onnx.save(helper.make_model(graph), str(path))
    return path


def test_symbolic_batch_takes_the_requested_batch(tmp_path):
    path = identity_model(tmp_path / "m.onnx", ["N", 3, 8, 8])
    assert model_inputs(path) == (ModelInput("x", (1, 3, 8, 8), "float32"),)
    assert model_inputs(path, batch=4)[0].shape == (4, 3, 8, 8)


def test_fixed_batch_must_match(tmp_path):
    path = identity_model(tmp_path / "m.onnx", [2, 3, 8, 8])
    assert model_inputs(path, batch=2)[0].shape == (2, 3, 8, 8)
    with pytest.raises(InputError, match="fixed batch of 2"):
        model_inputs(path, batch=8)


def test_other_symbolic_dims_are_refused(tmp_path):
    path = identity_model(tmp_path / "m.onnx", [1, 3, "H", 8])
    with pytest.raises(InputError, match="symbolic dimension 2"):
        model_inputs(path)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(InputError, match="no such model file"):
        model_inputs(tmp_path / "none.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\xff\x00not a protobuf" * 10)
    with pytest.raises(InputError, match="junk.onnx"):
        model_inputs(junk)


def test_random_feeds_are_seeded_and_typed():
    specs = (ModelInput("a", (2, 3), "float32"), ModelInput("b", (4,), "int64"))
    feeds = random_feeds(specs, seed=3)
    assert feeds["a"].dtype == np.float32 and feeds["a"].shape == (2, 3)
    assert feeds["b"].dtype == np.int64 and not feeds["b"].any()
    np.testing.assert_array_equal(random_feeds(specs, seed=3)["a"], feeds["a"])
