"""The surgery pass: apply a pruning plan (kept channels per group, removed blocks) to a graph.

Cases handled (each comes from the channel trace of ``passes.groups``):
- producer layers: weight sliced on its output axis, bias on its only axis (a layer producing
  a part of its group loses the dropped channels of that part);
- channel-wise ops: BatchNormalization/InstanceNormalization parameters, per-channel constants
  of Add/Mul/... sliced; depthwise Conv weight/bias sliced and ``group`` set to the new width
  (of all the groups it reads);
- channel shuffles: replaced by a Gather of the kept channels in their shuffled order (a
  Reshape to [N, G, C'/G, ...] would pair the wrong channels once the blocks lose different
  ones);
- consumer layers: weight sliced on its input axis (after a Flatten: the columns of each kept
  channel, channel-major);
- concatenations: each group is cut at its offset in every tensor and constant it reaches;
- constants that count channels (Reshape targets, Split sizes, Slice starts/ends) are lowered
  by the dropped channels they cover;
- grouped convolutions: each conv group loses its own input channels; groups they touch keep
  equal counts per conv group (``plan_edits.physical_keep`` pads a plan that does not, and the
  padded channels are zeroed at their consumers);
- removed residual blocks: the Add's output is replaced by its skip input, the branch dies.
The result is cleaned up, sorted, shape-inferred and checked. The input model is not modified.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import numpy as np
import onnx_ir as ir

from mdp_trt.analysis import Analysis
from mdp_trt.graph.constants import add_initializer
from mdp_trt.graph.shapes import static_shape
from mdp_trt.passes.groups import ChannelShuffle, ConstantSlice, Trace
from mdp_trt.passes.plan_edits import (
    bypass_blocks,
    delete_grouped,
    physical_keep,
    zero_channels,
    finish,
    read_constant,
    set_constant,
    traced_copy,
    validated_plan,
)

__all__ = ["apply_plan"]

log = logging.getLogger(__name__)


def apply_plan(
    model: ir.Model,
    analysis: Analysis,
    keep: Mapping[int, Iterable[int]],
    removed_blocks: Iterable[int] = frozenset(),
) -> ir.Model:
    """A new, pruned model: ``keep[g]`` = channel indices kept in group g (absent: all kept).

    Raises InputError for a plan that does not fit the analysis (see ``validated_plan``).
    """
    plan, removed = validated_plan(analysis, keep, removed_blocks)
    pruned, trace, blocks = traced_copy(model, analysis)
    graph = pruned.graph

    # Several groups may cut the same constant (a conv's output and input axes, the segments of
    # a concatenation), so the edits are gathered per (node, input) and applied together to the
    # original array: zeroing of padded channels, then grouped-conv cuts, then deletions per axis.
    zeros: dict[tuple[ir.Node, int], list[tuple[ConstantSlice, np.ndarray]]] = {}
    grouped: dict[tuple[ir.Node, int], list[tuple[ConstantSlice, np.ndarray]]] = {}
    drops: dict[tuple[ir.Node, int], dict[int, list[np.ndarray]]] = {}
    counts: dict[tuple[ir.Node, int], dict[int, list[np.ndarray]]] = {}
    dropped_of: dict[int, np.ndarray] = {}
    for gid, kept in plan.items():
        group = trace.groups[gid]
        physical = physical_keep(kept, group.channels, group.divisions)
        dropped = dropped_of[gid] = np.setdiff1d(np.arange(group.channels), physical)
        padded = np.setdiff1d(physical, kept)
        for cut in group.slices:
            key = (cut.node, cut.index)
            if cut.consumer and padded.size:
                zeros.setdefault(key, []).append((cut, padded))
            if cut.conv_groups > 1:
                grouped.setdefault(key, []).append((cut, dropped))
            else:
                drops.setdefault(key, {}).setdefault(cut.axis, []).append(cut.elements(dropped))
        for fix in group.counts:
            entries = counts.setdefault((fix.node, fix.index), {})
            entries.setdefault((fix.entry, fix.per), []).append(fix.dropped_elements(dropped))
    for key in dict.fromkeys([*zeros, *grouped, *drops]):
        node, index = key
        array = read_constant(node, index).copy()
        for cut, channels in zeros.get(key, []):
            zero_channels(array, cut, channels)
        for cut, channels in grouped.get(key, []):
            array = delete_grouped(array, cut, channels)
        for axis, parts in drops.get(key, {}).items():
            array = np.delete(array, np.unique(np.concatenate(parts)), axis=axis)
        set_constant(graph, node, index, np.ascontiguousarray(array))
    for (node, index), entries in counts.items():
        target = read_constant(node, index).copy()
        flat = target.reshape(-1)
        for (entry, per), dropped in entries.items():
            if flat[entry] > 0:  # Reshape's -1 and 0 (copy) adapt by themselves
                flat[entry] -= np.unique(np.concatenate(dropped)).size // per
        set_constant(graph, node, index, target)
    for node in dict.fromkeys(n for g in trace.groups for n in (*g.depthwise, *g.depthwise_parts)):
        removed_here = _dropped_positions(trace, node.inputs[0], dropped_of)
        if removed_here.size:
            kept_here = static_shape(node.inputs[0])[1] - removed_here.size
            node.attributes["group"] = ir.AttrInt64("group", kept_here)
    for shuffle in dict.fromkeys(s for g in trace.groups for s in g.shuffles):
        removed_here = _dropped_positions(trace, shuffle.reshape.inputs[0], dropped_of)
        if removed_here.size:
            _gather_shuffle(graph, shuffle, removed_here)

    bypass_blocks(graph, blocks, removed)
    finish(pruned)
    log.info(
        "pruned %d groups, removed %d blocks: %d -> %d nodes",
        len(plan), len(removed), len(list(model.graph)), len(list(graph)),
    )
    return pruned


def _dropped_positions(trace: Trace, value: ir.Value, dropped_of: Mapping[int, np.ndarray]) -> np.ndarray:
    """Channel positions of ``value`` that the plan drops (from every group it holds)."""
    parts = [layout.elements(dropped_of[gid]) for gid, layout in trace.places.get(value, [])
             if gid in dropped_of]
    return np.unique(np.concatenate(parts)) if parts else np.empty(0, dtype=np.int64)


def _gather_shuffle(graph: ir.Graph, shuffle: ChannelShuffle, dropped: np.ndarray) -> None:
    """Replace ``shuffle`` by a Gather that reads each kept channel where the shuffle put it."""
    source = shuffle.reshape.inputs[0]
    channels = static_shape(source)[1]
    kept = np.setdiff1d(np.arange(channels, dtype=np.int64), dropped)
    order = shuffle.source(channels)
    order = order[np.isin(order, kept)]
    indices = add_initializer(graph, f"{shuffle.reshape.name}.kept", np.searchsorted(kept, order))
    gather = ir.node("Gather", [source, indices], attributes={"axis": 1}, name=f"{shuffle.reshape.name}.gather")
    graph.insert_after(shuffle.restore, gather)
    ir.convenience.replace_all_uses_with(shuffle.restore.outputs[0], gather.outputs[0])
