"""The ``ort-cpu`` backend: ONNX Runtime's CPU execution provider.

Layers and whole models run under the same session options (``session_options``): ``threads``
intra-op threads (default 1: multi-threaded timings on small shared machines are noisy), one
inter-op thread, sequential execution, all graph optimisations (so fusions match the full model),
inputs and outputs bound once through IOBinding. ``weights="cold"`` times a cell with its weights
streamed from memory, as inside a model whose weights exceed the last-level cache: the one-layer
model holds ``copies`` replicas of the layer whose weights together exceed twice the LLC, and a
cell is the run time divided by ``copies`` (docs/latency-model-notes.md).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from mdp_trt.analysis import Layer
from mdp_trt.errors import InputError, UnsupportedGraph
from mdp_trt.latency.backends import node_profile
from mdp_trt.latency.backends.host import cpu_description, llc_bytes
from mdp_trt.latency.backends.inputs import ModelInput, model_inputs, random_feeds
from mdp_trt.latency.backends.layer_model import build_layer_model, layer_input_shape
from mdp_trt.latency.backends.timing import (CELL_POLICY, MODEL_POLICY, TimingPolicy,
                                             time_interleaved, time_runs)
from mdp_trt.latency.protocol import (BackendBase, Comparison, DeviceFingerprint, Measurement,
                                      Weights)
from mdp_trt.signature import LayerSignature

__all__ = ["OrtCpuBackend", "session_options", "ort_unavailable_reason", "cold_copies",
           "MIN_ORT_VERSION"]

log = logging.getLogger(__name__)

MIN_ORT_VERSION = (1, 18)
Precision = Literal["fp32"]


MAX_COLD_COPIES = 8

# ORT's profiler adds its own time to every node. Where that slows the whole run by more than
# this, its node times are not the model's and layer_shares gives none (one scale for all
# layers then). Profiled / plain run, 1 thread, Zen 3 VM, 2026-12-08: ResNet-18 224 px 0.98,
# 64 px 1.17, the MNIST ResNet (0.8 ms) 1.29; the 8x8-digits ResNet (0.3-0.5 ms) 2.0-3.0 and
# the MNIST ViT (0.9 ms, 132 nodes) 2.5, whose per-layer ratios came out at 0.3-0.5 and rising
# with the width, while a chain of convs costs its cell per layer.
MAX_PROFILE_SLOWDOWN = 1.5
# Plain runs timed beside a profile, to compare the profiled run with.
_PLAIN_POLICY = TimingPolicy(warmup_runs=3, warmup_s=0.05, budget_s=0.5, min_repeats=10,
                             max_repeats=2000)


def cold_copies(weight_bytes: int, llc: int) -> int:
    """Replicas of a layer whose weights together overflow the LLC twice (1: not worth it)."""
    copies = math.ceil(2 * llc / max(weight_bytes, 1))
    return copies if copies <= MAX_COLD_COPIES else 1


def _replicated(models: list) -> bytes:
    """One model running each of ``models`` (one-layer models reading ``x``) on the same ``x``;
    each copy's tensor names get a prefix so that its weights stay its own."""
    import onnx

    merged = onnx.ModelProto()
    merged.CopyFrom(models[0])
    graph = merged.graph
    del graph.node[:], graph.initializer[:], graph.output[:]
    for index, model in enumerate(models):
        prefix = f"c{index}_"
        rename = lambda name: name if name == "x" else prefix + name  # noqa: E731
        for node in model.graph.node:
            copy = graph.node.add()
            copy.CopyFrom(node)
            copy.name = prefix + node.name
            copy.input[:] = [rename(n) for n in node.input]
            copy.output[:] = [rename(n) for n in node.output]
        for init in model.graph.initializer:
            graph.initializer.add().CopyFrom(init)
            graph.initializer[-1].name = prefix + init.name
        for out in model.graph.output:
            graph.output.add().CopyFrom(out)
            graph.output[-1].name = prefix + out.name
    return merged.SerializeToString()


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def ort_unavailable_reason() -> str | None:
    """Why no recent enough onnxruntime is importable here, or None (any execution provider)."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        return f"onnxruntime is not importable ({exc}); install it: pip install onnxruntime"
    if _version_tuple(ort.__version__) < MIN_ORT_VERSION:
        wanted = ".".join(map(str, MIN_ORT_VERSION))
        return f"onnxruntime {ort.__version__} is too old; pip install 'onnxruntime>={wanted}'"
    return None


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
    monotone_latency = True  # on a CPU a wider layer is never faster (tables.profile_tables)
    smooth_latency = True  # and its latency is smooth in the widths (tables/surface.py)
    call_overhead = True  # each cell is one run_with_iobinding call (tables/overhead.py)

    def __init__(self, *, threads: int = 1, precision: Precision = "fp32",
                 cell_policy: TimingPolicy = CELL_POLICY,
                 model_policy: TimingPolicy = MODEL_POLICY, seed: int = 0,
                 weights: Weights = "hot") -> None:
        super().__init__(threads)
        if precision != "fp32":
            raise InputError(f"{self.name} runs models in their own precision; only 'fp32' is "
                             f"supported as `precision`, got {precision!r}", parameters=("precision",))
        self.precision = precision
        self.cell_policy = cell_policy
        self.model_policy = model_policy
        if weights not in ("hot", "cold"):
            raise InputError(f"weights must be 'hot' or 'cold', got {weights!r}")
        self.seed = seed
        self.weights = weights
        self._llc = llc_bytes()
        self._ort = None
        self._options = None

    def available(self) -> str | None:
        reason = ort_unavailable_reason()
        if reason is not None:
            return reason
        import onnxruntime as ort

        if "CPUExecutionProvider" not in ort.get_available_providers():
            return ("this onnxruntime build has no CPUExecutionProvider; "
                    "install the standard wheel: pip install onnxruntime")
        return None

    def _activate_impl(self) -> None:
        import onnxruntime as ort

        self._ort = ort
        self._options = session_options(self.threads)

    def _deactivate_impl(self) -> None:
        self._ort = None
        self._options = None

    # What a GPU subclass (ort_cuda) changes: the providers, where bound tensors live, and the
    # device a fingerprint names.
    def _providers(self) -> list:
        return ["CPUExecutionProvider"]

    def _ort_device(self) -> tuple[str, int]:
        return "cpu", 0

    def _device_description(self) -> str:
        return cpu_description()

    def fingerprint(self) -> DeviceFingerprint:
        import onnxruntime as ort

        return DeviceFingerprint(backend=self.name, device=self._device_description(),
                                 runtime="onnxruntime", runtime_version=ort.__version__,
                                 threads=self.threads, precision=self.precision)

    def _session(self, model: bytes | str):
        return self._ort.InferenceSession(model, sess_options=self._options,
                                          providers=self._providers())

    def _time_session(self, session, feeds: dict, policy: TimingPolicy) -> Measurement:
        return time_runs(self._bound_run(session, feeds), policy)

    def _bound_run(self, session, feeds: dict):
        """One timed call, ``run_with_iobinding`` on inputs and outputs bound once."""
        ort = self._ort
        binding = session.io_binding()
        keep = []  # OrtValues must outlive the binding
        for name, array in feeds.items():
            value = ort.OrtValue.ortvalue_from_numpy(array, *self._ort_device())
            keep.append(value)
            binding.bind_ortvalue_input(name, value)
        # One plain run gives the output shapes; outputs are then preallocated and bound.
        outputs = session.run(None, feeds)
        for meta, array in zip(session.get_outputs(), outputs):
            value = ort.OrtValue.ortvalue_from_numpy(array, *self._ort_device())
            keep.append(value)
            binding.bind_ortvalue_output(meta.name, value)

        def run():
            session.run_with_iobinding(binding)
        run.bound_values = keep  # alive as long as the call is
        return run

    def measure_layer(self, sig: LayerSignature, out_channels: int, in_channels: int) -> Measurement:
        self._require_active()
        model = build_layer_model(sig, out_channels, in_channels, seed=self.seed)
        copies = 1
        if self.weights == "cold":
            weight_bytes = sum(len(init.raw_data) for init in model.graph.initializer)
            copies = cold_copies(weight_bytes, self._llc)
        if copies > 1:
            # Distinct seeds: distinct weight buffers that the runtime cannot share.
            payload = _replicated([model] + [
                build_layer_model(sig, out_channels, in_channels, seed=self.seed + k)
                for k in range(1, copies)])
        else:
            payload = model.SerializeToString()
        try:
            session = self._session(payload)
        except Exception as exc:  # e.g. no CPU kernel for this op/dtype in this ORT build
            raise UnsupportedGraph(
                f"onnxruntime cannot run a one-layer {sig.op_type} at out={out_channels}, "
                f"in={in_channels} ({sig.key()}): {exc}", op_type=sig.op_type) from exc
        spec = ModelInput("x", layer_input_shape(sig, in_channels), sig.dtype)
        feeds = random_feeds((spec,), seed=self.seed)
        m = self._time_session(session, feeds, self.cell_policy)
        if copies == 1:
            return m
        return Measurement(m.median_ms / copies, m.spread, m.repeats, m.p10_ms / copies,
                           m.p90_ms / copies)

    def layer_shares(self, path: str | Path, layers: Sequence[Layer]) -> dict[str, float] | None:
        """Each layer's share of the run in ORT's node profile; None where profiling slows the
        run by more than ``MAX_PROFILE_SLOWDOWN`` (small nodes: the profiler's own time is then
        a large, uneven part of every node's)."""
        self._require_active()
        nodes, run_ms = node_profile.profile_nodes(path, session_options(self.threads),
                                                   self._providers())
        plain_ms = self._time_session(*self._model_session(path, None), _PLAIN_POLICY).median_ms
        if run_ms > MAX_PROFILE_SLOWDOWN * plain_ms:
            log.info("ORT's profiler slows %s from %.3f to %.3f ms a run: its node times are not "
                     "the model's; no per-layer shares", Path(path).name, plain_ms, run_ms)
            return None
        return {name: ms / run_ms
                for name, ms in node_profile.layer_times(path, layers, nodes).items()}

    def measure_model(self, path: str | Path, *, batch: int | None = None) -> Measurement:
        self._require_active()
        return self._time_session(*self._model_session(path, batch), self.model_policy)

    def measure_models(self, paths, *, batch: int | None = None) -> Comparison:
        self._require_active()
        runs = [self._bound_run(*self._model_session(path, batch)) for path in paths]
        return time_interleaved(runs, self.model_policy)

    def _model_session(self, path: str | Path, batch: int | None):
        inputs = model_inputs(path, batch=batch)
        try:
            session = self._session(str(path))
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
            raise InputError(f"{path}: onnxruntime cannot load the model ({exc})") from exc
        feeds = random_feeds(inputs, seed=self.seed)
        try:
            session.run(None, feeds)
        except Exception as exc:  # a model that loads can still fail on its first inputs
            raise InputError(f"{path}: onnxruntime loads the model but cannot run it on inputs "
                             f"of shape {', '.join(str(a.shape) for a in feeds.values())} "
                             f"({exc})") from exc
        return session, feeds
