"""The analysis pass: layers, channel groups and residual blocks of a loaded model.

A pure function over the graph (the model is not modified). Unsupported ops never raise: the
groups they touch become unprunable with the reason, and ``Analysis.notes`` lists them. Every
layer's widths are checked against its groups (``analysis.check_layer``, as the latency tables
do), so an analysis that a later stage would refuse is refused here, naming the layer.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np
import onnx_ir as ir

from mdp_trt.analysis import Analysis, Block, ChannelGroup, Layer, check_layer
from mdp_trt.errors import InputError
from mdp_trt.graph.shapes import static_shape
from mdp_trt.passes.blocks import BlockTrace, find_blocks
from mdp_trt.passes.groups import LAYER_OPS, GroupTrace, Trace, layer_rejection, trace_groups
from mdp_trt.passes.names import module_path, unique_names
from mdp_trt.passes.parts import spans
from mdp_trt.passes.signature import layer_signature
from mdp_trt.passes.subgraphs import subgraph_owners

__all__ = ["analyze", "check_node_names"]

log = logging.getLogger(__name__)

_MAX_REASONS = 3

# Ops of a quantised (Q/DQ or QLinear) model; ConvInteger/MatMulInteger are dynamic quantisation.
_QUANTIZATION_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear",
                               "ConvInteger", "MatMulInteger"})


def check_node_names(graph: ir.Graph) -> None:
    """Analysis results refer to nodes by name, so names must be present and unique."""
    seen: set[str] = set()
    for node in graph:
        if not node.name or node.name in seen:
            raise InputError(
                f"node names must be unique and non-empty (found {node.name!r}, {node.op_type}); "
                "load the model with mdp_trt.graph.load_model, which names every node"
            )
        seen.add(node.name)


def _reason(reasons: list[str]) -> str | None:
    reasons = list(dict.fromkeys(reasons))
    if not reasons:
        return None
    shown = "; ".join(reasons[:_MAX_REASONS])
    more = len(reasons) - _MAX_REASONS
    return shown + (f" (and {more} more)" if more > 0 else "")


def _pinned(group: GroupTrace) -> tuple[tuple[int, int], ...]:
    """The channels its pins keep, as disjoint sorted ranges [start, stop)."""
    pinned = [pin.channels(group.channels) for pin in group.pins]
    return tuple(spans(np.concatenate(pinned))) if pinned else ()


def _group(group: GroupTrace, prune_normalised: bool) -> ChannelGroup:
    first = group.producers[0]
    reasons = list(group.reasons)
    if group.norms and not prune_normalised:
        more = f" (and {len(group.norms) - 1} more LayerNorms)" if len(group.norms) > 1 else ""
        reasons.append(f"LayerNormalization (node {group.norms[0].name!r}) normalises over the "
                       f"channel axis{more}; the prune-embedding option cuts these channels too")
    return ChannelGroup(
        id=group.id,
        name=module_path(first) or first.name,
        channels=group.channels,
        producers=tuple(n.name for n in group.producers),
        consumers=tuple(n.name for n in group.consumers),
        prunable=not reasons,
        reason=_reason(reasons),
        tensors=tuple(v.name for v in group.tensors),
        # Plans keep equal counts per block of both grouped convs and producers' parts.
        divisions=math.lcm(group.divisions, group.blocks),
        pinned=() if reasons else _pinned(group),
        pinned_reason=None if reasons else _reason([pin.reason for pin in group.pins]),
        periodic=group.period > 0,
        bundle=group.bundle,
        norms=tuple(n.name for n in group.norms),
    )


def _named(items: tuple) -> tuple:
    """Groups or blocks with unique names (a module called twice produces two groups)."""
    names = unique_names([item.name for item in items])
    return tuple(item if item.name == name else dataclasses.replace(item, name=name)
                 for item, name in zip(items, names))


def _block(block: BlockTrace) -> Block:
    return Block(
        id=block.id,
        name=block.name,
        add_node=block.add.name,
        skip_input=block.skip_input.name,
        layers=tuple(n.name for n in block.layers),
        nodes=tuple(n.name for n in block.branch),
        removable=block.removable,
        reason=block.reason,
    )


def _layers(trace: Trace, blocks: list[BlockTrace], order: dict[ir.Node, int]) -> list[Layer]:
    # A layer belongs to the innermost (smallest) removable block around it.
    removable = sorted((b for b in blocks if b.removable), key=lambda b: len(b.branch))
    entries: list[tuple[ir.Node, int, int, int | None, tuple[int, ...], int, int]] = []
    for n in trace.layers:
        parts = trace.in_parts[n]
        out = (n, trace.out_group[n], trace.out_first[n])
        if parts.complete:
            entries.append((*out, trace.in_group[n], parts.groups, parts.fixed, parts.stride))
        else:  # a part of a group: its width does not follow the group's options
            entries.append((*out, None, (), layer_signature(n).in_channels, 1))
    # Depthwise convs are layers too (latency), with identical input and output groups.
    for group in trace.groups:
        entries.extend((n, group.id, 0, group.id, (group.id,), 0, 1) for n in group.depthwise)
    cores = {group.producers[0]: group for group in trace.groups
             if group.cores and group.prunable}
    layers = []
    for node, out_group, out_first, in_group, in_groups, in_fixed, in_stride in sorted(
            entries, key=lambda e: order[e[0]]):
        block = next((b.id for b in removable if node in b.branch), None)
        signature = layer_signature(node)
        if node in cores:
            signature = dataclasses.replace(signature, attention=_attention(cores[node]))
        layers.append(
            Layer(
                name=node.name,
                op_type=node.op_type,
                weight=node.inputs[1].name,
                out_group=out_group,
                in_group=in_group,
                block=block,
                signature=signature,
                in_groups=in_groups,
                in_fixed=in_fixed,
                in_stride=in_stride,
                out_first=out_first,
                core_nodes=_core_nodes(cores[node]) if node in cores else (),
            )
        )
    return layers


def _attention(group: GroupTrace) -> tuple[int, int, int]:
    """(tokens, head width, copies) of the attention core that ``group``'s heads enter, timed
    with its first producer: the core's cost follows the heads kept, and a group's producers
    (one fused QKV projection, or q, k and v) share their option."""
    split, core = group.cores[0]
    return (core.tokens, core.head_dim, core.split(split).copies if len(group.producers) == 1 else 1)


def _core_nodes(group: GroupTrace) -> tuple[str, ...]:
    """The names of the nodes of the attention cores ``group``'s heads enter."""
    return tuple(dict.fromkeys(node.name for _, core in group.cores for node in core.nodes))


