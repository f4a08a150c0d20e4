"""The reference for surgery: the original architecture with removed channels zeroed.

Zeroing a channel's input-axis slice in every layer that consumes it is exactly equivalent to
removing the channel: all other ops of a prunable group are channel-wise, so the channel's
values never reach anything but those (zeroed) weights. Removed blocks are bypassed as in
surgery (the Add output becomes its skip input). Graph outputs keep their shapes.

A LayerNorm over a group's channels (a transformer's embedding, cut with
``--prune-embedding``) is the exception: its mean and variance run over every channel, so a
removed channel's values would still reach the kept ones. There the reference normalises over
the kept channels only: ``(x - mean_K) * m / sqrt(var_K + eps) * scale + bias``, with ``m`` the
kept channels' 0/1 mask and mean_K, var_K over them, built from plain ops beside the original
weights, so that it shares no code with the cut it checks.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import numpy as np
import onnx_ir as ir

from mdp_trt.analysis import Analysis
from mdp_trt.graph.constants import add_initializer
from mdp_trt.passes.plan_edits import (
    bypass_blocks,
    zero_channels,
    finish,
    read_constant,
    set_constant,
    traced_copy,
    validated_plan,
)

__all__ = ["mask_model"]

log = logging.getLogger(__name__)


def mask_model(
    model: ir.Model,
    analysis: Analysis,
    keep: Mapping[int, Iterable[int]],
    removed_blocks: Iterable[int] = frozenset(),
) -> ir.Model:
    """A new model computing what ``apply_plan(model, analysis, keep, removed_blocks)`` must."""
    plan, removed = validated_plan(analysis, keep, removed_blocks)
    masked, trace, blocks = traced_copy(model, analysis)
    zeros: dict[tuple[ir.Node, int], list] = {}
    for gid, kept in plan.items():
        group = trace.groups[gid]
        dropped = np.setdiff1d(np.arange(group.channels), kept)
        for cut in group.slices:
            if cut.consumer:
                zeros.setdefault((cut.node, cut.index), []).append((cut, dropped))
    for (node, index), cuts in zeros.items():
        array = read_constant(node, index).copy()
        for cut, channels in cuts:
            zero_channels(array, cut, channels)
        set_constant(masked.graph, node, index, array)
    for gid, kept in plan.items():
        for norm in trace.groups[gid].norms:
            _normalise_kept(masked.graph, norm, np.asarray(kept), trace.groups[gid].channels)
    bypass_blocks(masked.graph, blocks, removed)
    finish(masked)
    return masked


def _normalise_kept(graph: ir.Graph, norm: ir.Node, kept: np.ndarray, channels: int) -> None:
    """Replace the LayerNorm ``norm`` (over its last axis, which holds a whole group of
    ``channels``) by one whose statistics run over the ``kept`` channels only."""
    x = norm.inputs[0]
    # the scale's type: x may come from a LayerNorm replaced before (untyped new values)
    dtype = norm.inputs[1].dtype.numpy()
    mask = np.zeros(channels, dtype)
    mask[kept] = 1

    def const(what: str, array) -> ir.Value:
        return add_initializer(graph, f"{norm.name}.kept.{what}", np.asarray(array, dtype))

    def op(op_type: str, *inputs: ir.Value, **attributes) -> ir.Value:
        node = ir.node(op_type, list(inputs), attributes, name=f"{norm.name}.kept.{len(added)}")
        added.append(node)
        return node.outputs[0]

    added: list[ir.Node] = []
    mask_v, count = const("mask", mask), const("count", len(kept))
    axes = add_initializer(graph, f"{norm.name}.kept.axes", np.asarray([-1], np.int64))
    mean = op("Div", op("ReduceSum", op("Mul", x, mask_v), axes, keepdims=1), count)
    centred = op("Mul", op("Sub", x, mean), mask_v)
    variance = op("Div", op("ReduceSum", op("Mul", centred, centred), axes, keepdims=1), count)
    epsilon = norm.attributes.get_float("epsilon", 1e-5)
    scaled = op("Mul", op("Div", centred, op("Sqrt", op("Add", variance, const("epsilon", epsilon)))),
                norm.inputs[1])
    if len(norm.inputs) > 2 and norm.inputs[2] is not None:
        scaled = op("Add", scaled, norm.inputs[2])
    graph.insert_before(norm, added)
    ir.convenience.replace_all_uses_with(norm.outputs[0], scaled, replace_graph_outputs=True)
