"""Per-output-channel scale of the BatchNormalization that follows a layer (for importance)."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from mdp_trt.analysis import Analysis
from mdp_trt.graph.constants import constant_array

__all__ = ["layer_output_scale", "following_batchnorm"]


def _node_by_name(model: ir.Model, name: str) -> ir.Node:
    for node in model.graph:
        if node.name == name:
            return node
    raise KeyError(f"no node named {name!r} in the model")


def following_batchnorm(node: ir.Node) -> ir.Node | None:
    """The BatchNormalization that is the only consumer of ``node``'s output, if any."""
    out = node.outputs[0]
    uses = list(out.uses())
    if len(uses) != 1 or out.is_graph_output():
        return None
    consumer = uses[0].node
    if consumer.op_type == "BatchNormalization" and uses[0].idx == 0:
        return consumer
    return None


def layer_output_scale(model: ir.Model, analysis: Analysis, layer_name: str) -> np.ndarray | None:
    """gamma / sqrt(var + eps) per output channel of the BN directly after ``layer_name``.

    None when the layer is not followed by a BatchNormalization (BN folded by the exporter, or
    absent). The array has one float64 entry per output channel of the layer.
    """
    layer = analysis.layer(layer_name)
    bn = following_batchnorm(_node_by_name(model, layer.name))
    if bn is None:
        return None
    gamma = constant_array(bn.inputs[1])
    var = constant_array(bn.inputs[4])
    if gamma is None or var is None:
        return None
    eps_attr = bn.attributes.get("epsilon")
    eps = float(eps_attr.value) if eps_attr is not None else 1e-5
    return gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
