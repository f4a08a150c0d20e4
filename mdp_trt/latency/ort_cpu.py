"""The ``ort-cpu`` backend: ONNX Runtime's CPU execution provider.

Layers and whole models run under the same session options (``session_options``): ``threads``
intra-op threads (default 1, because multi-threaded timings on small shared machines are noisy),
one inter-op thread, sequential execution, all graph optimisations (so Conv+bias+activation fuse
exactly as they do in the full model). Inputs and outputs are bound once through IOBinding, so a
timed call is only ``run_with_iobinding``: no host copies or allocations in the loop.
"""

from __future__ import annotations

import logging
import os
import platform
from pathlib import Path
from typing import Literal

from mdp_trt.errors import BackendUnavailable, InputError, UnsupportedGraph
from mdp_trt.latency.inputs import ModelInput, model_inputs, random_feeds
from mdp_trt.latency.layer_model import build_layer_model, layer_input_shape
from mdp_trt.latency.protocol import BackendBase, DeviceFingerprint, Measurement
from mdp_trt.latency.signature import LayerSignature
from mdp_trt.latency.timing import CELL_POLICY, MODEL_POLICY, TimingPolicy, time_runs

__all__ = ["OrtCpuBackend", "session_options", "cpu_description", "MIN_ORT_VERSION"]

log = logging.getLogger(__name__)

MIN_ORT_VERSION = (1, 18)
Precision = Literal["fp32"]


def cpu_description() -> str:
    """CPU model name (from /proc/cpuinfo where there is one) and logical core count."""
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.lower().startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    model = model or platform.processor() or platform.machine() or "unknown CPU"
    return f"{model}, {os.cpu_count() or 1} cores"


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def session_options(threads: int):
    """The ``SessionOptions`` used for every timed session (layers and whole models alike)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: fusion notices are not ours to show
    return options


class OrtCpuBackend(BackendBase):
    """Times one-layer models and whole ONNX models on ONNX Runtime's CPU provider."""

    name = "ort-cpu"

    def __init__(self, *, threads: int = 1, precision: Precision = "fp32",
                 cell_policy: TimingPolicy = CELL_POLICY,
                 model_policy: TimingPolicy = MODEL_POLICY, seed: int = 0) -> None:
        super().__init__()
        if threads < 1:
            raise InputError(f"--threads must be at least 1, got {threads}")
        if precision != "fp32":
            raise InputError(f"ort-cpu runs models in their own precision; only 'fp32' is "
                             f"supported as --precision, got {precision!r}")
        self.threads = threads
        self.precision = precision
        self.cell_policy = cell_policy
        self.model_policy = model_policy
        self.seed = seed
        self._ort = None
        self._options = None

    def available(self) -> str | None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            return f"onnxruntime is not importable ({exc}); install it: pip install onnxruntime"
        if _version_tuple(ort.__version__) < MIN_ORT_VERSION:
            wanted = ".".join(map(str, MIN_ORT_VERSION))
            return (f"onnxruntime {ort.__version__} is too old; "
                    f"pip install 'onnxruntime>={wanted}'")
        if "CPUExecutionProvider" not in ort.get_available_providers():
            return ("this onnxruntime build has no CPUExecutionProvider; "
                    "install the standard wheel: pip install onnxruntime")
        return None

    def _activate_impl(self) -> None:
        reason = self.available()
        if reason is not None:
            # get_backend checks first; this guards direct construction.
            raise BackendUnavailable(f"backend {self.name!r} cannot run here: {reason}")
        import onnxruntime as ort

        self._ort = ort
        self._options = session_options(self.threads)

    def _deactivate_impl(self) -> None:
        self._ort = None
        self._options = None

    def fingerprint(self) -> DeviceFingerprint:
        import onnxruntime as ort

        return DeviceFingerprint(backend=self.name, device=cpu_description(),
                                 runtime="onnxruntime", runtime_version=ort.__version__,
                                 threads=self.threads, precision=self.precision)

    def _session(self, model: bytes | str):
        return self._ort.InferenceSession(model, sess_options=self._options,
                                          providers=["CPUExecutionProvider"])

    def _time_session(self, session, feeds: dict, policy: TimingPolicy) -> Measurement:
        ort = self._ort
        binding = session.io_binding()
        keep = []  # OrtValues must outlive the binding
        for name, array in feeds.items():
            value = ort.OrtValue.ortvalue_from_numpy(array)
            keep.append(value)
            binding.bind_ortvalue_input(name, value)
        # One plain run gives the output shapes; outputs are then preallocated and bound.
        outputs = session.run(None, feeds)
        for meta, array in zip(session.get_outputs(), outputs):
            value = ort.OrtValue.ortvalue_from_numpy(array)
            keep.append(value)
            binding.bind_ortvalue_output(meta.name, value)
        return time_runs(lambda: session.run_with_iobinding(binding), policy)

    def measure_layer(self, sig: LayerSignature, out_channels: int, in_channels: int) -> Measurement:
        self._require_active()
        model = build_layer_model(sig, out_channels, in_channels, seed=self.seed)
        try:
            session = self._session(model.SerializeToString())
        except Exception as exc:  # e.g. no CPU kernel for this op/dtype in this ORT build
            raise UnsupportedGraph(
                f"onnxruntime cannot run a one-layer {sig.op_type} at out={out_channels}, "
                f"in={in_channels} ({sig.key()}): {exc}", op_type=sig.op_type) from exc
        spec = ModelInput("x", layer_input_shape(sig, in_channels), sig.dtype)
        feeds = random_feeds((spec,), seed=self.seed)
        return self._time_session(session, feeds, self.cell_policy)

    def measure_model(self, path: str | Path, *, batch: int | None = None) -> Measurement:
        self._require_active()
        inputs = model_inputs(path, batch=batch)
        try:
            session = self._session(str(path))
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
            raise InputError(f"{path}: onnxruntime cannot load the model ({exc})") from exc
        feeds = random_feeds(inputs, seed=self.seed)
        return self._time_session(session, feeds, self.model_policy)
