"""Human names for layers and blocks: the torch module path when the exporter left one.

The dynamo exporter keeps parameter names (``layer1.0.conv1.weight``); the TorchScript exporter
names nodes after scopes (``/layer1/layer1.0/conv1/Conv``) but may rename folded weights
(``onnx::Conv_247``). Anything else falls back to the ONNX node name.
"""

from __future__ import annotations

import re

import onnx_ir as ir

__all__ = ["module_path", "block_name"]

_PARAM = re.compile(r"[A-Za-z_]\w*(?:\.\w+)*\.weight")


def module_path(node: ir.Node) -> str | None:
    """``layer1.0.conv1`` for the conv of that torch module, or None when unknown."""
    if len(node.inputs) > 1 and node.inputs[1] is not None and node.inputs[1].name:
        weight = node.inputs[1].name
        if _PARAM.fullmatch(weight):
            return weight[: -len(".weight")]
    name = node.name or ""
    if name.startswith("/"):
        parts = [p for p in name.split("/") if p]
        if len(parts) >= 2:
            module = parts[-2]
            parent = parts[-3] if len(parts) >= 3 else None
            if parent and not module.startswith(parent + "."):
                module = f"{parent}.{module}"
            return module
    return None


def block_name(first_layer: ir.Node) -> str:
    """The residual block's module (``layer1.0``) from its first layer, else the node name."""
    path = module_path(first_layer)
    if path and "." in path:
        return path.rsplit(".", 1)[0]
    return first_layer.name or "block"
