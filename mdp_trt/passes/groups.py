"""Channel-coupling propagation: which tensors carry the same channels as a layer's output.

Starting from every prunable layer's output, channels are followed forward through
channel-wise ops. Each op type has a handler in ``HANDLERS`` (keyed by ONNX ``op_type``) that
says how the op treats the channels it receives on one input:

- ``Pass``: the op is channel-wise; listed outputs (and other inputs, e.g. the second operand
  of a residual Add) carry the same channels, and listed constant inputs are sliced with them;
- ``Consume``: a layer reads the channels on its weight's input axis (the chain ends there);
- ``Reject``: the op mixes channels in a way we do not handle; the whole group is kept intact
  and the reason is recorded (never guessed).

Residual Adds force identical channel sets on both operands, so groups merge there (union-find).
A tensor's channels are described by a ``Layout``: the channel axis and the number of
consecutive elements per channel along it (1, or H*W after a Flatten: the columns of a Gemm
after Flatten are channel-major, channel c owning columns [c*S, (c+1)*S)).

The trace holds graph objects and is rebuilt from the graph by surgery and masking; the
serialisable summary is ``mdp_trt.analysis.ChannelGroup``. The graph must be topologically
sorted (as exporters write it) for group ids to follow the graph order.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from mdp_trt.graph.constants import constant_array, is_constant
from mdp_trt.graph.shapes import static_shape

__all__ = [
    "Layout",
    "ConstantSlice",
    "ReshapeFix",
    "GroupTrace",
    "Trace",
    "Pass",
    "Consume",
    "Reject",
    "HANDLERS",
    "register_handler",
    "is_layer",
    "layer_weight_axes",
    "trace_groups",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Layout:
    """Where a group's channels sit in a tensor: ``axis`` (non-negative) and elements/channel."""

    axis: int
    stride: int = 1


@dataclass(frozen=True)
class ConstantSlice:
    """Keep only the group's channels of constant input ``index`` of ``node`` along ``axis``.

    ``stride`` consecutive elements belong to each channel (1 except after a Flatten).
    ``consumer`` marks the input-axis slice of a consuming layer's weight (what masking zeroes).
    """

    node: ir.Node
    index: int
    axis: int
    stride: int = 1
    consumer: bool = False


@dataclass(frozen=True)
class ReshapeFix:
    """A Reshape whose constant target shape holds the channel count at ``axis`` (x stride)."""

    node: ir.Node
    axis: int
    stride: int


@dataclass(frozen=True)
class Pass:
    outputs: tuple[tuple[ir.Value, Layout], ...] = ()
    coupled_inputs: tuple[tuple[ir.Value, Layout], ...] = ()
    slices: tuple[ConstantSlice, ...] = ()
    reshapes: tuple[ReshapeFix, ...] = ()
    depthwise: tuple[ir.Node, ...] = ()


@dataclass(frozen=True)
class Consume:
    layer: ir.Node
    slice: ConstantSlice


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


def is_layer(node: ir.Node) -> bool:
    """A prunable layer: dense Conv, Gemm (transA=0) or 2-D MatMul with a constant weight."""
    if node.domain not in ("", "ai.onnx") or len(node.inputs) < 2:
        return False
    weight = node.inputs[1]
    if not is_constant(weight):
        return False
    shape = static_shape(weight)
    if shape is None:
        return False
    if node.op_type == "Conv":
        return _attr(node, "group", 1) == 1 and len(shape) >= 3
    if node.op_type == "Gemm":
        if _attr(node, "transA", 0) != 0 or len(shape) != 2:
            return False
        bias = node.inputs[2] if len(node.inputs) > 2 else None
        return bias is None or is_constant(bias)
    if node.op_type == "MatMul":
        return len(shape) == 2
    return False


def layer_weight_axes(node: ir.Node) -> tuple[int, int]:
    """(output-channel axis, input-channel axis) of a layer's weight."""
    if node.op_type == "Conv":
        return 0, 1
    if node.op_type == "Gemm":
        return (0, 1) if _attr(node, "transB", 0) else (1, 0)
    return 1, 0  # MatMul: W[K, N]


