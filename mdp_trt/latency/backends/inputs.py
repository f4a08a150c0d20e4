"""The inputs of a whole ONNX model to time: names, concrete shapes, dtypes, seeded random data.

Shapes come from the model's graph inputs. A symbolic or unknown leading dimension is the batch
and takes ``batch`` (default 1); any other symbolic dimension cannot be guessed and is an error
that names the input and tells how to fix the shape at export.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from mdp_trt.errors import InputError

__all__ = ["ModelInput", "model_inputs", "random_feeds"]


@dataclass(frozen=True)
class ModelInput:
    """One graph input (initializers excluded) with a concrete shape and numpy dtype name."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    def to_json(self) -> dict:
        return {**asdict(self), "shape": list(self.shape)}


def _load(path: Path) -> onnx.ModelProto:
    if not path.is_file():
        raise InputError(f"{path}: no such model file")
    try:
        # Weights are not needed to read input shapes; external data may be large.
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and friends; all mean "not a model"
        raise InputError(f"{path}: not a readable ONNX model ({exc})") from exc


def model_inputs(path: str | Path, *, batch: int | None = None) -> tuple[ModelInput, ...]:
    """Concrete inputs of the model at ``path``.

    ``batch`` fills a symbolic leading dimension; if the leading dimension is fixed and differs
    from ``batch`` this is an InputError (re-export with the wanted batch).
    """
    path = Path(path)
    model = _load(path)
    initializers = {init.name for init in model.graph.initializer}
    inputs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        if not value.type.HasField("tensor_type") or not tensor.HasField("shape"):
            raise InputError(f"{path}: input {value.name!r} is not a tensor with a known rank")
        shape = []
        for axis, dim in enumerate(tensor.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                size = dim.dim_value
                if axis == 0 and batch is not None and size != batch:
                    raise InputError(
                        f"{path}: input {value.name!r} has a fixed batch of {size}, not {batch}; "
                        f"re-export it with `input_shape` {batch}x... or drop `batch`",
                        parameters=("input_shape", "batch")
                    )
            elif axis == 0:
                size = batch if batch is not None else 1
            else:
                raise InputError(
                    f"{path}: input {value.name!r} has a symbolic dimension {axis} "
                    f"({dim.dim_param or '?'}); re-export with a fixed `input_shape`",
                    parameters=("input_shape",)
                )
            shape.append(size)
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type)).name
        inputs.append(ModelInput(value.name, tuple(shape), dtype))
    if not inputs:
        raise InputError(f"{path}: the model has no graph input to feed")
    return tuple(inputs)


def random_feeds(inputs: tuple[ModelInput, ...], *, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded data for each input: standard normal floats, random booleans, zero integers."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in inputs:
        dtype = np.dtype(spec.dtype)
        if np.issubdtype(dtype, np.floating):
            feeds[spec.name] = rng.standard_normal(spec.shape).astype(dtype)
        elif dtype == np.bool_:
            feeds[spec.name] = rng.integers(0, 2, spec.shape).astype(dtype)
        else:
            # Index-like inputs (token ids, ...): 0 is valid for any vocabulary.
            feeds[spec.name] = np.zeros(spec.shape, dtype=dtype)
    return feeds
