"""Loading a model for analysis (static shapes, folded constants) and saving it atomically.

``load_model`` normalises the graph so every later pass sees one form:
- the single graph input has a static shape (given by ``input_shape`` when the file's is
  symbolic);
- constant sub-graphs are folded (the dynamo exporter without optimisation computes conv biases
  from ``Shape(weight)``; folding turns them into initializers; ``Shape`` of a tensor whose shape
  is static after inference folds too) and Constant nodes become initializers;
- every node output has a static shape (onnx shape inference);
- the initializers of an IR < 4 model are constants: that IR required every initializer to be
  listed among the graph inputs, so the listing says nothing about intent, and ONNX Runtime
  never lets an input override one there. They are taken off the inputs and the IR version is
  raised to 4 (the first where initializers need not be inputs; the opsets are unchanged).
  From IR 4 on, an initializer listed as an input is a default that may be fed at run time, so
  it stays an input and a weight of that kind is not pruned (the analysis says why).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

from mdp_trt.errors import InputError
from mdp_trt.graph.constants import add_initializer
from mdp_trt.graph.shapes import infer_shapes, static_shape

__all__ = ["load_model", "save_model", "EXTERNAL_DATA_THRESHOLD_BYTES"]

log = logging.getLogger(__name__)

# Above this total initializer size the weights go to ``<name>.data`` beside the model file.
EXTERNAL_DATA_THRESHOLD_BYTES = 1 << 20


def _format_shape(shape: ir.Shape | None) -> str:
    if shape is None:
        return "unknown rank"
    return "x".join(str(d) if isinstance(d, int) else str(d.value or "?") for d in shape)


def _real_inputs(graph: ir.Graph) -> list[ir.Value]:
    # Initializers listed among the inputs (overridable defaults) are weights, not the image.
    return [v for v in graph.inputs if v.name not in graph.initializers]


# The first IR version in which an initializer need not be a graph input.
_IR_INITIALIZERS_APART = 4


def _initializers_as_constants(model: ir.Model) -> None:
    """IR < 4: take the initializers off the graph inputs (see the module docstring)."""
    if model.ir_version >= _IR_INITIALIZERS_APART:
        return
    ir.passes.common.RemoveInitializersFromInputsPass()(model)
    log.info("IR version %d: initializers listed as inputs are taken as constants; the model "
             "is handled as IR version %d", model.ir_version, _IR_INITIALIZERS_APART)
    model.ir_version = _IR_INITIALIZERS_APART


def load_model(path: str | os.PathLike, input_shape: tuple[int, ...] | None = None) -> ir.Model:
    """Load ``path`` (external data read lazily), fix its input shape and infer all shapes.

    Raises InputError for a missing or non-ONNX file, several graph inputs, a symbolic input
    shape without ``input_shape``, or an ``input_shape`` that contradicts the file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file; give the path of an ONNX model (.onnx)")
    try:
        model = ir.load(path)
    except Exception as err:  # protobuf DecodeError, onnx errors...: all mean "not ONNX"
        raise InputError(f"{path} is not a readable ONNX model ({type(err).__name__}: {err})") from err

    _initializers_as_constants(model)
    inputs = _real_inputs(model.graph)
    if len(inputs) != 1:
        names = ", ".join(repr(v.name) for v in inputs) or "none"
        raise InputError(
            f"{path}: mdp-trt handles models with exactly one input (an image batch); "
            f"this one has {len(inputs)}: {names}"
        )
    image = inputs[0]
    _fix_input_shape(path, image, input_shape)

    # Fold constant sub-graphs (e.g. biases computed from Shape(weight)) so weights and
    # biases are plain initializers; keeps BatchNormalization nodes (no fusion rules run).
    import onnxscript.optimizer

    onnxscript.optimizer.fold_constants(model, should_fold=_fold_small_constant_of_shape)
    if any(node.op_type == "Shape" for node in model.graph):
        # Shapes computed at run time (TorchScript exports of x.shape[1] after a Resize) fold
        # once the static input shape has been propagated.
        infer_shapes(model, reset=True)
        onnxscript.optimizer.fold_constants(model, should_fold=_fold_small_constant_of_shape)
    ir.passes.common.LiftConstantsToInitializersPass(lift_all_constants=False, size_limit=0)(model)
    ir.passes.common.RemoveUnusedNodesPass()(model)
    ir.passes.common.NameFixPass()(model)
    _constant_shapes(model)
    infer_shapes(model, reset=True)
    _explicit_split_sizes(model)
    unknown = [
        out.name for node in model.graph for out in node.outputs if static_shape(out) is None
    ]
    if unknown:
        log.warning(
            "%s: %d tensors have no static shape after inference (e.g. %s); their channels "
            "cannot be pruned", path, len(unknown), ", ".join(unknown[:3]),
        )
    return model


