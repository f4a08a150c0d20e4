"""Multi-head attention as the exporters write it: which Reshape splits a projection's channels
into heads, and which one merges the heads back.

A projection's output channel c = h * D + d (``H`` heads of ``D`` channels; a fused QKV
projection holds three such copies side by side) is split by a Reshape into a head axis and a
head-width axis, the heads are scored against each other (q @ k^T over d, Softmax over the keys,
@ v over the tokens) with the head axis as a batch axis throughout, and a Reshape merges
(heads, width) back into channels h * D + d in front of the output projection. Removing head h
therefore removes channels [h * D, (h + 1) * D) of every copy of the projections (q, k and v
alike) and the same rows of the output projection, and nothing else changes: the head is a
bundle of channels, kept or removed whole, that the trace follows from the split Reshapes
straight to the merging one (``passes.groups``).

``attention_core`` recognises the core from one of its split Reshapes by following the axes
through it: every tensor between the splits and the merge gets a label per axis (``h`` heads,
``d`` head width, ``k`` keys, ``s`` the copies of a fused projection, ``c`` channels not yet
split into heads, ``1`` an axis of length 1, the rest kept from the projection's own axes), and
only ops whose effect on those labels is known are accepted (Transpose, Reshapes that split
channels into heads, merge them or only move axes of length 1, taking q/k/v apart along the copy
axis, scalar Mul/Div, MatMul with the heads among the batch axes, Softmax over the keys, a
constant added to the scores: a mask, or a bias per head, ``AttentionCore.biases``, which loses
the removed heads). torchvision's nn.MultiheadAttention splits twice: its fused projection into
three copies of (channels), then each copy into heads, while merging the batch axis (of length
1) away. Anything else (a bias computed at run time, a head-mixing op, a head width that differs
between q/k and v) is not a core, and the split keeps its channels whole as before.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from mdp_trt.graph.constants import constant_array
from mdp_trt.graph.shapes import static_shape

__all__ = ["AttentionCore", "Split", "attention_core"]

_HEADS, _WIDTH, _COPY, _KEYS, _UNIT, _CHANNELS = "h", "d", "s", "k", "1", "c"


@dataclass(frozen=True)
class Split:
    """A Reshape that opens the core: its ``copies`` of the projection's channels (3 for a fused
    QKV, else 1) and the ``entry`` of its target that counts ``unit`` channels per copy (heads of
    ``head_dim``, or the channels themselves when it splits copies only)."""

    node: ir.Node
    copies: int
    entry: int
    unit: int


@dataclass(frozen=True)
class AttentionCore:
    """The Reshapes around one attention core: its ``splits``, the ``merge`` and the Reshapes
    inside that spell the head count out (``inner``: node, entry of its target); ``heads`` x
    ``head_dim`` channels per copy."""

    splits: tuple[Split, ...]
    merge: ir.Node
    heads: int
    head_dim: int
    inner: tuple[tuple[ir.Node, int], ...] = ()
    tokens: int = 0  # the length of the sequences attended over
    nodes: tuple[ir.Node, ...] = ()  # every node from the splits to the merge, both included
    # Constants added to the scores with a value per head (a relative position bias): (Add
    # node, its input index, the constant's head axis); they lose the heads a plan removes.
    biases: tuple[tuple[ir.Node, int, int], ...] = ()

    def split(self, node: ir.Node) -> Split:
        return next(s for s in self.splits if s.node is node)


def attention_core(split: ir.Node) -> AttentionCore | None:
    """The attention core that the Reshape ``split`` opens, or None when it is not one. A
    Reshape of (..., 3 * C) into (..., 3, A, B) splits heads; one into (..., A, B) is tried as
    A heads of B channels, then as A copies of B channels split into heads later."""
    for heads_first in (True, False):
        walk = _Walk()
        if walk.start(split, heads_first) and walk.run():
            return walk.core()
    return None


_Labels = tuple[str, ...]


class _Walk:
    """The labels of every tensor reached from the splits, until the merge."""

    def __init__(self) -> None:
        self.known: dict[ir.Value, _Labels] = {}
        self.splits: dict[ir.Node, Split] = {}
        self.inner: dict[ir.Node, int] = {}
        self.biases: list[tuple[ir.Node, int, int]] = []
        self.dims: tuple[int, int] | None = None  # (heads, head width) once known
        self.merge: ir.Node | None = None
        # (tensor, labels, whether it waited at a MatMul whose other side was not known yet)
        self.queue: list[tuple[ir.Value, _Labels, bool]] = []

    def start(self, node: ir.Node, heads_first: bool) -> bool:
        opened = _opened(node, heads_first)
        if opened is None or node in self.splits:
            return opened is not None
        split, labels, dims = opened
        if dims is not None and not self.agree(dims):
            return False
        self.splits[node] = split
        self.queue.append((node.outputs[0], labels, False))
        return True

    def agree(self, dims: tuple[int, int]) -> bool:
        self.dims = self.dims or dims
        return self.dims == dims

    def core(self) -> AttentionCore:
        inside = dict.fromkeys([*(value.producer() for value in self.known), self.merge])
        return AttentionCore(tuple(self.splits.values()), self.merge, *self.dims,
                             tuple(self.inner.items()), self.tokens(), tuple(inside),
                             tuple(dict.fromkeys(self.biases)))

    def queries(self) -> list[str]:
        """The label of the queries' axis of each tensor of scores (over the keys)."""
        return [labels[-2] for labels in self.known.values() if labels[-1] == _KEYS]

    def tokens(self) -> int:
        """The queries' axis of the scores, read off the projection's own axes."""
        split = next(iter(self.splits))
        return static_shape(split.inputs[0])[int(self.queries()[0].removeprefix("a"))]

    def run(self) -> bool:
        waiting: list[tuple[ir.Value, _Labels, bool]] = []
        while self.queue or waiting:
            if not self.queue:
                # The splits the waiting tensors pointed to have been followed since: once more.
                self.queue, waiting = [(v, lab, True) for v, lab, _ in waiting], []
            value, labels, retry = self.queue.pop()
            if value in self.known and not retry:
                if self.known[value] != labels:
                    return False
                continue
            self.known[value] = labels
            if value.is_graph_output():
                return False
            for use in value.uses():
                other = use.node.inputs[1 - use.idx] if use.node.op_type == "MatMul" else None
                if other is not None and other not in self.known:
                    # The other side comes later from this split, or from a split of its own.
                    if retry or not all(self.start(s, True) for s in _back_to_splits(other) or ()):
                        return False
                    waiting.append((value, labels, True))
                    continue
                if not self.follow(use.node, use.idx, labels):
                    return False
        queries = self.queries()
        return (self.merge is not None and self.dims is not None and bool(queries)
                and all(re.fullmatch(r"a\d+", label) for label in queries))

    def follow(self, node: ir.Node, index: int, labels: _Labels) -> bool:
        if node.op_type == "Add" and node.domain in ("", "ai.onnx") and labels[-1] == _KEYS:
            bias = _score_bias(node, index, labels)
            if bias is None:
                return False
            if bias[1] is not None:
                self.biases.append((node, *bias))
            self.queue.append((node.outputs[0], labels, False))
            return True
        step = _step(node, index, labels, self.known, self.dims)
        if step is None:
            return False
        if step == "merge":
            if self.merge not in (None, node):
                return False
            self.merge = node
            return True
        for value, out in step:
            if node.op_type == "Reshape" and _HEADS in out:
                if _HEADS not in labels:  # channels split into heads here
                    shape = static_shape(value)
                    if not self.agree((shape[out.index(_HEADS)], shape[out.index(_WIDTH)])):
                        return False
                self.inner[node] = out.index(_HEADS)
            self.queue.append((value, out, False))
        return True


