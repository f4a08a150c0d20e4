"""Build a TensorRT engine from an ONNX file with the TensorRT Python API.

TensorRT is an optional, GPU-only dependency (NVIDIA's package index); it is imported here only,
and its absence is a clear ``BackendUnavailable`` error, never a fake result.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import onnx

from mdp_trt.errors import BackendUnavailable, InputError

__all__ = ["build_engine", "build_serialized", "has_explicit_quantization",
           "tensorrt_unavailable_reason", "INSTALL_HINT"]

log = logging.getLogger(__name__)

INSTALL_HINT = ("install TensorRT on a machine with an NVIDIA GPU and driver "
                "(pip install 'mdp-trt[tensorrt]', from NVIDIA's package index)")


def tensorrt_unavailable_reason() -> str | None:
    """Why TensorRT cannot build engines here, or None when it can."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return f"the tensorrt Python package is not installed; {INSTALL_HINT}"
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        return "cuda-python is not installed (pip install 'mdp-trt[tensorrt]')"
    status, count = cudart.cudaGetDeviceCount()
    if status != cudart.cudaError_t.cudaSuccess or count == 0:
        return f"no CUDA GPU is visible ({status}); {INSTALL_HINT}"
    return None


def has_explicit_quantization(model: onnx.ModelProto) -> bool:
    """Whether ``model`` carries its INT8 scales as QuantizeLinear/DequantizeLinear nodes (the
    only INT8 form TensorRT 10 builds without a deprecated calibrator)."""
    return any(node.op_type == "QuantizeLinear" for node in model.graph.node)


def build_serialized(model: Path | bytes, *, fp16: bool = False, int8: bool = False,
                     workspace_mib: int = 4096, optimization_level: int = 3,
                     input_shapes: Mapping[str, tuple[int, ...]] | None = None,
                     name: str | None = None) -> bytes:
    """A serialized TensorRT engine (a plan) for ``model``: an ONNX file, or a serialized
    ModelProto whose weights are inline (the one-layer models of the latency tables).

    ``fp16``/``int8`` allow those precisions (INT8 needs Q/DQ nodes in the model);
    ``workspace_mib`` caps the scratch memory tactics may use; ``optimization_level`` (0-5) is
    the builder's tactic search effort. A dynamic input dimension takes its size from
    ``input_shapes`` (one optimisation profile, min = opt = max: the engine is timed at exactly
    that shape). ``name`` names the model in errors (default: the file path).
    """
    name = name or str(model)
    if workspace_mib < 1:
        raise InputError(f"`workspace_mib` must be at least 1, got {workspace_mib}",
                         parameters=("workspace_mib",))
    if not 0 <= optimization_level <= 5:
        raise InputError(f"`optimization_level` must be 0-5 (TensorRT's builder optimization "
                         f"level), got {optimization_level}", parameters=("optimization_level",))
    if isinstance(model, Path):
        if not model.is_file():
            raise InputError(f"{model}: no such file")
        if int8 and not has_explicit_quantization(onnx.load(str(model), load_external_data=False)):
            raise InputError(f"{model}: `int8` needs a model with QuantizeLinear/DequantizeLinear "
                             "nodes (explicit quantization); calibration is not supported yet",
                             parameters=("int8",))
    reason = tensorrt_unavailable_reason()
    if reason:
        raise BackendUnavailable(f"cannot build a TensorRT engine: {reason}")
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10 networks are always explicit-batch
    parser = trt.OnnxParser(network, logger)
    parsed = parser.parse_from_file(str(model)) if isinstance(model, Path) else parser.parse(model)
    if not parsed:
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise InputError(f"{name}: TensorRT's ONNX parser rejected the model: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    config.builder_optimization_level = optimization_level
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if int8:
        config.set_flag(trt.BuilderFlag.INT8)
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    dynamic = [t for t in inputs if any(d < 0 for d in t.shape)]
    if dynamic:
        profile = builder.create_optimization_profile()
        for tensor in dynamic:
            shape = (input_shapes or {}).get(tensor.name)
            if shape is None:
                raise InputError(f"{name}: input {tensor.name!r} has the dynamic shape "
                                 f"{tuple(tensor.shape)}; give `batch` or re-export the model "
                                 "with a fixed `input_shape`", parameters=("batch", "input_shape"))
            profile.set_shape(tensor.name, shape, shape, shape)
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise InputError(f"{name}: TensorRT could not build an engine (see its log above)")
    return bytes(serialized)


def build_engine(model: str | Path, output: str | Path, *, fp16: bool = False, int8: bool = False,
                 workspace_mib: int = 4096, optimization_level: int = 3) -> Path:
    """Parse ``model``, build a serialized engine and write it atomically to ``output``."""
    output = Path(output)
    plan = build_serialized(Path(model), fp16=fp16, int8=int8, workspace_mib=workspace_mib,
                            optimization_level=optimization_level)
    staged = output.with_name(f".{output.name}.partial")
    staged.write_bytes(plan)
    os.replace(staged, output)
    log.info("wrote TensorRT engine %s", output)
    return output
