"""Channel-coupling propagation: which tensors carry the same channels as a layer's output.

Starting from every prunable layer's output, channels are followed forward through
channel-wise ops. Each op type has a handler in ``HANDLERS`` (keyed by ONNX ``op_type``) that
says how the op treats the channels it receives on one input:

- ``Pass``: the op is channel-wise; listed outputs (and other inputs, e.g. the second operand
  of a residual Add) carry the same channels, and listed constant inputs are sliced with them;
- ``Consume``: a layer reads the channels on its weight's input axis (the chain ends there);
- ``Reject``: the op mixes channels in a way we do not handle; the channels it receives are
  kept intact (``parts.Pin``: the part of the group that reaches it, or all of it) and the
  reason is recorded (never guessed).

Residual Adds force identical channel sets on both operands, so groups merge there (union-find).
Where a group sits in a tensor is a ``Layout``: the channel axis, the number of consecutive
elements per channel along it (1, or H*W after a Flatten: the columns of a Gemm after Flatten
are channel-major, channel c owning columns [c*S, (c+1)*S)), and the positions of the group's
channels on that axis (an arithmetic progression: consecutive, or every G-th after a channel
shuffle interleaves G blocks). A tensor may hold several groups side by side (the output of a Concat on
the channel axis holds each input's groups at their offsets) or a part of one (an output of
Split/Slice on the channel axis). Wherever two layers' channels reach the same elements of a
tensor they are the same channels, at a shift read off the two layouts: a bottleneck added
onto the second half of a split conv output (YOLO's C2f) produces channels 16-31 of the split
conv's group, a layer added onto a concatenation produces each concatenated group at its
offset. A group is then an interval of channels of which each producer covers a part
(``passes.parts``; every layout is rebased from its layer's channels onto the group's at the
end, ``Trace.out_first``), and plans keep the same count in each block that the producers'
bounds cut it into. Positions of a tensor that no group explains (a constant or a graph input
concatenated in) are never pruned. Constants that spell out channel counts or
positions (Reshape targets, Split sizes, Slice starts/ends, Resize sizes) are ``CountFix``es:
each dropped channel before (or inside) their window lowers them.

Layers are dense and grouped Convs, Gemm and MatMul. A grouped Conv (1 < group < channels)
reads input block b with conv group b only, so the groups on both of its sides are split into
``divisions`` equal blocks; surgery keeps equal counts per block (see
``plan_edits.physical_keep``). Depthwise Convs are channel-wise ops of their input's group.
A channel shuffle (Reshape [N, C, ...] -> [N, G, C/G, ...], Transpose of axes 1 and 2, Reshape
back) is a fixed permutation: each group's positions are mapped through it, and surgery turns
it into a Gather of the kept channels (``ChannelShuffle``). A depthwise Conv over a tensor that
holds several groups (ShuffleNetV2's strided units) passes each part through
(``GroupTrace.depthwise_parts``). Multi-head attention (``passes.attention``): a projection's
channels go from the Reshapes splitting them into heads straight to the Reshape merging the
heads, the heads' channels of q, k and v tied as one (a fused QKV projection's group is
periodic), and the group is cut in whole heads (``GroupTrace.bundle``); a constant added to
the scores with a value per head (Swin's relative position bias) loses the removed heads
(``ConstantSlice.per``). A LayerNorm over exactly the channel axis is followed (its scale and
bias sliced) and the group records it (``GroupTrace.norms``: cut only when asked, as
``--prune-embedding``). Known limits (kept whole, with the reason): other reshapes of the
channel axis (a box decoder's bins), an Add that ties channels of a
group to other channels of it in a way its layers cannot repeat (one channel in two places
makes the group periodic, as GhostNet's streams and the two halves of one split output added
are, only when every layer holds whole periods of it) or to every other channel of a shuffled
tensor (no shift does), a grouped conv over a part of a group or a pinned part in a
group with grouped convs (the whole group is kept), a tensor that an If/Loop/Scan takes or that a node of its subgraphs reads (control flow is not
traced; only the top-level graph's layers are layers).

The trace holds graph objects and is rebuilt from the graph by surgery and masking; the
serialisable summary is ``mdp_trt.analysis.ChannelGroup``. The graph must be topologically
sorted (as exporters write it) for group ids to follow the graph order.
"""

from __future__ import annotations

import logging
import math
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import onnx_ir as ir

from mdp_trt.graph.constants import constant_array, is_constant
from mdp_trt.graph.shapes import static_shape
from mdp_trt.passes.attention import AttentionCore, attention_core
from mdp_trt.passes.parts import (Layout, Pin, ShiftedUnionFind, covered, rebased, span_blocks,
                                  tie)
from mdp_trt.passes.parts import spans as parts_spans
from mdp_trt.passes.subgraphs import subgraph_owners, top_level_node

