"""Graph edits shared by surgery and masking: plan validation, constant rewrites, bypasses.

All edits work on a model produced by ``ir.Model.clone()``: tensors are shared with the
original, so a constant is never modified in place; a new tensor replaces it instead.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import numpy as np
import onnx_ir as ir

from mdp_trt.analysis import Analysis
from mdp_trt.errors import InputError
from mdp_trt.graph.constants import add_initializer, constant_array
from mdp_trt.graph.shapes import check_model, infer_shapes
from mdp_trt.passes.blocks import BlockTrace, find_blocks
from mdp_trt.passes.groups import ConstantSlice, Trace, trace_groups
from mdp_trt.passes.subgraphs import outer_reads, release_outer_reads

__all__ = [
    "physical_keep",
    "zero_channels",
    "delete_grouped",
    "validated_plan",
    "traced_copy",
    "set_constant",
    "bypass_blocks",
    "finish",
]

log = logging.getLogger(__name__)


def physical_keep(kept: Iterable[int], channels: int, divisions: int) -> np.ndarray:
    """The channels surgery keeps: ``kept`` padded so that each of ``divisions`` equal blocks
    keeps as many channels as the fullest one (the lowest dropped ones are added back).

    Grouped convolutions need equal blocks. A padded channel is computed but zeroed at every
    consumer, so the result still equals the masked original; it only costs latency.
    """
    kept = np.asarray(sorted(set(kept)), dtype=np.int64)
    if divisions <= 1:
        return kept
    size = channels // divisions
    blocks = kept // size
    need = int(np.bincount(blocks, minlength=divisions).max())
    parts = []
    for b in range(divisions):
        mine = kept[blocks == b]
        spare = np.setdiff1d(np.arange(b * size, (b + 1) * size), mine)[: need - len(mine)]
        parts.append(np.union1d(mine, spare))
    return np.concatenate(parts)


def _blocks(array: np.ndarray, cut: ConstantSlice, channels: np.ndarray):
    """(rows of conv group b, local input indices) for the ``channels`` a grouped cut reads."""
    positions = cut.layout.elements(channels)
    per_group_in = array.shape[1]
    rows = array.shape[0] // cut.conv_groups
    for b in range(cut.conv_groups):
        local = positions[(positions // per_group_in) == b] % per_group_in
        yield slice(b * rows, (b + 1) * rows), local


def zero_channels(array: np.ndarray, cut: ConstantSlice, channels: np.ndarray) -> None:
    """Zero, in place, the slice of a consumer's weight that reads ``channels`` of the group."""
    if cut.conv_groups > 1:
        for rows, local in _blocks(array, cut, channels):
            array[rows, local] = 0
        return
    where: list = [slice(None)] * array.ndim
    where[cut.axis] = cut.layout.elements(channels)
    array[tuple(where)] = 0


def delete_grouped(array: np.ndarray, cut: ConstantSlice, channels: np.ndarray) -> np.ndarray:
    """A grouped conv weight without the input ``channels`` (each conv group loses its own)."""
    parts = [np.delete(array[rows], local, axis=1) for rows, local in _blocks(array, cut, channels)]
    if len({p.shape[1] for p in parts}) != 1:  # physical_keep guarantees equal blocks
        raise AssertionError(f"unequal conv groups in the cut of {cut.node.name!r}")
    return np.concatenate(parts, axis=0)


def validated_plan(
    analysis: Analysis, keep: Mapping[int, Iterable[int]], removed_blocks: Iterable[int]
) -> tuple[dict[int, list[int]], set[int]]:
    """Check a plan against the analysis; returns it normalised (sorted lists, a set).

    Raises InputError for an unknown or unprunable group, an empty or out-of-range channel
    list, a pinned channel dropped, or a block that is unknown or not removable.
    """
    groups = {g.id: g for g in analysis.groups}
    plan: dict[int, list[int]] = {}
    for gid, channels in keep.items():
        group = groups.get(int(gid))
        if group is None:
            raise InputError(f"the plan keeps channels of group {gid}, which the analysis does not have")
        kept = sorted({int(c) for c in channels})
        if not kept or kept[0] < 0 or kept[-1] >= group.channels:
            raise InputError(
                f"the plan keeps channels {kept[:5]}... of group {gid} ({group.name!r}), which "
                f"has {group.channels}: each group keeps at least one channel in [0, {group.channels})"
            )
        if len(kept) == group.channels:
            continue  # kept whole: nothing to do
        if not group.prunable:
            raise InputError(
                f"the plan prunes group {gid} ({group.name!r}), which is not prunable: {group.reason}"
            )
        dropped = sorted(set(c for a, b in group.pinned for c in range(a, b)) - set(kept))
        if dropped:
            raise InputError(
                f"the plan drops channels {dropped[:5]} of group {gid} ({group.name!r}), which every "
                f"plan keeps: {group.pinned_reason}")
        plan[group.id] = kept
    blocks = {b.id: b for b in analysis.blocks}
    removed = set()
    for bid in removed_blocks:
        block = blocks.get(int(bid))
        if block is None or not block.removable:
            why = "does not exist" if block is None else f"is not removable ({block.reason})"
            raise InputError(f"the plan removes block {bid}, which {why}")
        removed.add(block.id)
    return plan, removed


