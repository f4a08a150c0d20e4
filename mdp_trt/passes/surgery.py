"""The surgery pass: apply a pruning plan (kept channels per group, removed blocks) to a graph.

Cases handled (each comes from the channel trace of ``passes.groups``):
- producer layers: weight sliced on its output axis, bias on its only axis;
- channel-wise ops: BatchNormalization/InstanceNormalization parameters, per-channel constants
  of Add/Mul/... sliced; depthwise Conv weight/bias sliced and ``group`` set to the new width;
- consumer layers: weight sliced on its input axis (after a Flatten: the columns of each kept
  channel, channel-major);
- Reshape target shapes that spell out the channel count are rewritten;
- removed residual blocks: the Add's output is replaced by its skip input, the branch dies.
The result is cleaned up, sorted, shape-inferred and checked. The input model is not modified.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import numpy as np
import onnx_ir as ir

from mdp_trt.analysis import Analysis
from mdp_trt.passes.plan_edits import (
    bypass_blocks,
    channel_indices,
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

    # Several groups may cut the same constant (a conv's output and input axes), so the cuts
    # are gathered per (node, input) and applied together to the original array.
    cuts: dict[tuple[ir.Node, int], list[tuple[int, np.ndarray]]] = {}
    for gid, kept in plan.items():
        group = trace.groups[gid]
        for cut in group.slices:
            cuts.setdefault((cut.node, cut.index), []).append((cut.axis, channel_indices(kept, cut.stride)))
        for fix in group.reshapes:
            target = read_constant(fix.node, 1).copy()
            if target[fix.axis] > 0:  # -1 and 0 (copy) adapt by themselves
                target[fix.axis] = len(kept) * fix.stride
                set_constant(graph, fix.node, 1, target)
        for node in group.depthwise:
            node.attributes["group"] = ir.AttrInt64("group", len(kept))
    for (node, index), axes in cuts.items():
        array = read_constant(node, index)
        for axis, indices in axes:
            array = np.take(array, indices, axis=axis)
        set_constant(graph, node, index, np.ascontiguousarray(array))

    bypass_blocks(graph, blocks, removed)
    finish(pruned)
    log.info(
        "pruned %d groups, removed %d blocks: %d -> %d nodes",
        len(plan), len(removed), len(list(model.graph)), len(list(graph)),
    )
    return pruned