def _layer_output_layout(node: ir.Node) -> Layout:
    if node.op_type == "MatMul":
        rank = len(node.outputs[0].shape) if node.outputs[0].shape is not None else 2
        return Layout(rank - 1)
    return Layout(1)


def _producer_slices(node: ir.Node) -> tuple[ConstantSlice, ...]:
    out_axis, _ = layer_weight_axes(node)
    slices = [ConstantSlice(node, 1, out_axis)]
    if len(node.inputs) > 2 and node.inputs[2] is not None:
        bias = static_shape(node.inputs[2]) or ()
        if node.op_type == "Conv":
            slices.append(ConstantSlice(node, 2, 0))
        elif len(bias) >= 1 and bias[-1] > 1:
            # Gemm's C broadcasts to [M, N]: only a last axis of length N is per-channel.
            slices.append(ConstantSlice(node, 2, len(bias) - 1))
    return tuple(slices)


@register_handler("Conv")
def _conv(node: ir.Node, index: int, layout: Layout) -> Outcome:
    if index != 0:
        return Reject(f"used as a weight or bias by {_where(node)}")
    if layout != Layout(1):
        return Reject(f"{_where(node)} reads a reshaped tensor")
    if is_layer(node):
        return Consume(node, ConstantSlice(node, 1, 1, 1, consumer=True))
    weight = static_shape(node.inputs[1]) if len(node.inputs) > 1 else None
    channels = (static_shape(node.inputs[0]) or (0, 0))[1]
    group = _attr(node, "group", 1)
    if is_constant(node.inputs[1]) and weight and group == channels == weight[0] and weight[1] == 1:
        # Depthwise: channel c of the output reads only channel c of the input.
        slices = [ConstantSlice(node, 1, 0)]
        if len(node.inputs) > 2 and node.inputs[2] is not None:
            slices.append(ConstantSlice(node, 2, 0))
        return Pass(outputs=((node.outputs[0], Layout(1)),), slices=tuple(slices), depthwise=(node,))
    if not is_constant(node.inputs[1]):
        return Reject(f"{_where(node)} has a weight that is not a constant initializer")
    return Reject(f"grouped convolution {_where(node)} (group={group}) is not supported")


@register_handler("Gemm")
def _gemm(node: ir.Node, index: int, layout: Layout) -> Outcome:
    if index != 0:
        return Reject(f"used as the weight or bias of {_where(node)}")
    if not is_layer(node):
        return Reject(f"{_where(node)} has a non-constant weight/bias or transA=1")
    if layout.axis != 1:
        return Reject(f"{_where(node)} reads channels on axis {layout.axis}")
    _, in_axis = layer_weight_axes(node)
    return Consume(node, ConstantSlice(node, 1, in_axis, layout.stride, consumer=True))


@register_handler("MatMul")
def _matmul(node: ir.Node, index: int, layout: Layout) -> Outcome:
    rank = len(node.inputs[0].shape) if node.inputs[0].shape is not None else -1
    if index != 0 or not is_layer(node):
        return Reject(f"{_where(node)} does not multiply by a constant 2-D weight")
    if layout.axis != rank - 1:
        return Reject(f"{_where(node)} contracts an axis other than the channel axis")
    return Consume(node, ConstantSlice(node, 1, 0, layout.stride, consumer=True))


# --- channel-wise ops -----------------------------------------------------------------------

_UNARY = (
    "Relu", "LeakyRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh",
    "Softplus", "Softsign", "Gelu", "Mish", "Erf", "Identity", "Neg", "Abs", "Exp", "Log",
    "Sqrt", "Reciprocal", "Floor", "Ceil", "Round", "Cast", "ThresholdedRelu", "Sin", "Cos",
)