def traced_copy(model: ir.Model, analysis: Analysis) -> tuple[ir.Model, Trace, list[BlockTrace]]:
    """A copy of ``model`` with its group trace and blocks, checked against ``analysis``."""
    copy = model.clone()
    trace = trace_groups(copy.graph)
    blocks = find_blocks(copy.graph)
    same = len(trace.groups) == len(analysis.groups) and all(
        tuple(n.name for n in t.producers) == g.producers for t, g in zip(trace.groups, analysis.groups)
    ) and [b.add.name for b in blocks] == [b.add_node for b in analysis.blocks]
    if not same:
        raise InputError(
            f"the analysis ({analysis.model}) does not describe this model; run analyze on the "
            "same loaded model that is pruned"
        )
    return copy, trace, blocks


def set_constant(graph: ir.Graph, node: ir.Node, index: int, array: np.ndarray) -> None:
    """Make input ``index`` of ``node`` the constant ``array``.

    An initializer used only here is given the new tensor under its own name; a shared one is
    left to its other users and a new initializer is created for this input.
    """
    old = node.inputs[index]
    assert old is not None
    tensor_name = old.name or "const"
    uses = list(old.uses())
    if old.is_initializer() and len(uses) == 1 and not old.is_graph_output():
        old.const_value = ir.tensor(array, name=old.name)
        old.shape = ir.Shape(array.shape)
        return
    node.replace_input_with(index, add_initializer(graph, f"{tensor_name}.{node.name}.{index}", array))


def read_constant(node: ir.Node, index: int) -> np.ndarray:
    array = constant_array(node.inputs[index])
    if array is None:  # the analysis only plans slices of constants
        raise AssertionError(f"input {index} of node {node.name!r} is not constant")
    return array


def bypass_blocks(graph: ir.Graph, blocks: list[BlockTrace], removed: set[int]) -> None:
    """Replace each removed block's Add output by its skip input; the branch becomes dead.

    A block's skip input may be the Add output of a removed block before it (two removed blocks
    in a row): it is followed back to the first skip input that stays, else the later block
    would bring the earlier one back to life."""
    bypassed: dict[int, ir.Value] = {}  # id of a removed block's Add output -> what replaces it
    for block in blocks:
        if block.id not in removed:
            continue
        skip = block.skip_input
        while id(skip) in bypassed:
            skip = bypassed[id(skip)]
        out = block.add.outputs[0]
        if out.is_graph_output():
            # Keep the output's name: forward the skip through an Identity.
            identity = ir.node("Identity", [skip], name=f"{block.add.name}.bypass")
            graph.insert_after(block.add, identity)
            ir.convenience.replace_all_uses_with(out, identity.outputs[0], replace_graph_outputs=True)
            identity.outputs[0].name, out.name = out.name, f"{out.name}.removed"
        else:
            ir.convenience.replace_all_uses_with(out, skip)
        bypassed[id(out)] = skip
        log.debug("bypassed block %s (%s)", block.id, block.name)


def _remove_unused(model: ir.Model) -> None:
    """Remove dead nodes and initializers, including what a dead If/Loop/Scan read by name:
    onnx-ir keeps counting the reads of a removed node's subgraphs as uses of outer tensors,
    which would keep e.g. the first layers of a bypassed block that feed an If alive."""
    holders = [node for node in model.graph if outer_reads(node)]
    while True:
        ir.passes.common.RemoveUnusedNodesPass()(model)
        dead = [node for node in holders if node.graph is None and outer_reads(node)]
        if not dead:
            return
        for node in dead:
            release_outer_reads(node)


def finish(model: ir.Model) -> ir.Model:
    """Remove dead nodes/initializers, sort, re-infer all shapes and run the checker."""
    _remove_unused(model)
    ir.passes.common.TopologicalSortPass()(model)
    infer_shapes(model, reset=True)
    check_model(model)
    return model
