import pytest

from mdp_trt.errors import BackendUnavailable, InputError
from mdp_trt.latency.backends import host, registry
from mdp_trt.latency.backends.ort_cpu import OrtCpuBackend
from mdp_trt.latency.protocol import LatencyBackend

from tests.latency.fixtures import FakeBackend


def test_get_backend_builds_ort_cpu_with_threads():
    backend = registry.get_backend("ort-cpu", threads=2)
    assert isinstance(backend, OrtCpuBackend)
    assert backend.name == "ort-cpu" and backend.threads == 2
    assert registry.DEFAULT_BACKEND in registry.backend_names()


def test_unknown_name_lists_the_choices():
    with pytest.raises(BackendUnavailable, match="unknown latency backend 'cudnn'.*ort-cpu.*tensorrt"):
        registry.get_backend("cudnn")


def test_known_but_unusable_backend_says_why(monkeypatch):
    class Missing(FakeBackend):
        def available(self):
            return "the 'fakert' package is not installed; pip install fakert"

    monkeypatch.setitem(registry.BACKENDS, "fake", registry.BackendSpec(lambda **kw: Missing(**kw)))
    with pytest.raises(BackendUnavailable, match="'fake' cannot run here.*pip install fakert"):
        registry.get_backend("fake")


def test_every_registered_backend_builds_and_answers_available():
    # Constructing must not need the runtime (it is imported on activation); available() is the
    # one place that says whether it can run, as a reason string.
    for name in registry.backend_names():
        backend = registry.BACKENDS[name].factory(threads=1)
        assert backend.name == name and isinstance(backend, LatencyBackend)
        reason = backend.available()
        assert reason is None or (isinstance(reason, str) and reason)
    assert registry.GPU_BACKENDS < set(registry.backend_names())


def test_cli_options_map_to_backend_keywords():
    assert registry.backend_options("ort-cpu", threads=2) == {"threads": 2}
    assert registry.backend_options("torch-cuda", precision="fp16", channels_last=True) == {
        "threads": 1, "precision": "fp16", "channels_last": True}
    with pytest.raises(InputError, match="`channels_last`.*'ort-cpu'"):
        registry.backend_options("ort-cpu", channels_last=True)
    assert registry.backend_options("ort-cpu", weights="cold") == {"threads": 1, "weights": "cold"}
    with pytest.raises(InputError, match="`weights` cold.*'torch-cpu'"):
        registry.backend_options("torch-cpu", weights="cold")
    with pytest.raises(InputError, match="hot, cold or auto"):
        registry.backend_options("ort-cpu", weights="warm")
    # A precision the backend lacks is refused, naming the flag.
    with pytest.raises(InputError, match="fp32"):
        registry.get_backend("ort-cpu", **registry.backend_options("ort-cpu", precision="fp16"))


def test_auto_weights_are_cold_only_for_ort_cpu_models_larger_than_the_llc(monkeypatch):
    monkeypatch.setattr(host, "llc_bytes", lambda: 32 * 2**20)
    assert registry.cell_weights("auto", "ort-cpu", 45 * 2**20) == "cold"  # ResNet-18
    assert registry.cell_weights("auto", "ort-cpu", 10 * 2**20) == "hot"
    assert registry.cell_weights("auto", "torch-cpu", 45 * 2**20) == "hot"
    assert registry.cell_weights("hot", "ort-cpu", 45 * 2**20) == "hot"


def test_each_spec_declares_what_its_backend_accepts():
    # The registry checks flags against the specs without building a backend; each backend's
    # constructor must accept exactly what its spec declares, or the two would disagree.
    for name, spec in registry.BACKENDS.items():
        for precision in spec.precisions:
            assert spec.factory(threads=1, precision=precision).precision == precision
        with pytest.raises(InputError, match="precision"):
            spec.factory(threads=1, precision="fp64")
        assert spec.factory(threads=1).weights == spec.weights[0]
        for weights in spec.weights[1:]:
            assert spec.factory(threads=1, weights=weights).weights == weights
        if spec.channels_last:
            assert spec.factory(threads=1, channels_last=True).channels_last
        with pytest.raises(InputError, match="precision"):
            registry.backend_options(name, precision="fp64")
    assert registry.backend_options("tensorrt", precision="int8")["precision"] == "int8"
    with pytest.raises(InputError, match="fp32 or fp16.*'int8'"):
        registry.get_backend("torch-cpu", precision="int8")