@register_handler(*_UNARY)
def _unary(node: ir.Node, index: int, layout: Layout) -> Outcome:
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
    if layout != Layout(1):
        return Reject(f"{_where(node)} normalises a reshaped tensor")
    params = [i for i in range(1, len(node.inputs)) if node.inputs[i] is not None]
    for i in params:
        if not is_constant(node.inputs[i]):
            return Reject(f"{_where(node)} has a parameter that is not constant")
    if any(out.uses() or out.is_graph_output() for out in node.outputs[1:]):
        return Reject(f"{_where(node)} is in training mode (running statistics are outputs)")
    return Pass(
        outputs=((node.outputs[0], layout),),
        slices=tuple(ConstantSlice(node, i, 0) for i in params),
    )


@register_handler("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "GlobalLpPool")
def _pool(node: ir.Node, index: int, layout: Layout) -> Outcome:
    if layout != Layout(1):
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
    if layout.stride != 1 or any(a <= layout.axis for a in axes):
        return Reject(f"{_where(node)} reduces over the channel or batch axis")
    return Pass(outputs=((node.outputs[0], layout),))


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
            slices.append(ConstantSlice(node, i, pos, layout.stride))
        else:
            # Same channels on both sides (a residual join, a gate): the groups merge.
            coupled.append((operand, Layout(pos, layout.stride)))
    return Pass(
        outputs=((out, Layout(out_axis, layout.stride)),),
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
    return Pass(outputs=((node.outputs[0], Layout(1, layout.stride * spatial)),))


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
    if shape_in == shape_out:
        fix = ReshapeFix(node, layout.axis, layout.stride)
        return Pass(outputs=((node.outputs[0], layout),), reshapes=(fix,))
    if layout.axis == 1 and len(shape_out) == 2 and shape_out[0] == shape_in[0]:
        # [N, C, *spatial] -> [N, C * prod(spatial)]: a flatten written as Reshape.
        spatial = int(np.prod(shape_in[2:], dtype=np.int64))
        new = Layout(1, layout.stride * spatial)
        return Pass(outputs=((node.outputs[0], new),), reshapes=(ReshapeFix(node, 1, new.stride),))
    return Reject(f"{_where(node)} from {shape_in} to {shape_out} mixes the channel axis")


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
    reshapes: list[ReshapeFix] = field(default_factory=list)
    depthwise: list[ir.Node] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    @property
    def prunable(self) -> bool:
        return not self.reasons


@dataclass
class Trace:
    """All groups of a graph plus the layer -> group maps."""

    groups: list[GroupTrace]
    layers: list[ir.Node]
    out_group: dict[ir.Node, int]
    in_group: dict[ir.Node, int | None]
    unsupported: list[str]  # "Op (node 'name')" of every rejecting consumer, for notes


class _UnionFind:
    def __init__(self) -> None:
        self.parent: list[int] = []

    def add(self) -> int:
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        a, b = self.find(a), self.find(b)
        if a != b:
            self.parent[max(a, b)] = min(a, b)


def trace_groups(graph: ir.Graph) -> Trace:
    """Propagate channels from every layer's output; see the module docstring for the rules."""
    nodes = list(graph)
    order = {node: i for i, node in enumerate(nodes)}
    layers = [n for n in nodes if is_layer(n)]
    uf = _UnionFind()
    seed_of: dict[ir.Node, int] = {layer: uf.add() for layer in layers}
    tensor_seed: dict[ir.Value, int] = {}
    layouts: dict[ir.Value, Layout] = {}
    explained: set[ir.Value] = set()
    # Facts collected per seed, merged per union-find root at the end.
    facts: dict[int, dict[str, list]] = {}
    unsupported: list[str] = []

    def fact(seed: int, kind: str, item) -> None:
        facts.setdefault(seed, {}).setdefault(kind, []).append(item)

    queue: deque[ir.Value] = deque()

    def assign(value: ir.Value, layout: Layout, seed: int) -> None:
        if value in tensor_seed:
            uf.union(tensor_seed[value], seed)
            if layouts[value] != layout:
                fact(seed, "reasons", f"tensor {value.name!r} is reached with two channel layouts")
            return
        tensor_seed[value] = seed
        layouts[value] = layout
        queue.append(value)

    for layer in layers:
        out = layer.outputs[0]
        explained.add(out)
        fact(seed_of[layer], "producers", layer)
        fact(seed_of[layer], "slices", _producer_slices(layer))
        assign(out, _layer_output_layout(layer), seed_of[layer])

    while queue:
        value = queue.popleft()
        seed = tensor_seed[value]
        layout = layouts[value]
        if value.is_graph_output():
            fact(seed, "reasons", f"reaches graph output {value.name!r}")
        for use in sorted(value.uses(), key=lambda u: (order.get(u.node, -1), u.idx)):
            node, idx = use.node, use.idx
            if node not in order:
                continue  # a node of a subgraph: handled by the rejecting parent op
            handler = HANDLERS.get(node.op_type) if node.domain in ("", "ai.onnx") else None
            outcome = (
                handler(node, idx, layout)
                if handler
                else Reject(f"consumed by unsupported op {_where(node)}")
            )
            if isinstance(outcome, Reject):
                fact(seed, "reasons", outcome.reason)
                unsupported.append(_where(node))
            elif isinstance(outcome, Consume):
                fact(seed, "consumers", outcome.layer)
                fact(seed, "slices", (outcome.slice,))
            else:
                fact(seed, "slices", outcome.slices)
                fact(seed, "reshapes", outcome.reshapes)
                fact(seed, "depthwise", outcome.depthwise)
                for other, other_layout in outcome.coupled_inputs:
                    assign(other, other_layout, seed)
                for out, out_layout in outcome.outputs:
                    explained.add(out)
                    assign(out, out_layout, seed)

    # Every tensor of a group must get its channels from a layer through handled ops; one fed
    # by a graph input or an unsupported op (e.g. the far side of an Add) pins the group.
    for value, seed in tensor_seed.items():
        if value in explained:
            continue
        producer = value.producer()
        if producer is None:
            what = "graph input" if value.is_graph_input() else "constant"
            fact(seed, "reasons", f"channels also come from {what} {value.name!r}")
        else:
            fact(seed, "reasons", f"channels also come from unsupported op {_where(producer)}")
            unsupported.append(_where(producer))

    roots = sorted({uf.find(s) for s in seed_of.values()}, key=lambda r: order[layers[r]])
    group_of_root = {root: gid for gid, root in enumerate(roots)}
    groups = [GroupTrace(id=gid, channels=0) for gid in range(len(roots))]
    for seed, kinds in facts.items():
        group = groups[group_of_root[uf.find(seed)]]
        for kind, items in kinds.items():
            target = getattr(group, kind)
            for item in items:
                if isinstance(item, tuple):
                    target.extend(item)
                else:
                    target.append(item)
    for value, seed in tensor_seed.items():
        groups[group_of_root[uf.find(seed)]].tensors[value] = layouts[value]

    out_group: dict[ir.Node, int] = {}
    for group in groups:
        group.producers.sort(key=order.__getitem__)
        group.consumers = sorted(set(group.consumers), key=order.__getitem__)
        group.reasons = list(dict.fromkeys(group.reasons))
        widths = set()
        for layer in group.producers:
            out_group[layer] = group.id
            out_axis, _ = layer_weight_axes(layer)
            widths.add(static_shape(layer.inputs[1])[out_axis])
        group.channels = max(widths)
        if len(widths) > 1:
            group.reasons.append(f"producers disagree on the channel count {sorted(widths)}")
    in_group: dict[ir.Node, int | None] = {}
    for layer in layers:
        seed = tensor_seed.get(layer.inputs[0])
        in_group[layer] = None if seed is None else group_of_root[uf.find(seed)]
    return Trace(groups, layers, out_group, in_group, list(dict.fromkeys(unsupported)))