def _explicit_split_sizes(model: ir.Model) -> None:
    """Give every Split on a static axis its sizes as an input (opset >= 13), instead of equal
    parts (``num_outputs``, or as many as it has outputs): only explicit sizes can follow a
    pruning that removes different numbers of channels from the parts."""
    if model.opset_imports.get("", 1) < 13:
        return
    for node in model.graph:
        if node.op_type != "Split" or node.domain not in ("", "ai.onnx"):
            continue
        if len(node.inputs) > 1 and node.inputs[1] is not None:
            continue
        shape = static_shape(node.inputs[0])
        if shape is None:
            continue
        axis_attr = node.attributes.get("axis")
        dim = shape[(axis_attr.value if axis_attr is not None else 0) % len(shape)]
        count = len(node.outputs)
        size = -(-dim // count)  # the last part takes what is left, as num_outputs does
        sizes = np.array([min(size, dim - k * size) for k in range(count)], dtype=np.int64)
        if len(node.inputs) == 1:
            node.resize_inputs(2)
        node.replace_input_with(1, add_initializer(model.graph, f"{node.name}.split", sizes))
        node.attributes.pop("num_outputs", None)


def _constant_shapes(model: ir.Model) -> None:
    """Give every constant the shape of its tensor: a value folded into one keeps the shape it
    had (a TorchScript class token's Expand to the batch: [unk, unk, 192] for a [1, 1, 192]
    tensor), and inference would carry the unknown axes on (the Concat that joins it to the
    patch tokens, and every channel group after it)."""
    for value in model.graph.initializers.values():
        tensor = value.const_value
        if tensor is not None and value.shape != tensor.shape:
            value.shape = ir.Shape(tensor.shape)


# Elements up to which a constant ConstantOfShape is folded (onnxscript keeps them all).
_SMALL_CONSTANT_ELEMENTS = 4096


def _fold_small_constant_of_shape(node: ir.Node) -> bool | None:
    """Fold small ConstantOfShape nodes too: the TorchScript exporter builds Pad's pads from
    one, and a pad vector that is not a constant would pin the channels around the Pad."""
    if node.op_type == "ConstantOfShape" and node.domain in ("", "ai.onnx"):
        shape = node.inputs[0].const_value if node.inputs and node.inputs[0] is not None else None
        if shape is not None:
            return int(np.prod(shape.numpy(), dtype=np.int64)) <= _SMALL_CONSTANT_ELEMENTS
    return None  # onnxscript's default rules


def _suggested_shape(shape) -> str:
    """``shape`` with its symbolic dimensions at 1 (a batch of one), where its height and width
    are fixed; a generic image shape otherwise."""
    dims = tuple(shape) if shape is not None else ()
    if len(dims) == 4 and all(isinstance(d, int) for d in dims[1:]):
        return "x".join(map(str, (1, *dims[1:])))
    return "1x3x224x224"


def _fix_input_shape(path: Path, image: ir.Value, input_shape: tuple[int, ...] | None) -> None:
    current = image.shape
    if input_shape is None:
        if static_shape(image) is None:
            raise InputError(
                f"{path}: input {image.name!r} has a dynamic shape {_format_shape(current)}; "
                f"give a static one, e.g. `input_shape` {_suggested_shape(current)}",
                parameters=("input_shape",))
        return
    wanted = tuple(int(d) for d in input_shape)
    if any(d <= 0 for d in wanted):
        raise InputError(f"input shape {'x'.join(map(str, wanted))} has a non-positive dimension")
    if current is not None:
        dims = tuple(current)
        mismatch = len(dims) != len(wanted) or any(
            isinstance(d, int) and d != w for d, w in zip(dims, wanted)
        )
        if mismatch:
            raise InputError(
                f"{path}: input {image.name!r} has shape {_format_shape(current)}, which "
                f"`input_shape` {'x'.join(map(str, wanted))} contradicts; give a shape that "
                "matches the model's fixed dimensions", parameters=("input_shape",)
            )
    image.shape = ir.Shape(wanted)


def initializer_bytes(model: ir.Model) -> int:
    """Bytes of the model's constant tensors (its weights)."""
    total = 0
    for value in model.graph.initializers.values():
        if value.const_value is not None:
            total += value.const_value.nbytes
    return total


def save_model(model: ir.Model, path: str | os.PathLike) -> Path:
    """Write ``model`` to ``path`` atomically and check it with ``onnx.checker`` (path-based).

    Weights go to ``<name>.data`` beside the file when they exceed
    ``EXTERNAL_DATA_THRESHOLD_BYTES`` in total. Everything is written into a temporary directory
    next to the target and renamed into place at the end, so an error or Ctrl-C never leaves a
    half-written model. The model object is not modified. Returns the written path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    external = initializer_bytes(model) > EXTERNAL_DATA_THRESHOLD_BYTES
    data_name = path.name + ".data"
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    try:
        staged = tmp / path.name
        if external:
            # Write every initializer (even ones read lazily from the file being replaced)
            # into the new data file, so the result never depends on the source file.
            ir.save(model, staged, external_data=data_name)
        else:
            # Unchanged weights may still be read lazily from the source's data file; a
            # single-file model must carry them itself.
            inline = model.clone()
            ir.external_data.load_to_model(inline)
            onnx.save_model(ir.to_proto(inline), staged)
        try:
            onnx.checker.check_model(str(staged))
        except onnx.checker.ValidationError as err:
            raise InputError(f"the model to be written to {path} is invalid: {err}") from err
        if external:
            os.replace(tmp / data_name, path.parent / data_name)
        elif (path.parent / data_name).exists():
            # A stale data file from an earlier save would mislead readers.
            (path.parent / data_name).unlink()
        os.replace(staged, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("saved %s%s", path, f" (+ {data_name})" if external else "")
    return path
