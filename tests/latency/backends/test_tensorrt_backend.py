import numpy as np
import onnx
import onnxruntime as ort
import pytest

from mdp_trt.errors import BackendUnavailable, InputError
from mdp_trt.latency.backends.layer_model import build_layer_model, layer_input_shape
from mdp_trt.signature import LayerSignature
from mdp_trt.latency.backends.tensorrt_backend import TensorRTBackend, quantize_layer_model
from mdp_trt.latency.backends.timing import TimingPolicy

from tests.latency.fixtures import conv_sig, save

FAST = TimingPolicy(warmup_runs=1, warmup_s=0.0, budget_s=0.02, min_repeats=7, max_repeats=50)
REASON = TensorRTBackend().available()


@pytest.mark.parametrize("sig, out_ch, in_ch", [
    (conv_sig(32, 16, 8), 24, 8),
    (LayerSignature("Gemm", 10, 32, activation="Relu"), 7, 20),
    (LayerSignature("MatMul", 12, 6, input_hw=(5,)), 12, 3),
])
def test_int8_cells_are_explicitly_quantized_layers(sig, out_ch, in_ch):
    model = quantize_layer_model(build_layer_model(sig, out_ch, in_ch), sig)
    onnx.checker.check_model(model, full_check=True)
    ops = [node.op_type for node in model.graph.node]
    assert ops[:4] == ["QuantizeLinear", "DequantizeLinear"] * 2
    layer = next(node for node in model.graph.node if node.name == "layer")
    assert list(layer.input[:2]) == ["x_dq", "W_dq"]
    w_scale = next(i for i in model.graph.initializer if i.name == "W_scale")
    assert list(w_scale.dims) == [out_ch]  # one scale per output channel
    # It runs (on ORT's CPU provider here) and keeps the layer's output shape.
    x = np.random.default_rng(0).standard_normal(layer_input_shape(sig, in_ch)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    y = session.run(None, {"x": x})[0]
    assert y.shape[-1 if sig.op_type != "Conv" else 1] == out_ch


def test_bad_options_are_input_errors():
    with pytest.raises(InputError, match="precision"):
        TensorRTBackend(precision="bf16")
    with pytest.raises(InputError, match="optimization_level"):
        TensorRTBackend(optimization_level=7)
    with pytest.raises(InputError, match="float32"):
        quantize_layer_model(build_layer_model(conv_sig(8, 8, 4), 8, 8),
                             LayerSignature("Gemm", 8, 8, dtype="float16"))


def test_without_tensorrt_or_a_gpu_it_refuses_with_what_to_install():
    if REASON is None:
        pytest.skip("TensorRT and a GPU are present: the refusal cannot be exercised")
    assert "install" in REASON and ("tensorrt" in REASON or "GPU" in REASON)
    with pytest.raises(BackendUnavailable, match="tensorrt"):
        TensorRTBackend().activate()


@pytest.mark.gpu
@pytest.mark.skipif(REASON is not None, reason=f"tensorrt: {REASON}")
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_cells_and_models_are_timed_as_engines(tmp_path, precision):
    path = save(build_layer_model(conv_sig(64, 64, 56), 64, 64), tmp_path / "m.onnx")
    backend = TensorRTBackend(precision=precision, workspace_mib=1024, optimization_level=2,
                              cell_policy=FAST, model_policy=FAST)
    with backend:
        small = backend.measure_layer(conv_sig(256, 256, 56), 32, 32)
        big = backend.measure_layer(conv_sig(256, 256, 56), 256, 256)
        if precision != "int8":  # a whole model needs its own Q/DQ nodes for INT8
            assert backend.measure_model(path).median_ms > 0
    assert 0 < small.median_ms < big.median_ms
    fp = backend.fingerprint()
    assert fp.precision == precision and "optimization level 2" in fp.runtime
