"""The latency signature of a layer, read from the graph (attributes and inferred shapes)."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from mdp_trt.graph.shapes import static_shape
from mdp_trt.signature import LayerSignature
from mdp_trt.passes.groups import layer_weight_axes

__all__ = ["layer_signature", "fused_activation", "ACTIVATIONS"]

# Ops a runtime fuses into the preceding conv/gemm epilogue.
ACTIVATIONS = frozenset(
    {"Relu", "LeakyRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu",
     "Gelu", "Mish", "Softplus", "PRelu"}
)


def _sole_consumer(value: ir.Value) -> ir.Node | None:
    uses = list(value.uses())
    if len(uses) != 1 or value.is_graph_output():
        return None
    return uses[0].node


def fused_activation(node: ir.Node) -> str | None:
    """The activation that directly follows ``node`` as its only consumer (through one
    unfolded BatchNormalization, which runtimes fold into the conv), or None."""
    nxt = _sole_consumer(node.outputs[0])
    if nxt is not None and nxt.op_type == "BatchNormalization":
        nxt = _sole_consumer(nxt.outputs[0])
    if nxt is not None and nxt.op_type in ACTIVATIONS:
        return nxt.op_type
    return None


def _ints(node: ir.Node, name: str, default: tuple[int, ...]) -> tuple[int, ...]:
    attr = node.attributes.get(name)
    return tuple(int(x) for x in attr.value) if attr is not None else default


def _dtype_name(value: ir.Value) -> str:
    dtype = value.dtype if value.dtype is not None else value.const_value.dtype
    return np.dtype(dtype.numpy()).name


def layer_signature(node: ir.Node) -> LayerSignature:
    """Signature of a prunable layer (``groups.is_layer(node)`` must hold).

    Channel counts are the full widths; ``input_hw`` is the input's spatial size (empty for
    Gemm/MatMul); ``batch`` the leading dimension (rows of the 2-D input for MatMul).
    """
    weight = static_shape(node.inputs[1])
    x = static_shape(node.inputs[0]) or ()
    bias = len(node.inputs) > 2 and node.inputs[2] is not None
    out_axis, in_axis = layer_weight_axes(node)
    common = dict(
        op_type=node.op_type,
        out_channels=int(weight[out_axis]),
        dtype=_dtype_name(node.inputs[1]),
        bias=bias,
        activation=fused_activation(node),
    )
    if node.op_type == "Conv":
        spatial = len(weight) - 2
        group = int(node.attributes["group"].value) if "group" in node.attributes else 1
        return LayerSignature(
            **common,
            in_channels=int(weight[1]) * group,
            kernel=_ints(node, "kernel_shape", tuple(weight[2:])),
            strides=_ints(node, "strides", (1,) * spatial),
            pads=_ints(node, "pads", (0,) * (2 * spatial)),
            dilations=_ints(node, "dilations", (1,) * spatial),
            conv_group=group,
            input_hw=tuple(x[2:]),
            batch=int(x[0]) if x else 1,
        )
    batch = int(np.prod(x[:-1])) if len(x) >= 2 else 1
    return LayerSignature(**common, in_channels=int(weight[in_axis]), batch=batch)
