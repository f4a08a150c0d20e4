"""NaN or inf in a float initializer makes the model refused, naming the initializer."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

from mdp_trt.errors import InputError
from mdp_trt.graph.weights import check_finite_weights


def _model(**initializers: np.ndarray) -> ir.Model:
    """y = x + every initializer (all of shape [4], added in turn)."""
    nodes, current = [], "x"
    for i, name in enumerate(initializers):
        nodes.append(helper.make_node("Add", [current, name], [f"s{i}"]))
        current = f"s{i}"
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info(current, TensorProto.FLOAT, [4])],
        [numpy_helper.from_array(a, name) for name, a in initializers.items()])
    return ir.serde.deserialize_model(helper.make_model(graph))


def test_finite_weights_pass():
    check_finite_weights(_model(w=np.ones(4, np.float32), b=np.zeros(4, np.float64)), "m.onnx")


def test_nan_and_inf_are_refused_naming_the_initializer_and_count():
    model = _model(ok=np.ones(4, np.float32),
                   w=np.array([1, np.nan, np.inf, -np.inf], np.float32),
                   h=np.array([np.nan, 0, 0, 0], np.float16))
    with pytest.raises(InputError, match=r"m.onnx: 2 weight initializer\(s\) hold NaN or inf "
                                         r"values: 'w' \(3 of 4\), 'h' \(1 of 4\); .*re-export"):
        check_finite_weights(model, "m.onnx")


def test_only_the_first_initializers_are_named():
    bad = {f"w{i}": np.full(4, np.nan, np.float32) for i in range(5)}
    with pytest.raises(InputError, match=r"'w2' \(4 of 4\) and 2 more;"):
        check_finite_weights(_model(**bad), "m.onnx")


def test_huge_finite_float64_weights_are_not_mistaken_for_inf():
    # their float64 sum overflows, yet every value is finite
    check_finite_weights(_model(w=np.full(4, 1e308, np.float64)), "m.onnx")


def test_non_float_initializers_are_ignored():
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])],
        [numpy_helper.from_array(np.array([2, 2], np.int64), "shape")])
    check_finite_weights(ir.serde.deserialize_model(helper.make_model(graph)), "m.onnx")
