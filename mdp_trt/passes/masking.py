"""The reference for surgery: the original architecture with removed channels zeroed.

Zeroing a channel's input-axis slice in every layer that consumes it is exactly equivalent to
removing the channel: all other ops of a prunable group are channel-wise, so the channel's
values never reach anything but those (zeroed) weights. Removed blocks are bypassed as in
surgery (the Add output becomes its skip input). Graph outputs keep their shapes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import numpy as np
import onnx_ir as ir

from mdp_trt.analysis import Analysis
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
    bypass_blocks(masked.graph, blocks, removed)
    finish(masked)
    return masked
