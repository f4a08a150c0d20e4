import onnxruntime as ort
import pytest

from mdp_trt.errors import BackendUnavailable, InputError
from mdp_trt.latency.backends.layer_model import build_layer_model
from mdp_trt.latency.backends.ort_cuda import OrtCudaBackend
from mdp_trt.latency.backends.timing import TimingPolicy

from tests.latency.fixtures import conv_sig, save

FAST = TimingPolicy(warmup_runs=1, warmup_s=0.0, budget_s=0.02, min_repeats=7, max_repeats=50)
REASON = OrtCudaBackend().available()


def test_shares_the_cpu_backend_settings_but_binds_on_the_gpu():
    backend = OrtCudaBackend(threads=2, device_id=1)
    assert backend.name == "ort-cuda" and backend.threads == 2 and backend.weights == "hot"
    assert backend._providers() == [("CUDAExecutionProvider", {"device_id": 1}),
                                    "CPUExecutionProvider"]
    assert backend._ort_device() == ("cuda", 1)


def test_bad_options_are_input_errors():
    with pytest.raises(InputError, match="hot weights"):
        OrtCudaBackend(weights="cold")
    with pytest.raises(InputError, match="device id"):
        OrtCudaBackend(device_id=-1)
    with pytest.raises(InputError, match="ort-cuda runs models in their own precision"):
        OrtCudaBackend(precision="fp16")


def test_without_the_cuda_provider_it_says_what_to_install():
    if REASON is None:
        pytest.skip("CUDAExecutionProvider starts here: the refusal cannot be exercised")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert "onnxruntime-gpu" in REASON or "mdp-trt[ort-cuda]" in REASON
    with pytest.raises(BackendUnavailable, match="ort-cuda"):
        OrtCudaBackend().activate()


@pytest.mark.gpu
@pytest.mark.skipif(REASON is not None, reason=f"ort-cuda: {REASON}")
def test_cells_and_models_are_timed_on_the_gpu(tmp_path):
    path = save(build_layer_model(conv_sig(64, 64, 56), 64, 64), tmp_path / "m.onnx")
    with OrtCudaBackend(cell_policy=FAST, model_policy=FAST) as backend:
        small = backend.measure_layer(conv_sig(256, 256, 56), 32, 32)
        big = backend.measure_layer(conv_sig(256, 256, 56), 256, 256)
        model = backend.measure_model(path)
    assert 0 < small.median_ms < big.median_ms and model.median_ms > 0
    assert backend.fingerprint().backend == "ort-cuda"
