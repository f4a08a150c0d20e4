"""Refusing models whose weights hold NaN or inf.

Such a model (diverged training, a broken export) runs, but every output it computes is NaN:
pruning or fine-tuning it would only produce another broken model, so it is refused up front.
"""

from __future__ import annotations

import os
from typing import Iterator

import numpy as np
import onnx_ir as ir

from mdp_trt.errors import InputError

__all__ = ["check_finite_weights"]

# Initializers named in the message; the count says how many more there are.
_NAMED = 3


def check_finite_weights(model: ir.Model, path: str | os.PathLike) -> None:
    """Raise InputError naming the float initializers of ``model`` (read from ``path``) that
    hold NaN or inf values, with how many each holds.

    Initializers are read one at a time (external data is memory-mapped, not copied), so the
    check adds at most one initializer's worth of memory to the loaded model."""
    bad = list(_nonfinite_initializers(model))
    if not bad:
        return
    named = ", ".join(f"{name!r} ({count} of {size})" for name, count, size in bad[:_NAMED])
    more = f" and {len(bad) - _NAMED} more" if len(bad) > _NAMED else ""
    raise InputError(f"{path}: {len(bad)} weight initializer(s) hold NaN or inf values: "
                     f"{named}{more}; the model is broken (e.g. diverged training), so re-export "
                     "it from finite weights")


def _nonfinite_initializers(model: ir.Model) -> Iterator[tuple[str, int, int]]:
    """(name, non-finite values, values) of each float initializer that holds NaN or inf."""
    for graph in model.graphs():  # If/Loop bodies carry initializers of their own
        for name, value in graph.initializers.items():
            tensor = value.const_value
            if tensor is None or not tensor.dtype.is_floating_point():
                continue
            array = tensor.numpy()
            # a float64 sum of float32 (or narrower) values cannot overflow, so it is finite
            # exactly when every value is; the counting mask is built only when it is not
            with np.errstate(over="ignore"):
                finite = np.isfinite(array.sum(dtype=np.float64))
            if not finite:
                count = int(np.count_nonzero(~np.isfinite(array)))
                if count:  # float64 weights near 1e308 can overflow the sum while finite
                    yield name, count, array.size
