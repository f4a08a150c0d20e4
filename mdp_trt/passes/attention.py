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
``d`` head width, ``k`` keys, the rest kept from the projection's own axes), and only ops whose
effect on those labels is known are accepted (Transpose, taking q/k/v apart along the copy
axis, scalar Mul/Div, MatMul with the heads among the batch axes, Softmax over the keys). Anything
else (a per-head bias added to the scores, a head-mixing op, a head width that differs between
q/k and v) is not a core, and the split keeps its channels whole as before.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from mdp_trt.graph.constants import constant_array
from mdp_trt.graph.shapes import static_shape

__all__ = ["AttentionCore", "attention_core"]

_HEADS, _WIDTH, _COPY, _KEYS, _UNIT = "h", "d", "s", "k", "1"


@dataclass(frozen=True)
class AttentionCore:
    """The Reshapes around one attention core: ``splits`` (each of a projection's output, with
    its number of ``copies``: 3 for a fused QKV, 1 for separate q, k, v) and the ``merge``;
    ``heads`` x ``head_dim`` channels per copy."""

    splits: tuple[tuple[ir.Node, int], ...]
    merge: ir.Node
    heads: int
    head_dim: int
    # Reshapes inside the core that spell the head count out: (node, entry of its target)
    inner: tuple[tuple[ir.Node, int], ...] = ()

    def copies(self, split: ir.Node) -> int:
        return dict(self.splits)[split]

    @staticmethod
    def heads_entry(split: ir.Node) -> int:
        """The index of the head count in ``split``'s target shape."""
        return len(static_shape(split.outputs[0])) - 2


def attention_core(split: ir.Node) -> AttentionCore | None:
    """The attention core that the Reshape ``split`` opens, or None when it is not one."""
    head = _split_labels(split)
    if head is None:
        return None
    labels, heads, width = head
    known: dict[ir.Value, tuple[str, ...]] = {}
    splits = {split: _copies(split)}
    # (tensor, its labels, whether it waited at a MatMul whose other side was not known yet)
    queue: list[tuple[ir.Value, tuple[str, ...], bool]] = [(split.outputs[0], labels, False)]
    waiting: list[tuple[ir.Value, tuple[str, ...], bool]] = []
    merge: ir.Node | None = None
    inner: dict[ir.Node, int] = {}
    while queue or waiting:
        if not queue:
            # The splits the waiting tensors pointed to have been followed since: once more.
            queue, waiting = [(v, lab, True) for v, lab, _ in waiting], []
        value, labels, retry = queue.pop()
        if value in known and not retry:
            if known[value] != labels:
                return None
            continue
        known[value] = labels
        if value.is_graph_output():
            return None
        for use in value.uses():
            if use.node.op_type == "MatMul" and use.node.inputs[1 - use.idx] not in known:
                # The other side comes later from this split, or from a split of its own.
                if retry:
                    return None
                for start in _back_to_splits(use.node.inputs[1 - use.idx]) or ():
                    if start not in splits:
                        splits[start] = _copies(start)
                        queue.append((start.outputs[0], _split_labels(start)[0], False))
                waiting.append((value, labels, True))
                continue
            step = _step(use.node, use.idx, labels, known, (heads, width))
            if step is None:
                return None
            if step == "merge":
                if merge not in (None, use.node):
                    return None
                merge = use.node
                continue
            if use.node.op_type == "Reshape" and _HEADS in step[0][1]:
                inner[use.node] = step[0][1].index(_HEADS)
            queue.extend((v, lab, False) for v, lab in step)
    if merge is None:
        return None
    return AttentionCore(tuple(splits.items()), merge, heads, width, tuple(inner.items()))


def _split_labels(split: ir.Node) -> tuple[tuple[str, ...], int, int] | None:
    """The axis labels of a head-splitting Reshape's output, its heads and head width: input
    (..., C) with C last, output (..., [copies,] heads, width) with the leading axes kept."""
    if split.op_type != "Reshape" or constant_array(split.inputs[1]) is None:
        return None
    shape_in, shape_out = static_shape(split.inputs[0]), static_shape(split.outputs[0])
    if shape_in is None or shape_out is None or len(shape_in) < 2:
        return None
    lead = len(shape_in) - 1
    if tuple(shape_out[:lead]) != tuple(shape_in[:lead]) or len(shape_out) not in (lead + 2, lead + 3):
        return None
    if int(np.prod(shape_out[lead:])) != shape_in[-1] or min(shape_out[-2:]) < 2:
        return None
    labels = tuple(f"a{i}" for i in range(lead))
    labels += ((_COPY,) if len(shape_out) == lead + 3 else ()) + (_HEADS, _WIDTH)
    return labels, shape_out[-2], shape_out[-1]


