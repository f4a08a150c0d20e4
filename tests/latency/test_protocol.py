import json

import pytest

from mdp_trt.latency.protocol import DeviceFingerprint, LatencyBackend, Measurement

from .fixtures import FakeBackend


def test_fingerprint_key_is_stable_and_discriminating():
    a = DeviceFingerprint("ort-cpu", "CPU X, 2 cores", "onnxruntime", "1.0", 1, "fp32")
    same = DeviceFingerprint.from_json(json.loads(json.dumps(a.to_json())))
    assert same == a and same.key() == a.key()
    two_threads = DeviceFingerprint("ort-cpu", "CPU X, 2 cores", "onnxruntime", "1.0", 2, "fp32")
    assert two_threads.key() != a.key()


def test_measurement_json_round_trip():
    m = Measurement(1.5, 0.2, 12, 1.4, 1.7)
    assert Measurement.from_json(json.loads(json.dumps(m.to_json()))) == m


def test_activation_is_reentrant_and_checked():
    backend = FakeBackend()
    assert isinstance(backend, LatencyBackend)
    with pytest.raises(RuntimeError, match="not active"):
        backend.measure_model("x.onnx")
    with backend as active:
        assert active is backend
        with backend:
            assert backend.active
        assert backend.active  # the inner exit does not release the runtime
    assert not backend.active
    assert backend.activations == 1
    with pytest.raises(RuntimeError, match="deactivated"):
        backend.deactivate()


def test_the_protocol_includes_how_a_backends_timings_behave():
    # profile_tables and calibration read these of every backend; BackendBase gives the defaults
    backend = FakeBackend()
    assert (backend.weights, backend.monotone_latency, backend.smooth_latency) == ("hot", False,
                                                                                   False)
    assert backend.layer_shares("x.onnx", ()) is None

    class NoWeights:
        name = "bare"
        monotone_latency = smooth_latency = False

    for method in ("available", "__enter__", "__exit__", "fingerprint", "measure_layer",
                   "measure_model", "measure_models", "layer_shares"):
        setattr(NoWeights, method, lambda self, *a, **k: None)
    assert not isinstance(NoWeights(), LatencyBackend)