def _skipped(graph: ir.Graph, layers: list[Layer]) -> list[str]:
    """Why each Conv/Gemm/MatMul of the graph (subgraphs included) is not among ``layers``."""
    owners = subgraph_owners(graph)
    names = {layer.name for layer in layers}
    skipped = []
    for node in graph.all_nodes():
        if node.op_type not in LAYER_OPS or node.domain not in ("", "ai.onnx") or node.name in names:
            continue
        if node.graph is graph:
            why = layer_rejection(node)
        else:
            owner, attribute = owners[node.graph]
            why = (f"it is inside the {attribute!r} of {owner.op_type} (node {owner.name!r}); "
                   "control flow is not pruned")
        skipped.append(f"{node.op_type} (node {node.name!r}): {why}")
    return skipped


def _quantized(graph: ir.Graph) -> bool:
    return any(node.op_type in _QUANTIZATION_OPS or node.op_type.startswith("QLinear")
               for node in graph.all_nodes())


def analyze(model: ir.Model, path: str, *, prune_normalised: bool = False) -> Analysis:
    """Describe ``model`` (loaded from ``path``) for pruning; the model is not modified.

    A group that LayerNorms normalise over (a transformer's embedding, the residual stream) is
    prunable only with ``prune_normalised`` (``--prune-embedding``): cutting it changes their
    statistics, so the masked original is no reference for it (``masking`` normalises over the
    kept channels instead).

    Invariants are those of ``mdp_trt.analysis``; group ids follow the graph order of their
    first producer, block ids the graph order of their Add.
    """
    graph = model.graph
    check_node_names(graph)
    order = {node: i for i, node in enumerate(graph)}
    trace = trace_groups(graph)
    blocks = find_blocks(graph)
    notes = [f"{why}: the channels it touches are kept whole" for why in trace.unsupported]
    image = [v for v in graph.inputs if v.name not in graph.initializers]
    input_shape = static_shape(image[0]) if image else None
    layers = _layers(trace, blocks, order)
    analysis = Analysis(
        model=str(path),
        input_shape=tuple(input_shape or ()),
        layers=tuple(layers),
        groups=_named(tuple(_group(g, prune_normalised) for g in trace.groups)),
        blocks=_named(tuple(_block(b) for b in blocks)),
        notes=tuple(notes),
        skipped=tuple(_skipped(graph, layers)),
        quantized=_quantized(graph),
    )
    # Every later stage relies on these widths; a layer that broke them would fail there.
    for layer in analysis.layers:
        in_group = None if layer.in_group is None else analysis.groups[layer.in_group]
        check_layer(layer, analysis.groups[layer.out_group], in_group)
    log.info(
        "%s: %d layers, %d groups (%d prunable), %d blocks (%d removable)",
        path, len(analysis.layers), len(analysis.groups),
        sum(g.prunable for g in analysis.groups), len(analysis.blocks),
        sum(b.removable for b in analysis.blocks),
    )
    return analysis
