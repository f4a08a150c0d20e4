"""Human names for layers, groups and blocks: the torch module path where the exporter left one.

Where each exporter leaves it: parameter names (``layer1.0.conv1.weight``, both exporters when
weights are not folded); the dynamo exporter's ``pkg.torch.onnx.name_scopes`` metadata (every
node, also a Linear whose weight was transposed into ``val_226``); the TorchScript exporter's node
names, one scope per module (``/model.2/m.0/cv1/conv/Conv``, ``/layer1/layer1.0/conv1/Conv``,
where a container's child repeats its parent's name). Anything else falls back to the node name.
"""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Sequence

import onnx_ir as ir

__all__ = ["module_path", "block_name", "unique_names"]

_PARAM = re.compile(r"[A-Za-z_]\w*(?:\.\w+)*\.weight")
_SCOPES = "pkg.torch.onnx.name_scopes"


def module_path(node: ir.Node) -> str | None:
    """``model.2.m.0.cv1.conv`` for the conv of that torch module, or None when unknown."""
    if len(node.inputs) > 1 and node.inputs[1] is not None and node.inputs[1].name:
        weight = node.inputs[1].name
        if _PARAM.fullmatch(weight):
            return weight[: -len(".weight")]
    return _dynamo_scope(node) or _torchscript_scope(node.name or "")


def _dynamo_scope(node: ir.Node) -> str | None:
    # The list ends with the aten function; the entry before it is the innermost module.
    try:
        scopes = ast.literal_eval(node.metadata_props.get(_SCOPES, "[]"))
    except (ValueError, SyntaxError):
        return None
    modules = [s for s in scopes[:-1] if s]
    return modules[-1] if modules else None


def _torchscript_scope(name: str) -> str | None:
    if not name.startswith("/"):
        return None
    parts = [p for p in name.split("/") if p][:-1]  # the last part names the op
    path: list[str] = []
    for part in parts:
        if path and part.startswith(path[-1] + "."):
            path[-1] = part  # "layer1.0" inside "layer1" is the container's child
        else:
            path.append(part)
    return ".".join(path) or None


def block_name(layers: Sequence[ir.Node]) -> str:
    """The residual block's module: what its layers' module paths share (``layer1.0``)."""
    paths = [p.split(".") for p in (module_path(n) for n in layers) if p]
    if not paths:
        return layers[0].name or "block"
    if len(paths) == 1:
        return ".".join(paths[0][:-1]) or ".".join(paths[0])
    shared = os.path.commonprefix(paths)
    return ".".join(shared) or ".".join(paths[0])


def unique_names(names: Sequence[str]) -> list[str]:
    """``names`` with repeats made unique in order (``cv1``, ``cv1#2``): plan files key by name."""
    taken: set[str] = set()
    result = []
    for name in names:
        candidate, count = name, 1
        while candidate in taken:
            count += 1
            candidate = f"{name}#{count}"
        taken.add(candidate)
        result.append(candidate)
    return result