def _opened(node: ir.Node, heads_first: bool) -> tuple[Split, _Labels, tuple[int, int] | None] | None:
    """How the Reshape ``node`` opens a core: input (..., C) with C last, output (..., [copies,]
    heads, width), or (..., copies, C / copies) when not ``heads_first``; the leading axes kept."""
    if node.op_type != "Reshape" or constant_array(node.inputs[1]) is None:
        return None
    shape_in, shape_out = static_shape(node.inputs[0]), static_shape(node.outputs[0])
    if shape_in is None or shape_out is None or len(shape_in) < 2:
        return None
    lead = len(shape_in) - 1
    if tuple(shape_out[:lead]) != tuple(shape_in[:lead]) or len(shape_out) not in (lead + 2, lead + 3):
        return None
    if int(np.prod(shape_out[lead:])) != shape_in[-1] or min(shape_out[-2:]) < 2:
        return None
    labels = tuple(f"a{i}" for i in range(lead))
    last = len(shape_out) - 1
    if len(shape_out) == lead + 3:
        split = Split(node, shape_out[lead], last - 1, shape_out[-1])
        return split, labels + (_COPY, _HEADS, _WIDTH), (shape_out[-2], shape_out[-1])
    if heads_first:
        return Split(node, 1, last - 1, shape_out[-1]), labels + (_HEADS, _WIDTH), (shape_out[-2], shape_out[-1])
    return Split(node, shape_out[-2], last, 1), labels + (_COPY, _CHANNELS), None


def _scalar(value: ir.Value) -> bool:
    array = constant_array(value)
    return array is not None and array.size == 1


