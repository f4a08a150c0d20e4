"""The ``tensorrt`` backend: every cell and every model timed as a TensorRT engine.

A cell is the one-layer ONNX model (``layer_model.build_layer_model``) built into an engine with
``deploy.tensorrt.build_serialized`` under this backend's builder settings (precision flags,
workspace limit, builder optimisation level), so a cell costs what TensorRT's chosen tactic
costs, fused epilogue included. A whole model is built the same way from its file. Engines run
through ``execute_async_v3`` on one CUDA stream with device buffers bound once; every run is
timed by a CUDA event pair (cuda-python's runtime API, ``gpu.time_device_runs``).

INT8: TensorRT 10 builds INT8 from explicit quantization only, so in ``int8`` precision a cell's
one-layer model gets QuantizeLinear/DequantizeLinear pairs on its input and weight
(``quantize_layer_model``; scales are placeholders: INT8 kernel time does not depend on them),
and a whole model must already carry Q/DQ nodes. ``int8`` also allows FP16 for what stays
unquantized, as a deployment build would.

TensorRT and cuda-python are imported only here and in ``deploy.tensorrt``; without them or
without a GPU, ``available()`` says what to install and nothing is ever simulated.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from mdp_trt.deploy.tensorrt import build_serialized, tensorrt_unavailable_reason
from mdp_trt.errors import InputError
from mdp_trt.latency.backends.gpu import DeviceClock, gpu_description, time_device_runs
from mdp_trt.latency.backends.inputs import model_inputs, random_feeds
from mdp_trt.latency.backends.layer_model import build_layer_model, layer_input_shape
from mdp_trt.latency.backends.timing import CELL_POLICY, MODEL_POLICY, TimingPolicy
from mdp_trt.latency.protocol import BackendBase, DeviceFingerprint, Measurement
from mdp_trt.signature import LayerSignature

__all__ = ["TensorRTBackend", "quantize_layer_model", "Precision"]

log = logging.getLogger(__name__)

Precision = Literal["fp32", "fp16", "int8"]


def quantize_layer_model(model: onnx.ModelProto, sig: LayerSignature) -> onnx.ModelProto:
    """``model`` (a one-layer model from ``build_layer_model``) with its input ``x`` and weight
    ``W`` passed through QuantizeLinear -> DequantizeLinear: per-tensor for the activation,
    per-output-channel for the weight (axis 0 for Conv/Gemm, 1 for MatMul's ``in x out``)."""
    if sig.dtype != "float32":
        raise InputError(f"INT8 cells are quantized from float32 layers; this layer is "
                         f"{sig.dtype} ({sig.key()})")
    quantized = onnx.ModelProto()
    quantized.CopyFrom(model)
    graph = quantized.graph
    weight = next(init for init in graph.initializer if init.name == "W")
    axis = 1 if sig.op_type == "MatMul" else 0
    channels = weight.dims[axis]
    graph.initializer.extend([
        numpy_helper.from_array(np.array(1 / 127, np.float32), "x_scale"),
        numpy_helper.from_array(np.array(0, np.int8), "x_zero"),
        numpy_helper.from_array(np.full(channels, 1 / 127, np.float32), "W_scale"),
        numpy_helper.from_array(np.zeros(channels, np.int8), "W_zero"),
    ])
    layer = next(node for node in graph.node if node.name == "layer")
    layer.input[0], layer.input[1] = "x_dq", "W_dq"
    qdq = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["x_q"], name="x_quant"),
        helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zero"], ["x_dq"],
                         name="x_dequant"),
        helper.make_node("QuantizeLinear", ["W", "W_scale", "W_zero"], ["W_q"], name="W_quant",
                         axis=axis),
        helper.make_node("DequantizeLinear", ["W_q", "W_scale", "W_zero"], ["W_dq"],
                         name="W_dequant", axis=axis),
    ]
    nodes = qdq + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    return quantized


def _cuda_call(result):
    """cuda-python returns ``(error, *values)``; raise on an error, return the value(s)."""
    from cuda.bindings import runtime as cudart

    error, *values = result
    if error != cudart.cudaError_t.cudaSuccess:
        name = cudart.cudaGetErrorName(error)[1]
        raise RuntimeError(f"CUDA runtime call failed: {name!r} ({error})")
    return values[0] if len(values) == 1 else values


