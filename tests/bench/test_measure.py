import json

import onnx
import pytest

from mdp_trt.bench.measure import BenchResult, benchmark_model, benchmark_models
from mdp_trt.errors import InputError
from mdp_trt.latency.backends.layer_model import build_layer_model
from mdp_trt.latency.backends.ort_cpu import OrtCpuBackend
from mdp_trt.latency.protocol import BackendBase, DeviceFingerprint, Measurement
from mdp_trt.signature import LayerSignature
from mdp_trt.latency.backends.timing import TimingPolicy

FAST = TimingPolicy(warmup_runs=1, warmup_s=0.0, budget_s=0.02, min_repeats=7, max_repeats=50)


class FixedBackend(BackendBase):
    """Every model takes 2 ms."""

    name = "fixed"

    def available(self):
        return None

    def fingerprint(self):
        return DeviceFingerprint("fixed", "test device", "none", "0", 1, "fp32")

    def measure_layer(self, sig, out_channels, in_channels):
        raise AssertionError("benchmark_model must not time layers")

    def measure_model(self, path, *, batch=None):
        self._require_active()
        return Measurement(2.0, 0.1, 30, 1.9, 2.1)


def conv_sig(out_ch, in_ch, hw):
    return LayerSignature("Conv", out_ch, in_ch, kernel=(3, 3), strides=(1, 1), pads=(1,) * 4,
                          dilations=(1, 1), input_hw=(hw, hw), activation="Relu")


def save(model, path):
    onnx.save(model, str(path))
    return path


def dynamic_batch_model(tmp_path):
    model = build_layer_model(conv_sig(16, 8, 8), 16, 8)
    for value in (model.graph.input[0], model.graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_param = "N"
    del model.graph.value_info[:]
    return save(model, tmp_path / "dyn.onnx")


def test_benchmark_on_onnx_runtime_reports_latency_and_fps(tmp_path):
    path = dynamic_batch_model(tmp_path)
    backend = OrtCpuBackend(model_policy=FAST)
    result = benchmark_model(path, backend, batch=4)
    assert not backend.active  # activated only for the measurement
    assert result.batch == 4 and result.inputs[0].shape == (4, 8, 8, 8)
    assert result.p10_ms <= result.latency_ms <= result.p90_ms and result.latency_ms > 0
    assert result.fps == pytest.approx(4 * 1000.0 / result.latency_ms)
    assert result.repeats >= 7
    assert result.fingerprint == backend.fingerprint().to_json()


def test_result_json_round_trip(tmp_path):
    path = save(build_layer_model(conv_sig(16, 8, 8), 16, 8), tmp_path / "m.onnx")
    result = benchmark_model(path, FixedBackend())
    assert result.latency_ms == 2.0 and result.fps == pytest.approx(500.0)
    assert BenchResult.from_json(json.loads(json.dumps(result.to_json()))) == result
    assert result.to_json()["format"] == "mdp-bench/1"


def test_a_fixed_batch_cannot_be_overridden(tmp_path):
    path = save(build_layer_model(conv_sig(16, 8, 8), 16, 8), tmp_path / "m.onnx")
    with pytest.raises(InputError, match="fixed batch of 1"):
        benchmark_model(path, FixedBackend(), batch=8)


class BurstyBackend(FixedBackend):
    """Foreign load inflates some rounds: medians 5, 2, 4 ms."""

    def __init__(self):
        super().__init__()
        self.medians = iter([5.0, 2.0, 4.0])

    def measure_model(self, path, *, batch=None):
        median = next(self.medians)
        return Measurement(median, 0.1, 30, median * 0.9, median * 1.1)


def test_the_least_disturbed_round_is_kept(tmp_path):
    path = save(build_layer_model(conv_sig(16, 8, 8), 16, 8), tmp_path / "m.onnx")
    result = benchmark_model(path, BurstyBackend(), rounds=3)
    assert result.latency_ms == 2.0 and result.round_medians_ms == (5.0, 2.0, 4.0)
    assert result.repeats == 90


def test_models_compared_are_timed_together_in_order(tmp_path):
    paths = [dynamic_batch_model(tmp_path), save(build_layer_model(conv_sig(16, 8, 8), 16, 8),
                                                 tmp_path / "m.onnx")]
    backend = OrtCpuBackend(model_policy=FAST)
    results = benchmark_models(paths, backend, batch=None)
    assert not backend.active
    assert [r.model for r in results] == [str(p) for p in paths]
    assert results[0].ratio is None and results[1].ratio.rounds >= 6
    assert results[1].ratio.low <= results[1].ratio.value <= results[1].ratio.high
    assert all(r.latency_ms > 0 and r.repeats >= 7 and len(r.round_medians_ms) == 1
               for r in results)


def test_backends_without_interleaving_time_compared_models_in_alternating_rounds(tmp_path):
    path = save(build_layer_model(conv_sig(16, 8, 8), 16, 8), tmp_path / "m.onnx")
    backend = BurstyBackend()
    # rounds in the order (0, 1), (1, 0), (0, 1): ratios 2/5, 4/4, 2/4
    backend.medians = iter([5.0, 2.0, 4.0, 4.0, 4.0, 2.0])
    first, second = benchmark_models([path, path], backend)
    assert (first.latency_ms, second.latency_ms) == (4.0, 2.0)  # each one's least disturbed
    assert first.ratio is None
    assert (second.ratio.value, second.ratio.low, second.ratio.high) == (0.5, 0.4, 1.0)
    assert second.ratio.rounds == 3 and not second.ratio.reliable
