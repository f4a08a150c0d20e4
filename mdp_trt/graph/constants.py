"""Reading constant tensors (initializers, Constant nodes, Identity of either) as numpy arrays,
and adding new initializers."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from mdp_trt.errors import InputError

__all__ = ["constant_array", "initializer_array", "is_constant", "add_initializer"]


def _constant_tensor(value: ir.Value | None, depth: int = 0) -> ir.TensorProtocol | None:
    if value is None or depth > 16:
        return None
    if value.const_value is not None and value.producer() is None:
        # An initializer (or a graph input with a default in IR < 4 models: those are
        # overridable, so they do not count as constants).
        if value.is_graph_input():
            return None
        return value.const_value
    node = value.producer()
    if node is None:
        return None
    if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
        return ir.convenience.get_const_tensor(value)
    if node.op_type == "Identity" and node.domain in ("", "ai.onnx"):
        # The TorchScript exporter shares deduplicated initializers through Identity nodes.
        return _constant_tensor(node.inputs[0], depth + 1)
    return None


def is_constant(value: ir.Value | None) -> bool:
    """True when ``value`` is a compile-time constant (initializer, Constant, Identity thereof)."""
    return _constant_tensor(value) is not None


def constant_array(value: ir.Value | None) -> np.ndarray | None:
    """The numpy array of a constant value, or None when the value is computed at run time."""
    tensor = _constant_tensor(value)
    return None if tensor is None else np.asarray(tensor.numpy())


def initializer_array(model: ir.Model, name: str) -> np.ndarray:
    """The array of the initializer ``name`` (external data is read on demand).

    Raises InputError when the model has no such initializer.
    """
    value = model.graph.initializers.get(name)
    if value is None or value.const_value is None:
        raise InputError(f"the model has no initializer named {name!r}")
    return np.asarray(value.const_value.numpy())


def add_initializer(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    """A new initializer holding ``array``, named ``name`` (or ``name.1``, ... if taken)."""
    base, i = name, 0
    while name in graph.initializers:
        i += 1
        name = f"{base}.{i}"
    value = ir.Value(
        name=name,
        shape=ir.Shape(array.shape),
        type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
        const_value=ir.tensor(array, name=name),
    )
    graph.register_initializer(value)
    return value