def _step(node: ir.Node, index: int, labels: _Labels, known, dims):
    """Where ``node`` sends a tensor of ``labels`` (read as its input ``index``): a list of
    (output, labels), "merge", or None when the node is not part of a core."""
    op = node.op_type if node.domain in ("", "ai.onnx") else None
    out = node.outputs[0] if node.outputs else None
    if op == "Transpose":
        perm = node.attributes.get("perm")
        order = list(perm.value) if perm is not None else list(reversed(range(len(labels))))
        return [(out, tuple(labels[p] for p in order))]
    if op in ("Mul", "Div") and _scalar(node.inputs[1 - index]):
        return [(out, labels)]
    if op == "Softmax":
        axis = node.attributes.get("axis")
        axis = (axis.value if axis is not None else -1) % len(labels)
        return [(out, labels)] if labels[axis] == _KEYS else None
    if op in ("Squeeze", "Unsqueeze") and index == 0:
        return _squeezed(node, labels)
    if op in ("Split", "Gather", "Slice"):
        return _take_copy(node, index, labels)
    if op == "MatMul":
        return _matmul(node, index, labels, known)
    if op == "Reshape" and index == 0:
        if dims is not None and _merges(node, labels, dims):
            return "merge"
        moved = _reshaped(node, labels)
        return None if moved is None else [(out, moved)]
    return None


def _score_bias(node: ir.Node, index: int, labels: _Labels) -> tuple[int, int | None] | None:
    """A constant added to the scores (an attention mask, a relative position bias): its input
    index and its head axis, None when it is the same for every head; None when the other
    operand is not a constant that broadcasts onto the scores, or varies along heads merged
    with another axis."""
    other = node.inputs[1 - index]
    shape, scores = static_shape(other), static_shape(node.inputs[index])
    if constant_array(other) is None or shape is None or scores is None or len(shape) > len(labels):
        return None
    if static_shape(node.outputs[0]) != scores:
        return None
    head_axis = None
    for j, n in enumerate(shape):
        position = len(labels) - len(shape) + j
        if n == 1:
            continue
        if n != scores[position]:
            return None
        if labels[position] == _HEADS:
            head_axis = j
        elif any(part == _HEADS for part, _ in _parts(labels[position], n)):
            return None
    return 1 - index, head_axis


def _squeezed(node: ir.Node, labels: _Labels):
    """Axes of length 1 removed (Squeeze) or inserted (Unsqueeze, labelled ``1``)."""
    axes = constant_array(node.inputs[1]) if len(node.inputs) > 1 else None
    shape, out = static_shape(node.inputs[0]), static_shape(node.outputs[0])
    if axes is None or shape is None or out is None:
        return None
    if node.op_type == "Squeeze":
        gone = {int(a) % len(labels) for a in axes.reshape(-1)}
        if any(shape[a] != 1 for a in gone):
            return None
        return [(node.outputs[0], tuple(lab for i, lab in enumerate(labels) if i not in gone))]
    added = {int(a) % len(out) for a in axes.reshape(-1)}
    rest = iter(labels)
    return [(node.outputs[0], tuple(_UNIT if i in added else next(rest) for i in range(len(out))))]


