"""Build a TensorRT engine from an ONNX file with the TensorRT Python API.

TensorRT is an optional, GPU-only dependency (NVIDIA's package index); it is imported here only,
and its absence is a clear ``BackendUnavailable`` error, never a fake result.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import onnx

from mdp_trt.errors import BackendUnavailable, InputError

__all__ = ["build_engine", "tensorrt_unavailable_reason"]

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


def _has_explicit_quantization(path: Path) -> bool:
    graph = onnx.load(str(path), load_external_data=False).graph
    return any(node.op_type == "QuantizeLinear" for node in graph.node)


def build_engine(model: str | Path, output: str | Path, *, fp16: bool = False, int8: bool = False,
                 workspace_mib: int = 4096, optimization_level: int = 3) -> Path:
    """Parse ``model``, build a serialized engine and write it atomically to ``output``."""
    model, output = Path(model), Path(output)
    if not model.is_file():
        raise InputError(f"{model}: no such file")
    if int8 and not _has_explicit_quantization(model):
        raise InputError(f"{model}: --int8 needs a model with QuantizeLinear/DequantizeLinear "
                         "nodes (explicit quantization); calibration is not supported yet")
    reason = tensorrt_unavailable_reason()
    if reason:
        raise BackendUnavailable(f"cannot build a TensorRT engine: {reason}")
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(model)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise InputError(f"{model}: TensorRT's ONNX parser rejected the model: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    config.builder_optimization_level = optimization_level
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if int8:
        config.set_flag(trt.BuilderFlag.INT8)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise InputError(f"{model}: TensorRT could not build an engine (see its log above)")
    staged = output.with_name(f".{output.name}.partial")
    staged.write_bytes(bytes(serialized))
    os.replace(staged, output)
    log.info("wrote TensorRT engine %s", output)
    return output
