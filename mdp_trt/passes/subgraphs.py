"""Control flow: which tensors of a graph the subgraphs of its If/Loop/Scan nodes read.

A subgraph may read any tensor of the graphs around it by name. onnx-ir lists such a read among
the tensor's ``uses()``, with a node of the subgraph (its ``node.graph`` is the subgraph, not the
top-level graph), while the If/Loop/Scan node that holds the subgraph does not have the tensor
among its inputs. The channel trace and block detection walk the top-level graph only, so they
ask here which top-level node a subgraph belongs to and which outer tensors a node reads inside.
"""

from __future__ import annotations

import onnx_ir as ir

__all__ = ["Owners", "subgraph_owners", "top_level_node", "outer_reads", "release_outer_reads"]

# A subgraph -> (the top-level node that holds it, that node's attribute holding it).
Owners = dict[ir.Graph, tuple[ir.Node, str]]


def _attribute_graphs(node: ir.Node) -> list[tuple[str, ir.Graph]]:
    found: list[tuple[str, ir.Graph]] = []
    for name, attr in node.attributes.items():
        if not isinstance(attr, ir.Attr):
            continue  # a reference attribute of a function body holds no graph
        if attr.type == ir.AttributeType.GRAPH:
            found.append((name, attr.value))
        elif attr.type == ir.AttributeType.GRAPHS:
            found.extend((name, g) for g in attr.value)
    return found


def subgraph_owners(graph: ir.Graph) -> Owners:
    """Every subgraph under the nodes of ``graph``, nested ones included, with the node of
    ``graph`` that holds it (a read in a nested subgraph is a read by that outermost node)."""
    owners: Owners = {}
    for node in graph:
        for name, sub in _attribute_graphs(node):
            owners[sub] = (node, name)
            for nested in sub.subgraphs():
                owners[nested] = (node, name)
    return owners


def top_level_node(node: ir.Node, owners: Owners) -> ir.Node:
    """``node`` if it belongs to the top-level graph, else the top-level node holding it."""
    entry = owners.get(node.graph) if node.graph is not None else None
    return node if entry is None else entry[0]


def outer_reads(node: ir.Node) -> list[ir.Value]:
    """Tensors defined outside ``node`` that nodes of its subgraphs read: inputs of ``node`` as
    real as its listed ones, though ``node.inputs`` does not hold them."""
    graphs = [sub for _, sub in _attribute_graphs(node)]
    graphs += [nested for sub in graphs for nested in sub.subgraphs()]
    if not graphs:
        return []
    inner: set[ir.Value] = set()
    for sub in graphs:
        inner.update(sub.inputs)
        inner.update(sub.initializers.values())
        inner.update(out for n in sub for out in n.outputs)
    reads = (v for sub in graphs for n in sub for v in n.inputs)
    return list(dict.fromkeys(v for v in reads if v is not None and v not in inner))


def release_outer_reads(node: ir.Node) -> None:
    """Drop the inputs of every node in ``node``'s subgraphs, for a ``node`` removed from its
    graph: onnx-ir keeps counting their reads as uses of the outer tensors otherwise."""
    for _, sub in _attribute_graphs(node):
        for inner in sub.all_nodes():
            inner.resize_inputs(0)
