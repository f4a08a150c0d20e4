import pytest

from mdp_trt.deploy.tensorrt import (build_engine, build_serialized, has_explicit_quantization,
                                     tensorrt_unavailable_reason)
from mdp_trt.errors import BackendUnavailable, InputError
from mdp_trt.latency.backends.layer_model import build_layer_model
from mdp_trt.latency.backends.tensorrt_backend import quantize_layer_model
from tests.latency.fixtures import conv_sig, save

REASON = tensorrt_unavailable_reason()


def test_input_errors_come_before_the_runtime_check(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        build_engine(tmp_path / "missing.onnx", tmp_path / "m.engine")
    plain = save(build_layer_model(conv_sig(8, 8, 4), 8, 8), tmp_path / "m.onnx")
    with pytest.raises(InputError, match="QuantizeLinear"):
        build_engine(plain, tmp_path / "m.engine", int8=True)
    with pytest.raises(InputError, match="`optimization_level`"):
        build_serialized(plain, optimization_level=6)
    with pytest.raises(InputError, match="workspace"):
        build_serialized(plain, workspace_mib=0)


def test_explicit_quantization_is_recognised():
    sig = conv_sig(8, 8, 4)
    model = build_layer_model(sig, 8, 8)
    assert not has_explicit_quantization(model)
    assert has_explicit_quantization(quantize_layer_model(model, sig))


def test_without_tensorrt_building_says_what_to_install(tmp_path):
    if REASON is None:
        pytest.skip("TensorRT and a GPU are present: the refusal cannot be exercised")
    plain = save(build_layer_model(conv_sig(8, 8, 4), 8, 8), tmp_path / "m.onnx")
    with pytest.raises(BackendUnavailable, match="install"):
        build_engine(plain, tmp_path / "m.engine")
    assert not list(tmp_path.glob("*.engine*"))


@pytest.mark.gpu
@pytest.mark.skipif(REASON is not None, reason=f"tensorrt: {REASON}")
def test_engine_is_written_atomically(tmp_path):
    plain = save(build_layer_model(conv_sig(16, 16, 8), 16, 16), tmp_path / "m.onnx")
    out = build_engine(plain, tmp_path / "m.engine", fp16=True, workspace_mib=256,
                       optimization_level=1)
    assert out.stat().st_size > 0 and not list(tmp_path.glob(".*partial"))
