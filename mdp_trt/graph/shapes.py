"""Shape inference and the ONNX checker on onnx-ir models, without serialising large weights.

Both run the onnx C++ implementations on a proto whose large initializers are temporarily
turned into typed graph inputs, so models with external data are handled without reading it.
"""

from __future__ import annotations

import logging

import onnx
import onnx_ir as ir
from onnx_ir.passes.common import _c_api_utils  # the IR's own large-model bridge to onnx C APIs

from mdp_trt.errors import UnsupportedGraph

__all__ = ["infer_shapes", "check_model", "static_shape"]

log = logging.getLogger(__name__)

_SMALL_TENSOR_BYTES = 4096


def static_shape(value: ir.Value | None) -> tuple[int, ...] | None:
    """The value's shape as ints, or None when unknown or symbolic."""
    if value is None or value.shape is None:
        return None
    dims = tuple(value.shape)
    if not all(isinstance(d, int) for d in dims):
        return None
    return dims  # type: ignore[return-value]


def _with_small_tensors_in_memory(model: ir.Model) -> ir.Model:
    """A copy whose small external tensors are in memory.

    ``call_onnx_api`` keeps tensors under 1 KB in the proto; left external, they would point
    to a data file that an in-memory proto cannot resolve. Large ones become typed inputs.
    """
    copy = model.clone()
    for value in copy.graph.initializers.values():
        tensor = value.const_value
        if isinstance(tensor, ir.ExternalTensor) and tensor.nbytes <= _SMALL_TENSOR_BYTES:
            value.const_value = ir.tensor(tensor.numpy().copy(), name=value.name)
    return copy


def infer_shapes(model: ir.Model, *, reset: bool = False) -> ir.Model:
    """Run onnx shape inference on ``model`` in place (strict: a failure raises).

    With ``reset`` the shapes of all node outputs except graph outputs are cleared first, so
    that stale shapes left by a graph edit cannot conflict with the new ones.
    Inference is strict (any node failing raises UnsupportedGraph) when every op is in the
    default domain; ops of other domains are unknown to onnx and left without shapes.
    """
    strict = all(node.domain in ("", "ai.onnx") for node in model.graph)
    if reset:
        outputs = set(model.graph.outputs)
        for node in model.graph:
            for out in node.outputs:
                if out not in outputs:
                    out.shape = None

    def run(proto: onnx.ModelProto) -> onnx.ModelProto:
        return onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=strict, data_prop=True)

    try:
        inferred = _c_api_utils.call_onnx_api(run, _with_small_tensors_in_memory(model))
    except Exception as err:  # onnx raises several unrelated classes here
        raise UnsupportedGraph(f"onnx shape inference failed: {err}") from err
    inferred_model = ir.serde.deserialize_model(inferred)
    values = ir.convenience.create_value_mapping(inferred_model.graph)
    for name, value in ir.convenience.create_value_mapping(model.graph).items():
        other = values.get(name)
        if other is None:
            continue
        if other.shape is not None:
            value.shape = other.shape
        if other.dtype is not None and value.dtype is None:
            value.dtype = other.dtype
    return model


def check_model(model: ir.Model) -> None:
    """Run ``onnx.checker.check_model`` (raises onnx's ValidationError on an invalid graph)."""

    def run(proto: onnx.ModelProto) -> None:
        onnx.checker.check_model(proto)

    _c_api_utils.call_onnx_api(run, _with_small_tensors_in_memory(model))
