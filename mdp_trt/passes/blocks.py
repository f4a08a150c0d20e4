"""Residual block detection.

For each Add of two run-time tensors, the latest common ancestor tensor F of its operands is
the fork. The nodes between F and an operand form that operand's path:
- one path empty (the operand is F, possibly through Identity nodes): an identity skip; the
  other path is a *removable* block, provided none of its tensors is used outside it;
- both paths non-empty: the shorter one (fewer layers) is a projection skip; the longer one is
  a block that keeps its channels prunable but cannot be removed (``removable=False``).
An Add whose operands have no common ancestor, or whose path reaches another graph input, is
not a residual join and produces no block.
An If/Loop/Scan reads tensors inside its subgraphs without listing them as inputs; those reads
count as its inputs here, and a read by its subgraph counts as a use by the node itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import onnx_ir as ir

from mdp_trt.graph.constants import is_constant
from mdp_trt.passes.groups import is_layer
from mdp_trt.passes.names import block_name
from mdp_trt.passes.subgraphs import Owners, outer_reads, subgraph_owners, top_level_node

__all__ = ["BlockTrace", "find_blocks"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BlockTrace:
    """A residual join (graph objects); ``branch`` are the nodes removed with the block."""

    id: int
    name: str
    add: ir.Node
    skip_input: ir.Value
    branch: tuple[ir.Node, ...]
    layers: tuple[ir.Node, ...]
    removable: bool
    reason: str | None


def _strip_identity(value: ir.Value) -> ir.Value:
    while (node := value.producer()) is not None and node.op_type == "Identity":
        value = node.inputs[0]
    return value


def _inputs(node: ir.Node) -> list[ir.Value]:
    return [*(v for v in node.inputs if v is not None), *outer_reads(node)]


def _ancestors(value: ir.Value) -> set[ir.Value]:
    seen: set[ir.Value] = set()
    stack = [value]
    while stack:
        v = stack.pop()
        if v in seen or is_constant(v):
            continue
        seen.add(v)
        node = v.producer()
        if node is not None:
            stack.extend(_inputs(node))
    return seen


def _path(value: ir.Value, fork: ir.Value) -> set[ir.Node] | None:
    """Nodes between ``fork`` and ``value``; None when some input does not descend from fork."""
    nodes: set[ir.Node] = set()
    stack = [value]
    seen: set[ir.Value] = set()
    while stack:
        v = stack.pop()
        if v is fork or v in seen or is_constant(v):
            continue
        seen.add(v)
        node = v.producer()
        if node is None:
            return None  # another graph input feeds this operand
        nodes.add(node)
        stack.extend(_inputs(node))
    return nodes


def _self_contained(branch: set[ir.Node], add: ir.Node, owners: Owners) -> bool:
    for node in branch:
        for out in node.outputs:
            if out.is_graph_output():
                return False
            for use in out.uses():
                user = top_level_node(use.node, owners)
                if user is not add and user not in branch:
                    return False
    return True


def find_blocks(graph: ir.Graph) -> list[BlockTrace]:
    """All residual joins of ``graph`` in graph order (see the module docstring)."""
    nodes = list(graph)
    order = {node: i for i, node in enumerate(nodes)}
    owners = subgraph_owners(graph)
    blocks: list[BlockTrace] = []
    for add in nodes:
        if add.op_type != "Add" or add.domain not in ("", "ai.onnx") or len(add.inputs) != 2:
            continue
        a, b = add.inputs
        if a is None or b is None or is_constant(a) or is_constant(b):
            continue
        if a.shape is None or b.shape is None or tuple(a.shape) != tuple(b.shape):
            continue  # a broadcasting Add is not a residual join
        common = _ancestors(a) & _ancestors(b)
        if not common:
            continue
        fork = max(common, key=lambda v: order.get(v.producer(), -1))
        paths = [_path(a, fork), _path(b, fork)]
        if paths[0] is None or paths[1] is None:
            continue
        # Identity nodes only forward the fork: they do not make a path.
        paths = [
            {n for n in p if not (n.op_type == "Identity" and _strip_identity(n.outputs[0]) is fork)}
            for p in paths
        ]
        layers = [sorted((n for n in p if is_layer(n)), key=order.__getitem__) for p in paths]
        if not layers[0] and not layers[1]:
            continue  # index arithmetic and the like, not a residual block
        if not paths[0] or not paths[1]:
            main = 0 if paths[0] else 1
            skip = 1 - main
            branch = paths[main]
            removable = _self_contained(branch, add, owners)
            reason = None if removable else "a tensor of the branch is used outside it"
        else:
            main = 0 if (len(layers[0]), len(paths[0])) >= (len(layers[1]), len(paths[1])) else 1
            skip = 1 - main
            branch = paths[main]
            removable = False
            skip_nodes = sorted(paths[skip], key=order.__getitem__)
            first = (layers[skip] or skip_nodes)[0]
            kind = "projection skip" if layers[skip] else "skip path with ops"
            reason = f"{kind} (node {first.name!r})"
        ordered = tuple(sorted(branch, key=order.__getitem__))
        main_layers = tuple(layers[main])
        name = block_name(main_layers) if main_layers else (add.name or f"block{len(blocks)}")
        blocks.append(
            BlockTrace(
                id=len(blocks),
                name=name,
                add=add,
                skip_input=add.inputs[skip],
                branch=ordered,
                layers=main_layers,
                removable=removable,
                reason=reason,
            )
        )
    return blocks