__all__ = [
    "Layout",
    "ChannelShuffle",
    "ConstantSlice",
    "CountFix",
    "GroupTrace",
    "InputParts",
    "Trace",
    "Pass",
    "Consume",
    "Reject",
    "HANDLERS",
    "register_handler",
    "LAYER_OPS",
    "is_layer",
    "layer_rejection",
    "layer_out_channels",
    "layer_weight_axes",
    "trace_groups",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConstantSlice:
    """Keep only the group's channels of constant input ``index`` of ``node``.

    ``layout`` says where the group's channels sit along the constant's axis (``layout.axis``).
    ``consumer`` marks the input-axis slice of a consuming layer's weight (what masking zeroes).
    """

    node: ir.Node
    index: int
    layout: Layout
    consumer: bool = False
    conv_groups: int = 1  # a grouped Conv's input axis: each conv group reads its own block
    # Channels per element of the constant's axis: an attention head's score bias is one
    # element for the head's ``per`` channels (the plan keeps or drops them together).
    per: int = 1

    @property
    def axis(self) -> int:
        return self.layout.axis

    def elements(self, channels: np.ndarray) -> np.ndarray:
        """The elements along ``axis`` that hold the group's ``channels``."""
        elements = self.layout.elements(channels)
        return np.unique(elements // self.per) if self.per > 1 else elements

    @property
    def stride(self) -> int:
        return self.layout.stride


@dataclass(frozen=True)
class CountFix:
    """Entry ``entry`` of the constant int input ``index`` of ``node`` counts elements of the
    group's axis in the window ``[low, high)`` (element units; ``high`` None: unbounded).

    Surgery lowers it by the number of dropped elements (``layout.elements``) in the window,
    counted once where places of tied seeds overlap; entries <= 0 (Reshape's 0 = copy and -1 =
    infer) adapt by themselves and are left alone.
    """

    node: ir.Node
    index: int
    entry: int
    layout: Layout
    low: int = 0
    high: int | None = None
    per: int = 1  # elements per unit the entry counts (an attention split's head count: copies x D)

    def dropped_elements(self, dropped: np.ndarray) -> np.ndarray:
        """The elements of the group's ``dropped`` channels inside the window."""
        elements = self.layout.elements(dropped)
        inside = elements >= self.low
        if self.high is not None:
            inside &= elements < self.high
        return elements[inside]


@dataclass(frozen=True)
class ChannelShuffle:
    """``reshape`` -> Transpose -> ``restore``: output channel q is input channel
    ``(q % groups) * (C / groups) + q // groups``."""

    reshape: ir.Node
    restore: ir.Node
    groups: int

    def source(self, channels: int) -> np.ndarray:
        """The input position each output position reads."""
        q = np.arange(channels, dtype=np.int64)
        return (q % self.groups) * (channels // self.groups) + q // self.groups


@dataclass(frozen=True)
class Pass:
    outputs: tuple[tuple[ir.Value, Layout], ...] = ()
    coupled_inputs: tuple[tuple[ir.Value, Layout], ...] = ()
    slices: tuple[ConstantSlice, ...] = ()
    counts: tuple[CountFix, ...] = ()
    depthwise: tuple[ir.Node, ...] = ()
    depthwise_parts: tuple[ir.Node, ...] = ()
    shuffles: tuple[ChannelShuffle, ...] = ()
    bundles: tuple[int, ...] = ()  # consecutive channels kept or removed together (a head's)
    cores: tuple[tuple[ir.Node, AttentionCore], ...] = ()  # (split, core) it enters
    norms: tuple[ir.Node, ...] = ()  # LayerNorms whose statistics run over these channels


@dataclass(frozen=True)
class Consume:
    layer: ir.Node
    slice: ConstantSlice
    divisions: int = 1  # the group must keep as many channels in each of this many blocks


@dataclass(frozen=True)
class Reject:
    reason: str


Outcome = Pass | Consume | Reject
Handler = Callable[[ir.Node, int, Layout], Outcome]

HANDLERS: dict[str, Handler] = {}


def register_handler(*op_types: str) -> Callable[[Handler], Handler]:
    """Register ``handler(node, input_index, layout) -> Pass | Consume | Reject`` for op types."""

    def wrap(handler: Handler) -> Handler:
        for op in op_types:
            HANDLERS[op] = handler
        return handler

    return wrap


def _where(node: ir.Node) -> str:
    return f"{node.op_type} (node {node.name!r})"


def _attr(node: ir.Node, name: str, default):
    attr = node.attributes.get(name)
    return default if attr is None else attr.value


# --- layers ---------------------------------------------------------------------------------


def _depthwise(node: ir.Node, weight: tuple[int, ...]) -> bool:
    channels = (static_shape(node.inputs[0]) or (0, 0))[1]
    return _attr(node, "group", 1) == channels == weight[0] and weight[1] == 1


LAYER_OPS = ("Conv", "Gemm", "MatMul")

_FLOAT_TYPES = (ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16, ir.DataType.DOUBLE)


def is_layer(node: ir.Node) -> bool:
    """A prunable layer: Conv (dense or grouped; depthwise convs are channel-wise ops instead),
    Gemm (transA=0) or 2-D MatMul with a constant float weight, on an input of static shape.

    Only nodes of the top-level graph are ever traced: a layer inside an If/Loop/Scan subgraph
    is never a prunable layer (``analyze`` lists it among the skipped ones)."""
    return node.op_type in LAYER_OPS and node.domain in ("", "ai.onnx") and layer_rejection(node) is None


def layer_rejection(node: ir.Node) -> str | None:
    """Why a Conv/Gemm/MatMul ``node`` is not a prunable layer, or None when it is one.

    Its latency signature is read from the weight's and the input's static shapes, so both are
    required; a weight computed at run time (DequantizeLinear of a quantised model) or fed as a
    graph input cannot be cut.
    """
    if len(node.inputs) < 2 or node.inputs[1] is None:
        return "it has no weight input"
    weight = node.inputs[1]
    if not is_constant(weight):
        return _not_constant(weight)
    shape = static_shape(weight)
    if shape is None:
        return f"its weight {weight.name!r} has no static shape"
    dtype = weight.dtype if weight.dtype is not None else getattr(weight.const_value, "dtype", None)
    if dtype is not None and dtype not in _FLOAT_TYPES:
        return f"its weight {weight.name!r} is {dtype.name}, not floating point"
    if static_shape(node.inputs[0]) is None:
        return f"its input {node.inputs[0].name!r} has no static shape"
    if node.op_type == "Conv":
        if len(shape) < 3:
            return f"its weight {weight.name!r} has {len(shape)} axes"
        if _attr(node, "group", 1) != 1 and _depthwise(node, shape):
            return "it is depthwise (a channel-wise op of its input's channels)"
        return None
    if len(shape) != 2:
        return f"its weight {weight.name!r} has {len(shape)} axes, not 2"
    if node.op_type == "Gemm":
        if _attr(node, "transA", 0) != 0:
            return "it has transA=1"
        bias = node.inputs[2] if len(node.inputs) > 2 else None
        if bias is not None and not is_constant(bias):
            return f"its bias {bias.name!r} is computed at run time"
    return None


def _not_constant(weight: ir.Value) -> str:
    producer = weight.producer()
    if producer is not None:
        return f"its weight {weight.name!r} is computed at run time by {_where(producer)}"
    if weight.is_graph_input():
        # IR >= 4: an initializer listed among the inputs is only a default (load_model turns
        # those of IR < 4 models, where every initializer had to be listed, into constants).
        return (f"its weight {weight.name!r} is a graph input, so it may change at run time; "
                "if it is a constant, remove it from the graph inputs")
    return f"its weight {weight.name!r} is not a constant of this graph"


def layer_weight_axes(node: ir.Node) -> tuple[int, int]:
    """(output-channel axis, input-channel axis) of a layer's weight."""
    if node.op_type == "Conv":
        return 0, 1
    if node.op_type == "Gemm":
        return (0, 1) if _attr(node, "transB", 0) else (1, 0)
    return 1, 0  # MatMul: W[K, N]


def layer_out_channels(node: ir.Node) -> int:
    out_axis, _ = layer_weight_axes(node)
    return static_shape(node.inputs[1])[out_axis]


def _layer_output_layout(node: ir.Node) -> Layout:
    width = layer_out_channels(node)
    if node.op_type == "MatMul":
        rank = len(node.outputs[0].shape) if node.outputs[0].shape is not None else 2
        return Layout(rank - 1, width=width)
    return Layout(1, width=width)


def _producer_slices(node: ir.Node) -> tuple[ConstantSlice, ...]:
    out_axis, _ = layer_weight_axes(node)
    width = layer_out_channels(node)
    slices = [ConstantSlice(node, 1, Layout(out_axis, width=width))]
    if len(node.inputs) > 2 and node.inputs[2] is not None:
        bias = static_shape(node.inputs[2]) or ()
        if node.op_type == "Conv":
            slices.append(ConstantSlice(node, 2, Layout(0, width=width)))
        elif len(bias) >= 1 and bias[-1] > 1:
            # Gemm's C broadcasts to [M, N]: only a last axis of length N is per-channel.
            slices.append(ConstantSlice(node, 2, Layout(len(bias) - 1, width=width)))
    return tuple(slices)


@register_handler("Conv")
def _conv(node: ir.Node, index: int, layout: Layout) -> Outcome:
    if index != 0:
        return Reject(f"used as a weight or bias by {_where(node)}")
    if not layout.plain:
        return Reject(f"{_where(node)} reads a reshaped tensor")
    channels = (static_shape(node.inputs[0]) or (0, 0))[1]
    group = _attr(node, "group", 1)
    if is_layer(node):
        if group == 1:
            return Consume(node, ConstantSlice(node, 1, layout, consumer=True))
        if not layout.whole(channels):
            return Reject(f"grouped {_where(node)} (group={group}) reads several groups or a part of one")
        # Conv group b reads only input block b: the weight is cut block by block, and every
        # block must keep as many channels as the others for ``group`` to stay valid.
        cut = ConstantSlice(node, 1, layout, consumer=True, conv_groups=group)
        return Consume(node, cut, divisions=group)
    weight = static_shape(node.inputs[1]) if len(node.inputs) > 1 else None
    if is_constant(node.inputs[1]) and weight and _depthwise(node, weight):
        # Depthwise: channel c of the output reads only channel c of the input.
        slices = [ConstantSlice(node, 1, replace(layout, axis=0))]
        if len(node.inputs) > 2 and node.inputs[2] is not None:
            slices.append(ConstantSlice(node, 2, replace(layout, axis=0)))
        out = ((node.outputs[0], layout),)
        if layout.whole(channels):
            return Pass(outputs=out, slices=tuple(slices), depthwise=(node,))
        # Over several groups (a shuffled tensor) each part passes through; its latency depends
        # on several groups at once, so it has no table (it stays in the calibrated constant).
        return Pass(outputs=out, slices=tuple(slices), depthwise_parts=(node,))
    return Reject(f"{_where(node)} is not a prunable layer: {layer_rejection(node)}")


@register_handler("Gemm")
def _gemm(node: ir.Node, index: int, layout: Layout) -> Outcome:
    if index != 0:
        return Reject(f"used as the weight or bias of {_where(node)}")
    if not is_layer(node):
        return Reject(f"{_where(node)} is not a prunable layer: {layer_rejection(node)}")
    if layout.axis != 1:
        return Reject(f"{_where(node)} reads channels on axis {layout.axis}")
    _, in_axis = layer_weight_axes(node)
    return Consume(node, ConstantSlice(node, 1, replace(layout, axis=in_axis), consumer=True))


@register_handler("MatMul")
def _matmul(node: ir.Node, index: int, layout: Layout) -> Outcome:
    rank = len(node.inputs[0].shape) if node.inputs[0].shape is not None else -1
    if index != 0:
        return Reject(f"used as the weight of {_where(node)}")
    if not is_layer(node):
        return Reject(f"{_where(node)} is not a prunable layer: {layer_rejection(node)}")
    if layout.axis != rank - 1:
        return Reject(f"{_where(node)} contracts an axis other than the channel axis")
    return Consume(node, ConstantSlice(node, 1, replace(layout, axis=0), consumer=True))


# --- channel-wise ops -----------------------------------------------------------------------

_UNARY = (
    "Relu", "LeakyRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh",
    "Softplus", "Softsign", "Gelu", "Mish", "Erf", "Identity", "Neg", "Abs", "Exp", "Log",
    "Sqrt", "Reciprocal", "Floor", "Ceil", "Round", "Cast", "ThresholdedRelu", "Sin", "Cos",
)


@register_handler(*_UNARY)
def _unary(node: ir.Node, index: int, layout: Layout) -> Outcome:
    return Pass(outputs=((node.outputs[0], layout),))


@register_handler("Softmax", "LogSoftmax")
def _softmax(node: ir.Node, index: int, layout: Layout) -> Outcome:
    shape = static_shape(node.inputs[0])
    if shape is None:
        return Reject(f"{_where(node)}: unknown shape")
    if _attr(node, "axis", -1) % len(shape) == layout.axis:
        return Reject(f"{_where(node)} normalises over the channel axis")
    return Pass(outputs=((node.outputs[0], layout),))


@register_handler("Clip")
def _clip(node: ir.Node, index: int, layout: Layout) -> Outcome:
    if index != 0:
        return Reject(f"used as a bound of {_where(node)}")
    for bound in node.inputs[1:]:
        if bound is not None and static_shape(bound) not in ((), (1,)):
            return Reject(f"{_where(node)} has non-scalar bounds")
    return Pass(outputs=((node.outputs[0], layout),))


@register_handler("Dropout")
def _dropout(node: ir.Node, index: int, layout: Layout) -> Outcome:
    if index != 0:
        return Reject(f"used as the ratio of {_where(node)}")
    if len(node.outputs) > 1 and node.outputs[1].uses():
        return Reject(f"the mask output of {_where(node)} is used")
    return Pass(outputs=((node.outputs[0], layout),))


@register_handler("BatchNormalization", "InstanceNormalization")
def _norm(node: ir.Node, index: int, layout: Layout) -> Outcome:
    if index != 0:
        return Reject(f"used as a parameter of {_where(node)}")
    if not layout.plain:
        return Reject(f"{_where(node)} normalises a reshaped tensor")
    params = [i for i in range(1, len(node.inputs)) if node.inputs[i] is not None]
    for i in params:
        if not is_constant(node.inputs[i]):
            return Reject(f"{_where(node)} has a parameter that is not constant")
    if any(out.uses() or out.is_graph_output() for out in node.outputs[1:]):
        return Reject(f"{_where(node)} is in training mode (running statistics are outputs)")
    return Pass(
        outputs=((node.outputs[0], layout),),
        slices=tuple(ConstantSlice(node, i, replace(layout, axis=0)) for i in params),
    )


@register_handler("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "GlobalLpPool")
def _pool(node: ir.Node, index: int, layout: Layout) -> Outcome:
    if not layout.plain:
        return Reject(f"{_where(node)} pools a reshaped tensor")
    if len(node.outputs) > 1 and node.outputs[1].uses():
        return Reject(f"the indices output of {_where(node)} is used")
    return Pass(outputs=((node.outputs[0], layout),))


def _reduce_axes(node: ir.Node, rank: int) -> list[int] | None:
    axes = None
    if len(node.inputs) > 1 and node.inputs[1] is not None:
        arr = constant_array(node.inputs[1])
        if arr is None:
            return None
        axes = [int(a) for a in arr.reshape(-1)]
    elif "axes" in node.attributes:
        axes = list(_attr(node, "axes", []))
    if not axes:
        return [] if _attr(node, "noop_with_empty_axes", 0) else list(range(rank))
    return sorted(a % rank for a in axes)


@register_handler(
    "ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceL1", "ReduceL2", "ReduceProd",
    "ReduceLogSumExp", "ReduceSumSquare",
)
def _reduce(node: ir.Node, index: int, layout: Layout) -> Outcome:
    shape = static_shape(node.inputs[0])
    if index != 0 or shape is None:
        return Reject(f"{_where(node)}: unknown input shape")
    axes = _reduce_axes(node, len(shape))
    if axes is None:
        return Reject(f"{_where(node)} has non-constant axes")
    if layout.stride != 1 or layout.axis in axes:
        return Reject(f"{_where(node)} reduces over the channel axis")
    # Without keepdims the reduced axes before the channel axis go (a ViT's mean over tokens).
    dropped = 0 if _attr(node, "keepdims", 1) else sum(a < layout.axis for a in axes)
    return Pass(outputs=((node.outputs[0], replace(layout, axis=layout.axis - dropped)),))


@register_handler("Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Mean", "PRelu", "Pow", "Where")
def _elementwise(node: ir.Node, index: int, layout: Layout) -> Outcome:
    out = node.outputs[0]
    out_shape = static_shape(out)
    if out_shape is None:
        return Reject(f"{_where(node)}: unknown output shape")
    own = static_shape(node.inputs[index])
    if own is None:
        return Reject(f"{_where(node)}: unknown shape of input {index}")
    if node.op_type == "Where" and index == 0:
        return Reject(f"used as the condition of {_where(node)}")
    if node.op_type == "Pow" and index == 1:
        return Reject(f"used as the exponent of {_where(node)}")
    out_axis = layout.axis + (len(out_shape) - len(own))
    channels = out_shape[out_axis]
    if own[layout.axis] != channels:
        # This operand is broadcast along the channel axis: its channels would mix.
        return Reject(f"{_where(node)} broadcasts this input across channels")
    coupled, slices = [], []
    for i, operand in enumerate(node.inputs):
        if i == index or operand is None:
            continue
        shape = static_shape(operand)
        if shape is None:
            return Reject(f"{_where(node)}: unknown shape of input {i}")
        pos = out_axis - (len(out_shape) - len(shape))
        if pos < 0 or shape[pos] == 1 and channels != 1:
            continue  # broadcast along channels: a per-tensor or spatial operand
        if is_constant(operand):
            # A per-channel constant (bias, scale): cut along with the channels.
            slices.append(ConstantSlice(node, i, replace(layout, axis=pos)))
        else:
            # Same channels on both sides (a residual join, a gate): the groups merge.
            coupled.append((operand, replace(layout, axis=pos)))
    return Pass(
        outputs=((out, replace(layout, axis=out_axis)),),
        coupled_inputs=tuple(coupled),
        slices=tuple(slices),
    )


@register_handler("Flatten")
def _flatten(node: ir.Node, index: int, layout: Layout) -> Outcome:
    shape = static_shape(node.inputs[0])
    axis = _attr(node, "axis", 1)
    if shape is None or axis % len(shape) != 1 or layout.axis != 1:
        return Reject(f"{_where(node)} (axis={axis}) merges the channel axis with the batch")
    spatial = int(np.prod(shape[2:], dtype=np.int64))
    return Pass(outputs=((node.outputs[0], replace(layout, stride=layout.stride * spatial)),))


@register_handler("Reshape")
def _reshape(node: ir.Node, index: int, layout: Layout) -> Outcome:
    shape_in = static_shape(node.inputs[0])
    shape_out = static_shape(node.outputs[0])
    if index != 0:
        return Reject(f"used as the target shape of {_where(node)}")
    if shape_in is None or shape_out is None:
        return Reject(f"{_where(node)}: unknown shapes")
    if constant_array(node.inputs[1]) is None:
        return Reject(f"{_where(node)} has a target shape that is not constant")
    axis = layout.axis
    if shape_in == shape_out or (
            layout.stride == 1 and len(shape_out) > axis and shape_out[:axis + 1] == shape_in[:axis + 1]):
        # The channel axis and every axis before it stay; only later (spatial) axes are merged
        # or split, as a detection head's (N, C, H, W) -> (N, C, H*W).
        fix = CountFix(node, 1, axis, layout)
        return Pass(outputs=((node.outputs[0], layout),), counts=(fix,))
    if layout.stride == 1 and (moved := _unit_axes_moved(shape_in, shape_out, axis)) is not None:
        # Only axes of length 1 come or go (nn.MultiheadAttention's (N, C) -> (N, 1, C)).
        new = replace(layout, axis=moved)
        return Pass(outputs=((node.outputs[0], new),), counts=(CountFix(node, 1, moved, new),))
    if layout.stride == 1 and axis == len(shape_in) - 1 and (core := attention_core(node)):
        return _through_heads(core, node, layout)
    if layout.axis == 1 and len(shape_out) == 2 and shape_out[0] == shape_in[0]:
        # [N, C, *spatial] -> [N, C * prod(spatial)]: a flatten written as Reshape.
        spatial = int(np.prod(shape_in[2:], dtype=np.int64))
        new = replace(layout, stride=layout.stride * spatial)
        return Pass(outputs=((node.outputs[0], new),), counts=(CountFix(node, 1, 1, new),))
    if (layout.axis == 1 and len(shape_out) == len(shape_in) + 1
            and shape_out[1] * shape_out[2] == shape_in[1] and shape_out[3:] == shape_in[2:]):
        # [N, g, C/g, ...]: a channel shuffle if a Transpose and a Reshape back follow.
        shuffle = _channel_shuffle(node, shape_in, shape_out)
        if shuffle is not None and layout.stride == 1:
            return _shuffled(shuffle, layout, shape_out[2])
        return Reject(f"{_where(node)} splits the channel axis into {shape_out[1]} x "
                      f"{shape_out[2]} (attention heads, a box decoder's bins: not a channel shuffle)")
    return Reject(f"{_where(node)} from {shape_in} to {shape_out} {_reshaped(shape_in, shape_out, layout.axis)}")


def _unit_axes_moved(shape_in: tuple[int, ...], shape_out: tuple[int, ...], axis: int) -> int | None:
    """The channel axis's place after a Reshape that only inserts or drops axes of length 1,
    or None."""
    if shape_in[axis] == 1 or [n for n in shape_in if n != 1] != [n for n in shape_out if n != 1]:
        return None
    rank = sum(1 for n in shape_in[:axis] if n != 1)
    return [i for i, n in enumerate(shape_out) if n != 1][rank]


def _through_heads(core: AttentionCore, split: ir.Node, layout: Layout) -> Pass:
    """Channels of a projection split into heads reach the Reshape merging the heads at the
    same positions (each copy of a fused QKV at the same ones: q, k and v of a head are one
    bundle); the split's head count and the merge's channel count follow the plan."""
    opened, size = core.split(split), core.heads * core.head_dim
    merged = core.merge.outputs[0]
    axis = len(static_shape(merged)) - 1
    outputs = tuple((merged, replace(part, axis=axis)) for s in range(opened.copies)
                    if (part := _overlap(layout, s * size, (s + 1) * size)) is not None)
    counts = (CountFix(split, 1, opened.entry, layout, per=opened.copies * opened.unit),
              *(CountFix(core.merge, 1, axis, out) for _, out in outputs),
              *(CountFix(node, 1, entry, out, per=core.head_dim)
                for node, entry in core.inner for _, out in outputs))
    biases = tuple(ConstantSlice(node, index, replace(out, axis=head_axis), per=core.head_dim)
                   for node, index, head_axis in core.biases for _, out in outputs)
    return Pass(outputs=outputs, counts=counts, slices=biases, bundles=(core.head_dim,),
                cores=((split, core),))


def _reshaped(shape_in: tuple[int, ...], shape_out: tuple[int, ...], axis: int) -> str:
    """What a Reshape that channels cannot follow does to their axis, in a user's words."""
    if shape_in[axis] == 1:
        return "removes the channel axis (of size 1)"
    before, channels = int(np.prod(shape_in[:axis], dtype=np.int64)), shape_in[axis]
    start, prefix = 0, 1
    while prefix < before and start < len(shape_out):
        prefix *= shape_out[start]
        start += 1
    factors, product = [], 1
    for size in shape_out[start:] if prefix == before else ():
        if product >= channels:
            break
        factors.append(size)
        product *= size
    factors = [f for f in factors if f != 1]
    if product == channels and len(factors) >= 2:
        return "splits the channel axis into " + " x ".join(map(str, factors))
    return "mixes the channel axis with others"


def _only_use(value: ir.Value, op_type: str) -> ir.Node | None:
    uses = list(value.uses())
    if len(uses) != 1 or value.is_graph_output() or uses[0].idx != 0:
        return None
    node = uses[0].node
    return node if node.op_type == op_type and node.domain in ("", "ai.onnx") else None


def _channel_shuffle(reshape: ir.Node, shape_in: tuple[int, ...], shape_out: tuple[int, ...]) -> ChannelShuffle | None:
    """``reshape`` [N, C, *S] -> [N, G, C/G, *S] followed (and only followed) by a Transpose of
    axes 1 and 2 and a Reshape back to [N, C, *S]: ShuffleNet's channel shuffle."""
    transpose = _only_use(reshape.outputs[0], "Transpose")
    if transpose is None or list(_attr(transpose, "perm", [])) != [0, 2, 1, *range(3, len(shape_out))]:
        return None
    restore = _only_use(transpose.outputs[0], "Reshape")
    if restore is None or static_shape(restore.outputs[0]) != shape_in or restore.outputs[0].is_graph_output():
        return None
    return ChannelShuffle(reshape, restore, shape_out[1])


def _shuffled(shuffle: ChannelShuffle, layout: Layout, block: int) -> Pass:
    """The group's positions after the shuffle: position k of block g moves to k * G + g."""
    g_count, outputs = shuffle.groups, []
    for g in range(g_count):
        part = _overlap(layout, g * block, (g + 1) * block)
        if part is not None:
            moved = replace(part, offset=part.offset * g_count + g, step=part.step * g_count)
            outputs.append((shuffle.restore.outputs[0], moved))
    return Pass(outputs=tuple(outputs), shuffles=(shuffle,))


@register_handler("Squeeze", "Unsqueeze")
def _squeeze(node: ir.Node, index: int, layout: Layout) -> Outcome:
    shape_in = static_shape(node.inputs[0])
    shape_out = static_shape(node.outputs[0])
    if index != 0 or shape_in is None or shape_out is None:
        return Reject(f"{_where(node)}: unknown shapes or axes")
    if len(node.inputs) > 1 and node.inputs[1] is not None:
        axes_arr = constant_array(node.inputs[1])
        if axes_arr is None:
            return Reject(f"{_where(node)} has non-constant axes")
        axes = [int(a) for a in axes_arr.reshape(-1)]
    else:
        axes = list(_attr(node, "axes", []))
    rank = len(shape_out) if node.op_type == "Unsqueeze" else len(shape_in)
    if not axes or any(a % rank <= layout.axis for a in axes):
        return Reject(f"{_where(node)} moves the channel axis")
    return Pass(outputs=((node.outputs[0], layout),))


# --- channel placement: Concat, Split, Slice, Transpose -------------------------------------


def _overlap(layout: Layout, start: int, stop: int) -> Layout | None:
    """The part of ``layout`` inside channel positions [start, stop), re-based at ``start``."""
    width = layout.width if layout.width is not None else 0
    low = max(0, -(-(start - layout.offset) // layout.step))  # first channel at >= start
    high = min(width, -(-(stop - layout.offset) // layout.step))
    if low >= high:
        return None
    return replace(layout, offset=layout.offset + low * layout.step - start,
                   first=layout.first + low, width=high - low)


@register_handler("Concat")
def _concat(node: ir.Node, index: int, layout: Layout) -> Outcome:
    out = node.outputs[0]
    shapes = [static_shape(v) for v in node.inputs]
    if static_shape(out) is None or any(s is None for s in shapes):
        return Reject(f"{_where(node)}: unknown shapes")
    axis = _attr(node, "axis", 0) % len(shapes[index])
    if axis == layout.axis:
        if layout.stride != 1:
            return Reject(f"{_where(node)} concatenates flattened channels")
        # The inputs sit side by side: this input's channels move by the widths before it.
        before = sum(s[axis] for s in shapes[:index])
        return Pass(outputs=((out, replace(layout, offset=layout.offset + before)),))
    # Concatenated along another axis: every input carries the same channels (a constant's,
    # a ViT's class token, are cut with them).
    coupled, slices = [], []
    for i, operand in enumerate(node.inputs):
        if i == index:
            continue
        if is_constant(operand):
            slices.append(ConstantSlice(node, i, layout))
        else:
            coupled.append((operand, layout))
    return Pass(outputs=((out, layout),), coupled_inputs=tuple(coupled), slices=tuple(slices))


def _split_sizes(node: ir.Node, dim: int) -> list[int] | None:
    if len(node.inputs) > 1 and node.inputs[1] is not None:
        sizes = constant_array(node.inputs[1])
        return None if sizes is None else [int(x) for x in sizes.reshape(-1)]
    if "split" in node.attributes:
        return [int(x) for x in _attr(node, "split", [])]
    count = _attr(node, "num_outputs", len(node.outputs))
    step = -(-dim // count)
    return [min(step, dim - k * step) for k in range(count)]


@register_handler("Split")
def _split(node: ir.Node, index: int, layout: Layout) -> Outcome:
    shape = static_shape(node.inputs[0])
    if index != 0 or shape is None:
        return Reject(f"{_where(node)}: unknown shape, or used as the split sizes")
    axis = _attr(node, "axis", 0) % len(shape)
    if axis != layout.axis:
        return Pass(outputs=tuple((out, layout) for out in node.outputs))
    if layout.stride != 1:
        return Reject(f"{_where(node)} splits flattened channels")
    sizes = _split_sizes(node, shape[axis])
    if sizes is None:
        return Reject(f"{_where(node)} has split sizes that are not constant")
    if not (len(node.inputs) > 1 and node.inputs[1] is not None):
        # Sizes in an attribute or implied by num_outputs cannot follow unequal pruning.
        return Reject(f"{_where(node)} splits into equal parts or by attribute; sizes must be an input")
    outputs, counts, start = [], [], 0
    for k, (out, size) in enumerate(zip(node.outputs, sizes)):
        part = _overlap(layout, start, start + size)
        if part is not None:
            outputs.append((out, part))
            counts.append(CountFix(node, 1, k, layout, start, start + size))
        start += size
    return Pass(outputs=tuple(outputs), counts=tuple(counts))


@register_handler("Slice")
def _slice(node: ir.Node, index: int, layout: Layout) -> Outcome:
    shape = static_shape(node.inputs[0])
    if index != 0 or shape is None:
        return Reject(f"{_where(node)}: unknown shape, or used as a slice parameter")
    params = [constant_array(v) if v is not None else None for v in node.inputs[1:5]]
    starts, ends = params[0], params[1]
    if starts is None or ends is None or any(v is not None and p is None for v, p in zip(node.inputs[3:5], params[2:])):
        return Reject(f"{_where(node)} has slice parameters that are not constant")
    axes = params[2].reshape(-1).tolist() if len(params) > 2 and params[2] is not None else list(range(len(starts)))
    axes = [int(a) % len(shape) for a in axes]
    if layout.axis not in axes:
        return Pass(outputs=((node.outputs[0], layout),))
    j = axes.index(layout.axis)
    steps = params[3].reshape(-1) if len(params) > 3 and params[3] is not None else None
    dim = shape[layout.axis]
    start, end = int(starts.reshape(-1)[j]), int(ends.reshape(-1)[j])
    if layout.stride != 1 or (steps is not None and int(steps[j]) != 1) or start < 0 or end < 0:
        return Reject(f"{_where(node)} slices the channel axis with a step or from the end")
    end = min(end, dim)
    part = _overlap(layout, start, end)
    # Dropped channels before the window shift it; those inside shrink it.
    counts = [CountFix(node, 1, j, layout, 0, start)]
    if int(ends.reshape(-1)[j]) < dim:
        counts.append(CountFix(node, 2, j, layout, 0, end))
    outputs = () if part is None else ((node.outputs[0], part),)
    return Pass(outputs=outputs, counts=tuple(counts))


@register_handler("Transpose")
def _transpose(node: ir.Node, index: int, layout: Layout) -> Outcome:
    shape = static_shape(node.inputs[0])
    if shape is None:
        return Reject(f"{_where(node)}: unknown input shape")
    perm = list(_attr(node, "perm", list(range(len(shape)))[::-1]))
    if layout.stride != 1:
        return Reject(f"{_where(node)} permutes flattened channels")
    return Pass(outputs=((node.outputs[0], replace(layout, axis=perm.index(layout.axis))),))


@register_handler("Gather")
def _gather(node: ir.Node, index: int, layout: Layout) -> Outcome:
    shape, indices = static_shape(node.inputs[0]), static_shape(node.inputs[1])
    if index != 0 or shape is None or indices is None:
        return Reject(f"{_where(node)}: unknown shapes, or used as the indices")
    axis = _attr(node, "axis", 0) % len(shape)
    if axis == layout.axis:
        return Reject(f"{_where(node)} gathers along the channel axis")
    if not is_constant(node.inputs[1]):
        return Reject(f"{_where(node)} has indices that are not constant")
    # The gathered axis is replaced by the indices' axes.
    out_axis = layout.axis if layout.axis < axis else layout.axis + len(indices) - 1
    return Pass(outputs=((node.outputs[0], replace(layout, axis=out_axis)),))


@register_handler("GatherND")
def _gather_nd(node: ir.Node, index: int, layout: Layout) -> Outcome:
    shape, indices = static_shape(node.inputs[0]), static_shape(node.inputs[1])
    if index != 0 or shape is None or indices is None:
        return Reject(f"{_where(node)}: unknown shapes, or used as the indices")
    batch = _attr(node, "batch_dims", 0)
    indexed = indices[-1]
    if layout.axis < batch + indexed:
        return Reject(f"{_where(node)} gathers along the channel axis")
    if not is_constant(node.inputs[1]):
        return Reject(f"{_where(node)} has indices that are not constant")
    # Output: data.shape[:b] + indices.shape[b:-1] + data.shape[b + k:] (e.g. the exporter's
    # adaptive pooling gathers spatial positions of a channel-last tensor).
    out_axis = len(indices) - 1 + layout.axis - batch - indexed
    return Pass(outputs=((node.outputs[0], replace(layout, axis=out_axis)),))


@register_handler("Pad")
def _pad(node: ir.Node, index: int, layout: Layout) -> Outcome:
    shape = static_shape(node.inputs[0])
    if index != 0 or shape is None:
        return Reject(f"{_where(node)}: unknown shape, or used as a pad parameter")
    pads = constant_array(node.inputs[1]) if len(node.inputs) > 1 else None
    axes = constant_array(node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3] is not None else None
    if pads is None or (len(node.inputs) > 3 and node.inputs[3] is not None and axes is None):
        return Reject(f"{_where(node)} has pads that are not constant")
    axes_list = [int(a) % len(shape) for a in axes.reshape(-1)] if axes is not None else list(range(len(shape)))
    pads = pads.reshape(-1)
    n = len(axes_list)
    if layout.axis in axes_list:
        j = axes_list.index(layout.axis)
        if pads[j] != 0 or pads[j + n] != 0:
            return Reject(f"{_where(node)} pads the channel axis")
    return Pass(outputs=((node.outputs[0], layout),))


@register_handler("Resize", "Upsample")
def _resize(node: ir.Node, index: int, layout: Layout) -> Outcome:
    shape_in, shape_out = static_shape(node.inputs[0]), static_shape(node.outputs[0])
    if index != 0 or shape_in is None or shape_out is None:
        return Reject(f"{_where(node)}: unknown shapes, or used as a resize parameter")
    if shape_in[layout.axis] != shape_out[layout.axis] or "axes" in node.attributes:
        return Reject(f"{_where(node)} resizes the channel axis")
    # Spatial interpolation is per channel; sizes, if given, spell the channel count out.
    counts = ()
    if len(node.inputs) > 3 and node.inputs[3] is not None:
        if constant_array(node.inputs[3]) is None:
            return Reject(f"{_where(node)} has sizes that are not constant")
        counts = (CountFix(node, 3, layout.axis, layout),)
    return Pass(outputs=((node.outputs[0], layout),), counts=counts)


@register_handler("LayerNormalization")
def _layer_norm(node: ir.Node, index: int, layout: Layout) -> Outcome:
    shape = static_shape(node.inputs[0])
    if index != 0 or shape is None:
        return Reject(f"{_where(node)}: unknown shape, or used as a parameter")
    if any(out.uses() or out.is_graph_output() for out in node.outputs[1:]):
        return Reject(f"{_where(node)} has its statistics outputs used")
    first = _attr(node, "axis", -1) % len(shape)
    if layout.axis < first:
        return Pass(outputs=((node.outputs[0], layout),))
    if first != len(shape) - 1 or layout.axis != first or not layout.whole(shape[first]):
        # Mean and variance over more than the group's channels: removing one changes others.
        return Reject(f"{_where(node)} normalises over the channel axis and others")
    # Mean and variance over exactly the group's channels: a cut changes them, so the group is
    # cut only when asked to (``analyze(prune_normalised=True)``), and verified against a reference
    # that normalises over the kept channels (``masking``).
    params = [i for i in (1, 2) if i < len(node.inputs) and node.inputs[i] is not None]
    if not all(is_constant(node.inputs[i]) for i in params):
        return Reject(f"{_where(node)} has a scale or bias that is not constant")
    return Pass(outputs=((node.outputs[0], layout),), norms=(node,),
                slices=tuple(ConstantSlice(node, i, replace(layout, axis=0)) for i in params))


# --- the trace ------------------------------------------------------------------------------


@dataclass
class GroupTrace:
    """Everything one channel group touches, in graph order (holds graph objects)."""

    id: int
    channels: int
    producers: list[ir.Node] = field(default_factory=list)
    consumers: list[ir.Node] = field(default_factory=list)
    tensors: dict[ir.Value, Layout] = field(default_factory=dict)
    slices: list[ConstantSlice] = field(default_factory=list)
    counts: list[CountFix] = field(default_factory=list)
    depthwise: list[ir.Node] = field(default_factory=list)  # reading the whole group only
    depthwise_parts: list[ir.Node] = field(default_factory=list)  # reading it beside others
    shuffles: list[ChannelShuffle] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)  # why the whole group is kept
    periodic: list[str] = field(default_factory=list)  # where channels were tied to their own
    period: int = 0  # > 0: its producers hold its channels that many at a time, repeated
    # Parts kept whole while the rest of the group can be cut (their layouts in its channels).
    pins: list[Pin] = field(default_factory=list)
    divisions: int = 1  # equal blocks that keep equal channel counts (grouped convs)
    bundle: int = 1  # consecutive channels kept or removed together (attention heads)
    cores: list[tuple[ir.Node, AttentionCore]] = field(default_factory=list)  # (split, core)
    # LayerNorms normalising over exactly its channels: a cut changes their statistics
    norms: list[ir.Node] = field(default_factory=list)
    # Equal blocks that its producers' and pinned parts' spans cut it into
    # (``parts.span_blocks``): plans keep the same count in each block that is not pinned, so
    # that a producer of a part follows the group's option.
    blocks: int = 1

    @property
    def prunable(self) -> bool:
        return not self.reasons


@dataclass(frozen=True)
class InputParts:
    """What a layer reads on its input-channel axis: groups side by side, plus fixed channels.

    ``groups`` are the ids of the whole groups in channel order; ``fixed`` the channels no
    group explains (kept whole). ``complete`` is False when a part of a group is read (after a
    Split/Slice): the input width then does not follow the groups' options.
    """

    groups: tuple[int, ...]
    fixed: int
    complete: bool
    stride: int = 1  # weight input columns per channel (H*W after a Flatten)


@dataclass
class Trace:
    """All groups of a graph plus the layer -> group maps."""

    groups: list[GroupTrace]
    layers: list[ir.Node]
    out_group: dict[ir.Node, int]
    in_group: dict[ir.Node, int | None]
    unsupported: list[str]  # where and why tracing stopped (each rejecting op), for notes
    in_parts: dict[ir.Node, InputParts] = field(default_factory=dict)
    # Every tensor's groups with their layouts (a tensor may hold several, or one in parts).
    places: dict[ir.Value, list[tuple[int, Layout]]] = field(default_factory=dict)
    # The group channel of each layer's first output channel (a layer may produce a part).
    out_first: dict[ir.Node, int] = field(default_factory=dict)


# A group's place in a tensor: the tensor and where its seed's channels sit there.
_Key = tuple[ir.Value, Layout]


def trace_groups(graph: ir.Graph) -> Trace:
    """Propagate channels from every layer's output; see the module docstring for the rules."""
    nodes = list(graph)
    order = {node: i for i, node in enumerate(nodes)}
    layers = [n for n in nodes if is_layer(n)]
    owners = subgraph_owners(graph)
    uf = ShiftedUnionFind()
    seed_of: dict[ir.Node, int] = {layer: uf.add() for layer in layers}
    key_seed: dict[_Key, int] = {}
    slots: dict[tuple[ir.Value, int], list[_Key]] = {}  # the keys on each tensor axis
    explained: set[_Key] = set()
    # Facts collected per seed, in its own channels; merged per group at the end.
    facts: dict[int, dict[str, list]] = {}
    unsupported: list[str] = []
    rejected: dict[ir.Node, str] = {}  # first reason each rejecting node gave

    def fact(seed: int, kind: str, item) -> None:
        facts.setdefault(seed, {}).setdefault(kind, []).append(item)

    queue: deque[_Key] = deque()

    def assign(value: ir.Value, layout: Layout, seed: int) -> _Key:
        key = (value, layout)
        for other in slots.setdefault((value, layout.axis), []):
            # Elements that two seeds reach carry the same channels: the seeds are tied there.
            shared, shift = tie(other[1], layout)
            if not shared:
                continue
            if shift is None:
                fact(seed, "pins", Pin(f"tensor {value.name!r} is reached with two channel layouts"))
            elif not uf.union(seed, key_seed[other], shift):
                # The group repeats (a Ghost module); kept whole unless its layers hold whole
                # periods (_merged_groups).
                fact(seed, "periodic", f"tensor {value.name!r} lines up channels of the group with "
                                       "other channels of it in a way its layers' widths do not "
                                       "repeat (an Add of parts of one layer's output)")
        if key not in key_seed:
            key_seed[key] = seed
            slots[(value, layout.axis)].append(key)
            queue.append(key)
        return key

    for layer in layers:
        if layer.op_type == "Conv":
            fact(seed_of[layer], "divisions", _attr(layer, "group", 1))
        fact(seed_of[layer], "producers", layer)
        fact(seed_of[layer], "slices", _producer_slices(layer))
        explained.add(assign(layer.outputs[0], _layer_output_layout(layer), seed_of[layer]))

    while queue:
        key = queue.popleft()
        value, layout = key
        seed = key_seed[key]
        if value.is_graph_output():
            fact(seed, "pins", Pin(f"reaches graph output {value.name!r}", layout))
        for use in sorted(value.uses(), key=lambda u: (order[top_level_node(u.node, owners)], u.idx)):
            node, idx = use.node, use.idx
            if node not in order:
                # Control flow is not traced, and the subgraph's nodes expect every channel.
                owner, attribute = owners[node.graph]
                fact(seed, "pins", Pin(f"read inside the {attribute!r} of {_where(owner)}", layout))
                unsupported.append(f"control flow: read inside the {attribute!r} of {_where(owner)}")
                continue
            handler = HANDLERS.get(node.op_type) if node.domain in ("", "ai.onnx") else None
            outcome = (
                handler(node, idx, layout)
                if handler
                else Reject(f"consumed by unsupported op {_where(node)}")
            )
            if isinstance(outcome, Reject):
                fact(seed, "pins", Pin(outcome.reason, layout))
                unsupported.append(outcome.reason)
                rejected.setdefault(node, outcome.reason)
            elif isinstance(outcome, Consume):
                fact(seed, "consumers", outcome.layer)
                fact(seed, "slices", (outcome.slice,))
                fact(seed, "divisions", outcome.divisions)
            else:
                fact(seed, "slices", outcome.slices)
                fact(seed, "counts", outcome.counts)
                fact(seed, "depthwise", outcome.depthwise)
                fact(seed, "depthwise_parts", outcome.depthwise_parts)
                fact(seed, "shuffles", outcome.shuffles)
                for bundle in outcome.bundles:
                    fact(seed, "bundle", bundle)
                fact(seed, "cores", outcome.cores)
                fact(seed, "norms", outcome.norms)
                for other, other_layout in outcome.coupled_inputs:
                    assign(other, other_layout, seed)
                for out, out_layout in outcome.outputs:
                    explained.add(assign(out, out_layout, seed))

    def explained_elsewhere(key: _Key) -> bool:
        """Whether places of the same group that layers explain cover ``key`` (an Add's operand
        that another seed's channels reach through a Split, say)."""
        root = uf.find(key_seed[key])[0]
        others = [k[1] for k in slots[(key[0], key[1].axis)]
                  if k in explained and uf.find(key_seed[k])[0] == root]
        return covered(key[1], others)

    # Every place of a group must get its channels from a layer through handled ops; one fed
    # by a graph input or an unsupported op (e.g. the far side of an Add) pins the group.
    for key, seed in key_seed.items():
        if key in explained or explained_elsewhere(key):
            continue
        value, layout = key
        producer = value.producer()
        if producer is None:
            what = "graph input" if value.is_graph_input() else "constant"
            fact(seed, "pins", Pin(f"channels also come from {what} {value.name!r}", layout))
        elif (origin := _stopped_at(producer, rejected)) is not None and origin in rejected:
            # E.g. ConvNeXt's stem: LayerNorm stops its group, so the Transpose after it
            # carries channels no group explains; the LayerNorm is the cause worth naming.
            fact(seed, "pins", Pin(f"channels also come from {_where(producer)}, after {rejected[origin]}", layout))
        else:
            why = _untraced(origin or producer)
            fact(seed, "pins", Pin(f"channels also come from {why}", layout))
            unsupported.append(why)

    groups, gid_of, first = _merged_groups(layers, order, uf, facts)
    places: dict[ir.Value, list[tuple[int, Layout]]] = {}
    for (value, layout), seed in key_seed.items():
        place = (gid_of[seed], rebased(layout, first[seed], groups[gid_of[seed]].period))
        held = places.setdefault(value, [])
        if place not in held:  # two seeds' identical places once rebased
            held.append(place)
        groups[place[0]].tensors.setdefault(value, place[1])
    for group in groups:
        _check_group(group, places, {layer: first[seed_of[layer]] for layer in group.producers})

    out_group = {layer: gid_of[seed_of[layer]] for layer in layers}
    in_group: dict[ir.Node, int | None] = {}
    in_parts: dict[ir.Node, InputParts] = {}
    for layer in layers:
        parts = _input_parts(layer, places.get(layer.inputs[0], []), groups)
        in_parts[layer] = parts
        single = parts.complete and parts.fixed == 0 and len(parts.groups) == 1
        in_group[layer] = parts.groups[0] if single else None
    out_first = {layer: first[seed_of[layer]] for layer in layers}
    return Trace(groups, layers, out_group, in_group, list(dict.fromkeys(unsupported)), in_parts, places,
                 out_first)


def _rebased_fact(item, shift: int, period: int):
    """A fact of a seed with its layout (if it has one) in its group's channels."""
    layout = getattr(item, "layout", None)
    return replace(item, layout=rebased(layout, shift, period)) if isinstance(layout, Layout) else item


def _merged_groups(layers: list[ir.Node], order: dict[ir.Node, int], uf: ShiftedUnionFind,
                   facts: dict[int, dict[str, list]]) -> tuple[list[GroupTrace], dict[int, int], dict[int, int]]:
    """The groups (ids in graph order of their first layer), each seed's group id and the group
    channel of its channel 0. Seed i is ``layers[i]``."""
    found = [uf.find(seed) for seed in range(len(layers))]
    roots = sorted({root for root, _ in found}, key=lambda r: order[layers[r]])
    group_of_root = {root: gid for gid, root in enumerate(roots)}
    lowest: dict[int, int] = {}
    for root, shift in found:
        lowest[root] = min(lowest.get(root, shift), shift)
    # A periodic set is kept as one only when each layer holds whole periods of it.
    period = {root: uf.periods[root] for root in roots}
    for seed, (root, _) in enumerate(found):
        if period[root] and layer_out_channels(layers[seed]) % period[root]:
            period[root] = 0
    gid_of = {seed: group_of_root[root] for seed, (root, _) in enumerate(found)}
    first = {seed: (shift - lowest[root]) % period[root] if period[root] else shift - lowest[root]
             for seed, (root, shift) in enumerate(found)}
    groups = [GroupTrace(id=gid, channels=0, period=period[root]) for gid, root in enumerate(roots)]
    for seed, kinds in facts.items():
        group = groups[gid_of[seed]]
        for kind, items in kinds.items():
            if kind in ("divisions", "bundle"):
                setattr(group, kind, math.lcm(getattr(group, kind), *items))
                continue
            target = getattr(group, kind)
            for item in items:
                target.extend(_rebased_fact(one, first[seed], group.period)
                              for one in (item if isinstance(item, tuple) else (item,)))
    for group in groups:
        group.producers.sort(key=order.__getitem__)
        group.consumers = sorted(set(group.consumers), key=order.__getitem__)
        # Tied seeds reach the same constants with the same layouts once rebased.
        group.slices = list(dict.fromkeys(group.slices))
        group.counts = list(dict.fromkeys(group.counts))
        group.norms = list(dict.fromkeys(group.norms))
    return groups, gid_of, first


def _check_group(group: GroupTrace, places: dict[ir.Value, list[tuple[int, Layout]]],
                 first: dict[ir.Node, int]) -> None:
    """Width, blocks and the reasons that only the whole group shows (``first``: each
    producer's first channel in the group); its pins become reasons where they cannot stay
    parts."""
    spans = [(first[layer], first[layer] + layer_out_channels(layer)) for layer in group.producers]
    group.channels = group.period or max(stop for _, stop in spans)
    whole = [] if group.period else list(group.periodic)
    for layer, (start, stop) in zip(group.producers, spans):
        if _attr(layer, "group", 1) > 1 and (start, stop) != (0, group.channels):
            whole.append(f"grouped {_where(layer)} produces a part of the group")
    for cut in group.slices:
        if cut.conv_groups > 1 and not cut.layout.whole(group.channels):
            whole.append(f"grouped {_where(cut.node)} reads a part of the group")
    if group.channels % group.divisions:
        whole.append(f"grouped convolutions split its {group.channels} channels into {group.divisions} blocks")
    if group.channels % group.bundle:
        whole.append(f"its {group.channels} channels are not whole attention heads of {group.bundle}")
    pinned = {c for pin in group.pins for c in pin.channels(group.channels).tolist()}
    # Grouped convs would pad every block back to a pinned one: their groups are kept whole.
    if whole or group.divisions > 1 or len(pinned) == group.channels:
        group.reasons = list(dict.fromkeys([pin.reason for pin in group.pins] + whole))
        group.pins = []
    group.blocks = span_blocks(group.channels, spans + [run for pin in group.pins
                                                        for run in parts_spans(pin.channels(group.channels))])
    # A depthwise conv over a part of the group (the seed it saw was whole) has no table.
    # (One that reads several copies of a periodic group has none either.)
    full = [n for n in group.depthwise if (static_shape(n.inputs[0]) or (0, 0))[1] == group.channels and any(
        gid == group.id and lay.whole(group.channels) for gid, lay in places.get(n.inputs[0], []))]
    group.depthwise_parts = list(dict.fromkeys(group.depthwise_parts + [n for n in group.depthwise if n not in full]))
    group.depthwise = full
    group.shuffles = list(dict.fromkeys(group.shuffles))


def _untraced(node: ir.Node) -> str:
    """Why channels coming out of ``node`` are not followed back to a layer."""
    if node.domain not in ("", "ai.onnx") or node.op_type not in HANDLERS:
        return f"unsupported op {_where(node)}"
    if node.op_type in LAYER_OPS and (reason := layer_rejection(node)) is not None:
        return f"{_where(node)}, not a prunable layer: {reason}"
    return f"{_where(node)}, whose input channels no layer produces"


def _stopped_at(node: ir.Node, rejected: dict[ir.Node, str]) -> ir.Node | None:
    """Up the first data inputs from ``node``: the first node that rejected channels or has no
    handler (where tracing stopped), or None when the walk reaches an input or a constant."""
    seen: set[ir.Node] = set()
    current: ir.Node | None = node
    while current is not None and current not in seen:
        seen.add(current)
        if current in rejected or current.domain not in ("", "ai.onnx") or current.op_type not in HANDLERS:
            return current
        data = [v for v in current.inputs if v is not None and not is_constant(v)]
        current = data[0].producer() if data else None
    return None


def _input_parts(layer: ir.Node, places: list[tuple[int, Layout]], groups: list[GroupTrace]) -> InputParts:
    _, in_axis = layer_weight_axes(layer)
    width = static_shape(layer.inputs[1])[in_axis]
    if layer.op_type == "Conv":
        width *= _attr(layer, "group", 1)
    stride = places[0][1].stride if places else 1
    # (group, channel) at each position; places of tied seeds may overlap, consistently.
    at = {lay.offset + i * lay.step: (gid, int(channel)) for gid, lay in places for i, channel in enumerate(lay.held())}
    copies = Counter(at.values())
    ids = tuple(gid for _, (gid, channel) in sorted(at.items()) if channel == 0)
    # Complete: every group is held in whole copies (each channel as often as its channel 0).
    complete = all(lay.stride == stride for _, lay in places) and all(
        copies[gid, c] == ids.count(gid) > 0 for gid in {g for g, _ in places} for c in range(groups[gid].channels))
    return InputParts(ids, width // stride - len(at), complete, stride)
