import importlib.util

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from mdp_trt.errors import BackendUnavailable, InputError, UnsupportedGraph
from mdp_trt.latency.backends.host import cpu_description
from mdp_trt.latency.backends.layer_model import ACTIVATIONS, build_layer_model
from mdp_trt.latency.backends.timing import TimingPolicy
from mdp_trt.latency.backends.torch_backend import TorchBackend, layer_module
from mdp_trt.signature import LayerSignature

from tests.latency.fixtures import conv_sig, save

FAST = TimingPolicy(warmup_runs=1, warmup_s=0.0, budget_s=0.02, min_repeats=7, max_repeats=50)
CUDA_REASON = TorchBackend(device="cuda").available()


def _same_as_onnx(sig, out_ch, in_ch, x):
    """The module computes what the one-layer ONNX model computes, given the same weights."""
    module = layer_module(sig, out_ch, in_ch)
    model = build_layer_model(sig, out_ch, in_ch)
    weights = {init.name: init for init in model.graph.initializer}
    params = dict(module.named_parameters())
    weight_name = next(n for n in params if n.endswith("weight"))
    w = numpy_helper.to_array(weights["W"])
    # Gemm's ONNX weight is out x in like nn.Linear; MatMul's is in x out like _MatMul.
    params[weight_name].data.copy_(torch.tensor(w))
    if sig.bias:
        params[next(n for n in params if n.endswith("bias"))].data.copy_(
            torch.tensor(numpy_helper.to_array(weights["B"])))
    if "slope" in weights:
        params[next(n for n in params if n.endswith("slope"))].data.copy_(
            torch.tensor(numpy_helper.to_array(weights["slope"]).reshape(-1)))
    with torch.inference_mode():
        got = module(torch.from_numpy(x)).numpy()
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = session.run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("sig, out_ch, in_ch", [
    (conv_sig(32, 16, 9, stride=2), 24, 8),
    (conv_sig(16, 16, 8, group=16), 8, 8),  # depthwise
    (conv_sig(32, 32, 8, group=4, bias=False, activation=None), 16, 8),  # grouped
    (LayerSignature("Conv", 8, 4, kernel=(3,), strides=(1,), pads=(0, 2), dilations=(2,),
                    input_hw=(11,), activation="LeakyRelu"), 8, 4),  # 1-D, asymmetric pads
    (LayerSignature("Conv", 8, 4, kernel=(3, 3, 3), strides=(1, 1, 1), pads=(1,) * 6,
                    dilations=(1, 1, 1), input_hw=(4, 5, 6), activation="HardSigmoid"), 4, 2),
    (LayerSignature("Gemm", 10, 32, activation="PRelu"), 7, 20),
    (LayerSignature("MatMul", 12, 6, input_hw=(5,), activation="PRelu"), 12, 3),
])
def test_module_matches_the_one_layer_onnx_model(sig, out_ch, in_ch):
    from mdp_trt.latency.backends.layer_model import layer_input_shape

    x = np.random.default_rng(1).standard_normal(layer_input_shape(sig, in_ch)).astype(np.float32)
    _same_as_onnx(sig, out_ch, in_ch, x)


def test_module_has_the_cell_widths_and_every_activation():
    module = layer_module(conv_sig(64, 32, 8, group=4), 48, 16)
    conv = module[0]
    assert isinstance(conv, torch.nn.Conv2d) and conv.groups == 4
    assert tuple(conv.weight.shape) == (48, 16 // 4, 3, 3)
    assert not module.training
    for activation in sorted(ACTIVATIONS):
        sig = LayerSignature("Gemm", 8, 8, activation=activation)
        assert len(layer_module(sig, 8, 8)) == 2
    with pytest.raises(UnsupportedGraph, match="Swish"):
        layer_module(LayerSignature("Gemm", 8, 8, activation="Swish"), 8, 8)
    with pytest.raises(ValueError, match="outside"):
        layer_module(conv_sig(8, 8, 4), 9, 8)


def test_building_a_module_leaves_the_global_generator_alone():
    state = torch.random.get_rng_state()
    first = layer_module(conv_sig(8, 8, 4), 8, 8, seed=3)[0].weight
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(layer_module(conv_sig(8, 8, 4), 8, 8, seed=3)[0].weight, first)


def test_cpu_cells_are_timed_and_settings_restored():
    backend = TorchBackend(threads=1, cell_policy=FAST)
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="not active"):
        backend.measure_layer(conv_sig(16, 16, 8), 16, 16)
    with backend:
        assert torch.get_num_threads() == 1
        m = backend.measure_layer(conv_sig(16, 16, 8), 8, 16)
        matmul = backend.measure_layer(LayerSignature("MatMul", 16, 8, input_hw=(4,)), 16, 8)
    assert torch.get_num_threads() == before
    for x in (m, matmul):
        assert x.median_ms > 0 and x.repeats >= 7 and x.p10_ms <= x.median_ms <= x.p90_ms