def _copies(split: ir.Node) -> int:
    shape_in, shape_out = static_shape(split.inputs[0]), static_shape(split.outputs[0])
    return shape_out[len(shape_in) - 1] if len(shape_out) == len(shape_in) + 2 else 1


def _scalar(value: ir.Value) -> bool:
    array = constant_array(value)
    return array is not None and array.size == 1


def _step(node: ir.Node, index: int, labels: tuple[str, ...], known, size):
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
    if op in ("Split", "Gather", "Slice", "Squeeze"):
        return _take_copy(node, index, labels)
    if op == "MatMul":
        return _matmul(node, index, labels, known)
    if op == "Reshape" and index == 0:
        if _merges(node, labels, size):
            return "merge"
        moved = _unit_axes_moved(node, labels)
        return None if moved is None else [(out, moved)]
    return None


def _unit_axes_moved(node: ir.Node, labels: tuple[str, ...]) -> tuple[str, ...] | None:
    """The labels after a Reshape that only drops or inserts axes of length 1 (the dynamo
    exporter's k^T: (1, H, N, D) -> (H, N, D), Transpose, -> (1, H, D, N)); None otherwise."""
    shape_in, shape_out = static_shape(node.inputs[0]), static_shape(node.outputs[0])
    if shape_in is None or shape_out is None or constant_array(node.inputs[1]) is None:
        return None
    kept = [(label, n) for label, n in zip(labels, shape_in) if n != 1]
    if [n for _, n in kept] != [n for n in shape_out if n != 1]:
        return None
    rest = iter(label for label, _ in kept)
    return tuple(_UNIT if n == 1 else next(rest) for n in shape_out)


def _batch(labels: tuple[str, ...], value: ir.Value) -> list[str]:
    """The batch labels of a MatMul operand that are not broadcast (length > 1)."""
    shape = static_shape(value) or (0,) * len(labels)
    return [label for label, n in zip(labels[:-2], shape[:-2]) if n != 1]


def _take_copy(node: ir.Node, index: int, labels: tuple[str, ...]):
    """q, k and v taken apart along the copy axis (Split into ones + Squeeze, Gather of one
    index, Slice of one) or the copy axis squeezed away once it has length 1."""
    if index != 0 or _COPY not in labels:
        return None
    axis = labels.index(_COPY)
    shape = static_shape(node.inputs[0])
    if node.op_type == "Squeeze":
        axes = constant_array(node.inputs[1]) if len(node.inputs) > 1 else None
        if axes is None or [int(a) % len(labels) for a in axes.reshape(-1)] != [axis] or shape[axis] != 1:
            return None
        return [(node.outputs[0], labels[:axis] + labels[axis + 1:])]
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
        current = stack.pop()
        node = current.producer()
        if node is None or node in seen:
            if node is None:
                return None
            continue
        seen.add(node)
        if node.op_type == "Reshape" and _split_labels(node) is not None:
            found.append(node)
            continue
        if node.op_type in ("Mul", "Div"):
            if not _scalar(node.inputs[1]):
                return None
            stack.append(node.inputs[0])
        elif node.op_type == "MatMul":
            stack.extend(node.inputs[:2])
        elif node.op_type in ("Transpose", "Softmax", "Squeeze", "Split", "Gather", "Slice", "Reshape"):
            stack.append(node.inputs[0])
        else:
            return None
    return found


def _merges(node: ir.Node, labels: tuple[str, ...], size: tuple[int, int]) -> bool:
    """A Reshape of (..., heads, width) into (..., heads * width), the leading axes the
    projection's own in their order."""
    if labels[-2:] != (_HEADS, _WIDTH) or constant_array(node.inputs[1]) is None:
        return False
    lead = [label for label in labels[:-2] if label != _UNIT]
    if any(not label.startswith("a") for label in lead) or lead != sorted(lead):
        return False
    shape_in, shape_out = static_shape(node.inputs[0]), static_shape(node.outputs[0])
    return (shape_in is not None and shape_out is not None
            and tuple(shape_out) == tuple(shape_in[:-2]) + (size[0] * size[1],))
