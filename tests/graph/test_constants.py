import numpy as np
import onnx_ir as ir
import pytest
from onnx import numpy_helper

from mdp_trt.errors import InputError
from mdp_trt.graph import constant_array, initializer_array
from tests import onnx_graphs as G


def test_initializer_array_reads_the_weight(tmp_path):
    proto = G.conv_bn_relu_chain()
    model, _ = G.load(proto, tmp_path)
    expected = next(numpy_helper.to_array(t) for t in proto.graph.initializer if t.name == "conv2.weight")
    np.testing.assert_array_equal(initializer_array(model, "conv2.weight"), expected)
    with pytest.raises(InputError, match="no initializer named 'missing'"):
        initializer_array(model, "missing")


def test_constant_array_sees_through_identity_and_constant_nodes():
    const = ir.node("Constant", [], attributes={"value": ir.tensor(np.arange(3, dtype=np.float32))})
    ident = ir.node("Identity", [const.outputs[0]])
    runtime = ir.Value(name="x")
    relu = ir.node("Relu", [runtime])
    np.testing.assert_array_equal(constant_array(ident.outputs[0]), np.arange(3))
    assert constant_array(relu.outputs[0]) is None
    assert constant_array(runtime) is None