def test_channels_last_fp16_layer_runs_on_cpu():
    backend = TorchBackend(precision="fp16", channels_last=True, cell_policy=FAST)
    with backend:
        module = backend._place(layer_module(conv_sig(16, 16, 8), 16, 16))
        assert module[0].weight.dtype == torch.float16
        assert module[0].weight.is_contiguous(memory_format=torch.channels_last)
        try:
            m = backend.measure_layer(conv_sig(16, 16, 8), 16, 16)
        except UnsupportedGraph as exc:
            pytest.skip(f"this torch build has no CPU fp16 conv: {exc}")
    assert m.median_ms > 0


def test_fingerprint_names_device_layout_precision_threads():
    fp = TorchBackend(threads=2, precision="fp16", channels_last=True).fingerprint()
    assert fp.backend == "torch-cpu" and fp.device == cpu_description()
    assert fp.runtime == "torch (channels_last)" and fp.runtime_version == torch.__version__
    assert fp.threads == 2 and fp.precision == "fp16"
    assert TorchBackend().fingerprint().key() != fp.key()


def test_bad_options_are_input_errors():
    with pytest.raises(InputError, match="precision"):
        TorchBackend(precision="int8")
    with pytest.raises(InputError, match="device"):
        TorchBackend(device="mps")
    with pytest.raises(InputError, match="threads"):
        TorchBackend(threads=0)


@pytest.mark.skipif(importlib.util.find_spec("mdp_trt.graph.torch_graph") is None,
                    reason="mdp_trt.graph.torch_graph (ONNX executed in PyTorch) is not built yet")
def test_cpu_model_is_timed_end_to_end(tmp_path):
    path = save(build_layer_model(conv_sig(16, 8, 8), 16, 8), tmp_path / "m.onnx")
    with TorchBackend(model_policy=FAST) as backend:
        m = backend.measure_model(path)
        with pytest.raises(InputError, match="no such"):
            backend.measure_model(tmp_path / "missing.onnx")
    assert m.median_ms > 0 and m.repeats >= 7


@pytest.mark.skipif(importlib.util.find_spec("mdp_trt.graph.torch_graph") is None,
                    reason="mdp_trt.graph.torch_graph (ONNX executed in PyTorch) is not built yet")
def test_cpu_models_compared_are_timed_together_in_order(tmp_path):
    small = save(build_layer_model(conv_sig(64, 64, 28), 8, 8), tmp_path / "small.onnx")
    big = save(build_layer_model(conv_sig(64, 64, 28), 64, 64), tmp_path / "big.onnx")
    with TorchBackend(model_policy=FAST) as backend:
        compared = backend.measure_models([big, small])
        big_m, small_m = compared.measurements
    assert big_m.repeats >= 7 and small_m.repeats >= 7
    # 64x the multiply-adds; coarse on purpose (shared machines)
    assert big_m.median_ms > 5 * small_m.median_ms
    assert compared.ratios[0].value < 1 / 5  # the small one, as a ratio to the big one


@pytest.mark.gpu
@pytest.mark.skipif(CUDA_REASON is not None, reason=f"torch-cuda: {CUDA_REASON}")
def test_cuda_cells_are_timed_with_events():
    backend = TorchBackend(device="cuda", precision="fp16", channels_last=True, cell_policy=FAST)
    with backend:
        small = backend.measure_layer(conv_sig(256, 256, 56), 32, 32)
        big = backend.measure_layer(conv_sig(256, 256, 56), 256, 256)
    assert 0 < small.median_ms and small.repeats >= 7
    assert big.median_ms > small.median_ms  # 64x the multiply-adds
    assert backend.fingerprint().runtime_version.startswith(torch.__version__ + ", cuDNN")
    assert "cuda graphs" in backend.fingerprint().runtime


def test_cuda_is_refused_with_the_reason_where_there_is_none():
    if CUDA_REASON is None:
        pytest.skip("a CUDA device is visible: the refusal cannot be exercised")
    assert "CUDA" in CUDA_REASON
    with pytest.raises(BackendUnavailable, match="torch-cuda.*CUDA"):
        TorchBackend(device="cuda").activate()


@pytest.mark.gpu
@pytest.mark.skipif(CUDA_REASON is not None, reason=f"torch-cuda: {CUDA_REASON}")
def test_cuda_runs_the_model_that_onnx_runtime_runs(tmp_path, caplog):
    from mdp_trt.graph.model import load_model
    from mdp_trt.graph.torch_graph import TorchGraph
    from mdp_trt.models.export import ExportOptions, export_architecture

    path = export_architecture("mobilenet_v3_small", tmp_path / "m.onnx",
                               ExportOptions(input_shape=(2, 3, 64, 64)))
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64), dtype=np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = session.run(None, {session.get_inputs()[0].name: x})[0]
    module = TorchGraph.from_model(load_model(path)).eval().cuda()
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.inference_mode():
            got = module(torch.from_numpy(x).cuda()).cpu().numpy()
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max())
    with TorchBackend(device="cuda", precision="fp16", model_policy=FAST) as backend:
        assert backend.measure_model(path).median_ms > 0
    assert "cannot capture" not in caplog.text  # the whole TorchGraph replays as one CUDA graph
