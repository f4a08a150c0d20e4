import onnxruntime as ort
import pytest

from mdp_trt.errors import BackendUnavailable, InputError, UnsupportedGraph
from mdp_trt.latency.backends.host import cpu_description
from mdp_trt.latency.backends.layer_model import build_layer_model
from mdp_trt.latency.backends.ort_cpu import OrtCpuBackend, session_options
from mdp_trt.latency.backends.timing import TimingPolicy

from tests.latency.fixtures import conv_sig, save

FAST = TimingPolicy(warmup_runs=1, warmup_s=0.0, budget_s=0.02, min_repeats=7, max_repeats=50)


def test_fingerprint_records_the_runtime_and_settings():
    fp = OrtCpuBackend(threads=2).fingerprint()
    assert fp.backend == "ort-cpu" and fp.runtime == "onnxruntime"
    assert fp.runtime_version == ort.__version__
    assert fp.threads == 2 and fp.precision == "fp32"
    assert fp.device == cpu_description() and "cores" in fp.device


def test_session_options_are_sequential_single_inter_op():
    options = session_options(3)
    assert options.intra_op_num_threads == 3 and options.inter_op_num_threads == 1
    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL


def test_bad_settings_are_input_errors():
    with pytest.raises(InputError, match="threads"):
        OrtCpuBackend(threads=0)
    with pytest.raises(InputError, match="fp32"):
        OrtCpuBackend(precision="int8")


def test_unavailable_runtime_refuses_to_activate(monkeypatch):
    backend = OrtCpuBackend()
    monkeypatch.setattr(backend, "available", lambda: "no runtime here")
    with pytest.raises(BackendUnavailable, match="no runtime here"):
        backend.activate()
    assert not backend.active


def test_measured_cell_is_positive_and_grows_with_the_layer():
    backend = OrtCpuBackend(cell_policy=TimingPolicy(budget_s=0.05, min_repeats=7))
    sig = conv_sig(128, 128, 28)
    with pytest.raises(RuntimeError, match="not active"):
        backend.measure_layer(sig, 16, 16)
    with backend:
        small = backend.measure_layer(sig, 16, 16)
        big = backend.measure_layer(sig, 128, 128)  # 64x the multiply-adds
    assert small.median_ms > 0 and small.repeats >= 7
    assert small.p10_ms <= small.median_ms <= small.p90_ms
    # Coarse on purpose (shared machines): an order of magnitude of work must show.
    assert big.median_ms > 5 * small.median_ms


def test_measure_model_times_a_file(tmp_path):
    path = save(build_layer_model(conv_sig(16, 8, 8), 16, 8), tmp_path / "m.onnx")
    with OrtCpuBackend(model_policy=FAST) as backend:
        m = backend.measure_model(path)
        with pytest.raises(InputError, match="no such model file"):
            backend.measure_model(tmp_path / "missing.onnx")
    assert m.median_ms > 0 and m.repeats >= 7


def test_models_measured_together_keep_their_order_and_sizes(tmp_path):
    small = save(build_layer_model(conv_sig(64, 64, 28), 8, 8), tmp_path / "small.onnx")
    big = save(build_layer_model(conv_sig(64, 64, 28), 64, 64), tmp_path / "big.onnx")
    with OrtCpuBackend(model_policy=FAST) as backend:
        compared = backend.measure_models([big, small])
        big_m, small_m = compared.measurements
        with pytest.raises(InputError, match="no such model file"):
            backend.measure_models([big, tmp_path / "missing.onnx"])
    assert big_m.repeats >= 7 and small_m.repeats >= 7
    # 64x the multiply-adds; coarse on purpose (shared machines).
    assert big_m.median_ms > 5 * small_m.median_ms
    assert compared.ratios[0].value < 1 / 5  # the small one, as a ratio to the big one


def test_measure_model_refuses_a_file_ort_cannot_load(tmp_path):
    model = build_layer_model(conv_sig(16, 8, 8), 16, 8)
    model.graph.node[0].op_type = "NoSuchOp"
    path = save(model, tmp_path / "bad.onnx")
    with OrtCpuBackend(model_policy=FAST) as backend:
        with pytest.raises(InputError, match="cannot load"):
            backend.measure_model(path)


def test_a_layer_the_runtime_refuses_is_unsupported(monkeypatch):
    from onnxruntime.capi.onnxruntime_pybind11_state import NotImplemented as OrtNotImplemented

    def refuse(model):
        raise OrtNotImplemented("Could not find an implementation for Conv(11) node")

    with OrtCpuBackend(cell_policy=FAST) as backend:
        monkeypatch.setattr(backend, "_session", refuse)
        with pytest.raises(UnsupportedGraph, match="cannot run a one-layer Conv.*implementation"):
            backend.measure_layer(conv_sig(8, 8, 4), 8, 8)