def _reshaped(node: ir.Node, labels: _Labels) -> _Labels | None:
    """The labels after a Reshape that moves axes of length 1, merges neighbouring axes into one
    (labelled ``a*b``, with their sizes) or splits such a merged axis back, and may split the
    channels ``c`` into (heads, width): the dynamo exporter's k^T ((B, H, N, D) -> (B * H, N, D),
    Transpose, -> (B, H, D, N)), nn.MultiheadAttention's (N, 1, C) -> (N, H, D). None otherwise."""
    shape_in, shape_out = static_shape(node.inputs[0]), static_shape(node.outputs[0])
    if shape_in is None or shape_out is None or constant_array(node.inputs[1]) is None:
        return None
    # (label, size) of every axis of length > 1, merged axes taken apart
    parts = [part for label, n in zip(labels, shape_in) if n != 1 for part in _parts(label, n)]
    sizes = [(i, n) for i, n in enumerate(shape_out) if n != 1]
    out = [_UNIT] * len(shape_out)
    k = 0
    for i, n in sizes:
        if k >= len(parts):
            return None
        label, size = parts[k]
        if label == _CHANNELS and size != n:
            if k + 1 > len(parts) or len(sizes) < 2:
                return None
            # c -> (heads, width): this axis and the next output axis
            parts[k:k + 1] = [(_HEADS, n), (_WIDTH, size // n)] if size % n == 0 else [(None, 0)]
            label, size = parts[k]
        taken, product = [], 1
        while k < len(parts) and product < n:
            taken.append(parts[k])
            product *= parts[k][1]
            k += 1
        if product != n or any(label is None for label, _ in taken):
            return None
        out[i] = taken[0][0] if len(taken) == 1 else "*".join(f"{lab}={size}" for lab, size in taken)
    return tuple(out) if k == len(parts) else None


def _parts(label: str, size: int) -> list[tuple[str, int]]:
    """A merged label's (label, size) parts; a plain label is its own."""
    if "*" not in label:
        return [(label, size)]
    return [(lab, int(n)) for lab, n in (part.rsplit("=", 1) for part in label.split("*"))]


def _batch(labels: _Labels, value: ir.Value) -> list[str]:
    """The batch labels of a MatMul operand that are not broadcast (length > 1)."""
    shape = static_shape(value) or (0,) * len(labels)
    return [label for label, n in zip(labels[:-2], shape[:-2]) if n != 1]


def _take_copy(node: ir.Node, index: int, labels: _Labels):
    """q, k and v taken apart along the copy axis: Split into ones, Gather of one index, Slice
    of one."""
    if index != 0 or _COPY not in labels:
        return None
    axis = labels.index(_COPY)
    shape = static_shape(node.inputs[0])
    if node.op_type == "Split":
        attr = node.attributes.get("axis")
        if (attr.value if attr is not None else 0) % len(labels) != axis:
            return None
        if any((static_shape(v) or (0,) * len(labels))[axis] != 1 for v in node.outputs):
            return None
        return [(v, labels) for v in node.outputs]
    if node.op_type == "Gather":
        attr = node.attributes.get("axis")
        taken = constant_array(node.inputs[1])
        if (attr.value if attr is not None else 0) % len(labels) != axis or taken is None or taken.size != 1:
            return None
        return [(node.outputs[0], labels[:axis] + labels[axis + 1:])]
    out = static_shape(node.outputs[0])  # Slice: one copy, every other axis whole
    if out is None or out[axis] != 1 or any(a != b for i, (a, b) in enumerate(zip(out, shape)) if i != axis):
        return None
    return [(node.outputs[0], labels)]


def _matmul(node: ir.Node, index: int, labels, known):
    """Scores q @ k^T (the head width contracted) or scores @ v (the keys contracted), with the
    heads among the batch axes of both sides."""
    other = known[node.inputs[1 - index]]
    a, b = (labels, other) if index == 0 else (other, labels)
    batch = _batch(a, node.inputs[0])
    if len(a) != len(b) or batch != _batch(b, node.inputs[1]) or _HEADS not in batch:
        return None
    if a[-1] == _WIDTH and b[-2] == _WIDTH and b[-1] == a[-2]:  # q @ k^T: (queries, keys)
        return [(node.outputs[0], a[:-1] + (_KEYS,))]
    if a[-1] == _KEYS and b[-2] == a[-2] and b[-1] == _WIDTH:  # scores @ v
        return [(node.outputs[0], a[:-1] + (_WIDTH,))]
    return None


def _back_to_splits(value: ir.Value) -> list[ir.Node] | None:
    """The head-splitting Reshapes that ``value`` comes from through the ops of a core (v's
    side of scores @ v reaches q's and k's splits through the Softmax), or None when anything
    else is on the way."""
    found: list[ir.Node] = []
    stack, seen = [value], set()
    while stack:
        node = stack.pop().producer()
        if node is None:
            return None
        if node in seen:
            continue
        seen.add(node)
        if node.op_type == "Reshape" and _opened(node, True) is not None:
            found.append(node)
        elif node.op_type in ("Mul", "Div") and _scalar(node.inputs[1]):
            stack.append(node.inputs[0])
        elif node.op_type == "Add" and len(constant := [v for v in node.inputs
                                                          if constant_array(v) is not None]) == 1:
            # a bias or mask added to the scores (``_score_bias`` checks it going forward)
            stack.extend(v for v in node.inputs if v is not constant[0])
        elif node.op_type == "MatMul":
            stack.extend(node.inputs[:2])
        elif node.op_type in ("Transpose", "Softmax", "Squeeze", "Unsqueeze", "Split", "Gather",
                              "Slice", "Reshape"):
            stack.append(node.inputs[0])
        else:
            return None
    return found


def _merges(node: ir.Node, labels: _Labels, dims: tuple[int, int]) -> bool:
    """A Reshape of (..., heads, width) into (..., heads * width), the projection's own leading
    axes in their order (axes of length 1 may come and go)."""
    if labels[-2:] != (_HEADS, _WIDTH) or constant_array(node.inputs[1]) is None:
        return False
    lead = [label for label in labels[:-2] if label != _UNIT]
    if any(not label.startswith("a") for label in lead) or lead != sorted(lead):
        return False
    shape_in, shape_out = static_shape(node.inputs[0]), static_shape(node.outputs[0])
    if shape_in is None or shape_out is None or shape_out[-1] != dims[0] * dims[1]:
        return False
    return [n for n in shape_in[:-2] if n != 1] == [n for n in shape_out[:-1] if n != 1]