class TensorRTBackend(BackendBase):
    """Times one-layer models and whole ONNX models as TensorRT engines on one GPU."""

    name = "tensorrt"
    call_overhead = True  # each cell is one engine enqueue (tables/overhead.py)

    def __init__(self, *, threads: int = 1, precision: Precision = "fp32",
                 workspace_mib: int = 4096, optimization_level: int = 3, device_id: int = 0,
                 cell_policy: TimingPolicy = CELL_POLICY,
                 model_policy: TimingPolicy = MODEL_POLICY, seed: int = 0) -> None:
        super().__init__(threads)
        if precision not in ("fp32", "fp16", "int8"):
            raise InputError(f"`precision` must be fp32, fp16 or int8 for tensorrt, got "
                             f"{precision!r}", parameters=("precision",))
        if workspace_mib < 1 or not 0 <= optimization_level <= 5:
            raise InputError(f"tensorrt needs workspace_mib >= 1 and optimization_level 0-5, got "
                             f"{workspace_mib} and {optimization_level}")
        # Host threads do not change an engine's GPU time; recorded only so that fingerprints
        # of all backends have the same fields.
        self.precision = precision
        self.workspace_mib = workspace_mib
        self.optimization_level = optimization_level
        self.device_id = device_id
        self.cell_policy = cell_policy
        self.model_policy = model_policy
        self.seed = seed
        self._trt = None
        self._runtime = None
        self._stream = None

    def available(self) -> str | None:
        return tensorrt_unavailable_reason()

    def _activate_impl(self) -> None:
        import tensorrt as trt
        from cuda.bindings import runtime as cudart

        _cuda_call(cudart.cudaSetDevice(self.device_id))
        self._trt = trt
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._stream = _cuda_call(cudart.cudaStreamCreate())

    def _deactivate_impl(self) -> None:
        from cuda.bindings import runtime as cudart

        _cuda_call(cudart.cudaStreamDestroy(self._stream))
        self._trt = self._runtime = self._stream = None

    def fingerprint(self) -> DeviceFingerprint:
        import tensorrt as trt

        # Workspace and optimisation level change which tactics the builder may pick, so they
        # are part of what a measurement means.
        return DeviceFingerprint(
            backend=self.name, device=gpu_description(self.device_id),
            runtime=(f"tensorrt (optimization level {self.optimization_level}, workspace "
                     f"{self.workspace_mib} MiB)"),
            runtime_version=trt.__version__, threads=self.threads, precision=self.precision)

    def _build(self, model: Path | bytes, name: str,
               input_shapes: dict[str, tuple[int, ...]] | None = None) -> bytes:
        return build_serialized(model, fp16=self.precision in ("fp16", "int8"),
                                int8=self.precision == "int8", workspace_mib=self.workspace_mib,
                                optimization_level=self.optimization_level,
                                input_shapes=input_shapes, name=name)

    def _time_engine(self, plan: bytes, feeds: dict[str, np.ndarray],
                     policy: TimingPolicy) -> Measurement:
        from cuda.bindings import runtime as cudart

        trt = self._trt
        engine = self._runtime.deserialize_cuda_engine(plan)
        context = engine.create_execution_context()
        buffers = []
        try:
            names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
            for name in names:
                if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                    context.set_input_shape(name, feeds[name].shape)
            for name in names:
                dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
                shape = tuple(context.get_tensor_shape(name))
                nbytes = max(int(np.prod(shape)) * dtype.itemsize, 1)
                pointer = _cuda_call(cudart.cudaMalloc(nbytes))
                buffers.append(pointer)
                if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                    host = np.ascontiguousarray(feeds[name], dtype=dtype)
                    _cuda_call(cudart.cudaMemcpy(pointer, host.ctypes.data, host.nbytes,
                                                 cudart.cudaMemcpyKind.cudaMemcpyHostToDevice))
                context.set_tensor_address(name, int(pointer))
            stream = self._stream
            clock = DeviceClock(
                new_event=lambda: _cuda_call(cudart.cudaEventCreate()),
                record=lambda event: _cuda_call(cudart.cudaEventRecord(event, stream)),
                elapsed_ms=lambda begin, end: _cuda_call(cudart.cudaEventElapsedTime(begin, end)),
                synchronize=lambda: _cuda_call(cudart.cudaStreamSynchronize(stream)),
                release=lambda event: _cuda_call(cudart.cudaEventDestroy(event)))

            def run() -> None:
                if not context.execute_async_v3(int(stream)):
                    raise RuntimeError("TensorRT execute_async_v3 failed (see its log above)")

            return time_device_runs(run, clock, policy)
        finally:
            _cuda_call(cudart.cudaStreamSynchronize(self._stream))
            for pointer in buffers:
                _cuda_call(cudart.cudaFree(pointer))

    def measure_layer(self, sig: LayerSignature, out_channels: int, in_channels: int) -> Measurement:
        self._require_active()
        model = build_layer_model(sig, out_channels, in_channels, seed=self.seed)
        if self.precision == "int8":
            model = quantize_layer_model(model, sig)
        plan = self._build(model.SerializeToString(),
                           f"one-layer {sig.op_type} out={out_channels} in={in_channels}")
        x = np.random.default_rng(self.seed).standard_normal(
            layer_input_shape(sig, in_channels)).astype(np.float32)
        return self._time_engine(plan, {"x": x}, self.cell_policy)

    def measure_model(self, path: str | Path, *, batch: int | None = None) -> Measurement:
        self._require_active()
        inputs = model_inputs(path, batch=batch)
        plan = self._build(Path(path), str(path), {spec.name: spec.shape for spec in inputs})
        return self._time_engine(plan, random_feeds(inputs, seed=self.seed), self.model_policy)
