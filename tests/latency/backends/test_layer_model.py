import dataclasses

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from mdp_trt.errors import InputError, UnsupportedGraph
from mdp_trt.latency.backends.layer_model import build_layer_model, layer_input_shape
from mdp_trt.signature import LayerSignature

from tests.latency.fixtures import conv_sig


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    # Every model built here must pass the full checker and strict shape inference.
    onnx.checker.check_model(model, full_check=True)
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def weight(model: onnx.ModelProto, name: str = "W") -> np.ndarray:
    init = next(i for i in model.graph.initializer if i.name == name)
    return onnx.numpy_helper.to_array(init)


def node(model: onnx.ModelProto, op_type: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.op_type == op_type)


def test_conv_has_the_requested_widths_and_runs():
    sig = conv_sig(64, 48, 14)
    model = build_layer_model(sig, 32, 16)
    x = np.random.default_rng(0).standard_normal((1, 16, 14, 14)).astype(np.float32)
    y = run(model, x)
    assert y.shape == (1, 32, 14, 14)
    assert weight(model).shape == (32, 16, 3, 3)
    assert weight(model, "B").shape == (32,)
    assert node(model, "Relu") is not None
    assert (y >= 0).all() and (y > 0).any()


def test_strided_conv_halves_the_resolution():
    sig = conv_sig(128, 64, 28, stride=2, activation=None, bias=False)
    model = build_layer_model(sig, 128, 64)
    y = run(model, np.ones((1, 64, 28, 28), np.float32))
    assert y.shape == (1, 128, 14, 14)
    assert [i.name for i in model.graph.initializer] == ["W"]
    assert not any(n.op_type == "Relu" for n in model.graph.node)
    assert (y < 0).any()  # no activation was added


def test_depthwise_conv_moves_both_widths_and_the_group():
    sig = conv_sig(32, 32, 8, group=32)
    model = build_layer_model(sig, 16, 16)
    conv = node(model, "Conv")
    group = next(a.i for a in conv.attribute if a.name == "group")
    assert group == 16
    assert weight(model).shape == (16, 1, 3, 3)
    assert run(model, np.ones((1, 16, 8, 8), np.float32)).shape == (1, 16, 8, 8)
    with pytest.raises(ValueError, match="depthwise"):
        build_layer_model(sig, 16, 8)


def test_grouped_conv_needs_widths_that_are_multiples_of_the_group():
    sig = conv_sig(32, 32, 8, group=4)
    assert run(build_layer_model(sig, 16, 8), np.ones((1, 8, 8, 8), np.float32)).shape == (
        1, 16, 8, 8)
    with pytest.raises(InputError, match="multiple"):
        build_layer_model(sig, 16, 6)


def test_gemm_computes_x_wt_plus_b():
    sig = LayerSignature("Gemm", 10, 32, batch=3)
    model = build_layer_model(sig, 10, 20)
    assert next(a.i for a in node(model, "Gemm").attribute if a.name == "transB") == 1
    x = np.random.default_rng(1).standard_normal((3, 20)).astype(np.float32)
    expected = x @ weight(model).T + weight(model, "B")
    np.testing.assert_allclose(run(model, x), expected, rtol=1e-5, atol=1e-5)


def test_matmul_with_tokens_and_bias():
    sig = LayerSignature("MatMul", 24, 16, input_hw=(5,), activation="Gelu")
    model = build_layer_model(sig, 12, 8)
    assert layer_input_shape(sig, 8) == (1, 5, 8)
    x = np.random.default_rng(2).standard_normal((1, 5, 8)).astype(np.float32)
    assert weight(model).shape == (8, 12)
    assert run(model, x).shape == (1, 5, 12)


def test_refuses_what_it_cannot_reproduce():
    with pytest.raises(ValueError, match="outside"):
        build_layer_model(conv_sig(8, 8, 4), 9, 8)
    with pytest.raises(ValueError, match="outside"):
        build_layer_model(conv_sig(8, 8, 4), 8, 0)
    with pytest.raises(UnsupportedGraph, match="Swish"):
        build_layer_model(conv_sig(8, 8, 4, activation="Swish"), 8, 8)
    with pytest.raises(UnsupportedGraph, match="LSTM"):
        build_layer_model(LayerSignature("LSTM", 8, 8), 8, 8)
    with pytest.raises(InputError, match="empty output"):
        build_layer_model(dataclasses.replace(conv_sig(8, 8, 2, k=5), pads=(0, 0, 0, 0)), 8, 8)
    with pytest.raises(InputError, match="dtype"):
        build_layer_model(LayerSignature("Gemm", 8, 8, dtype="int8"), 8, 8)
