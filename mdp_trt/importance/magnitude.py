"""Data-free magnitude importance: the L2 norm of each output channel's BN-scaled filter.

A BatchNorm after the conv multiplies channel c by gamma_c / sqrt(var_c + eps); a filter with a
large norm but a tiny BN scale contributes little, so the norm is taken after that scaling (for
BN-folded exports the scale is already inside the weights).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from mdp_trt.analysis import Analysis
from mdp_trt.importance.scores import Importance

__all__ = ["magnitude_importance"]

WeightOf = Callable[[str], np.ndarray]
ScaleOf = Callable[[str], "np.ndarray | None"]


def magnitude_importance(analysis: Analysis, weight_of: WeightOf, scale_of: ScaleOf) -> Importance:
    """Scores every layer of ``analysis``.

    ``weight_of(layer)`` returns the weight with the output-channel axis first;
    ``scale_of(layer)`` the per-output-channel BN scale following the layer, or None.
    """
    scores: dict[str, tuple[float, ...]] = {}
    for layer in analysis.layers:
        weight = np.asarray(weight_of(layer.name), dtype=np.float64)
        norms = np.sqrt((weight.reshape(weight.shape[0], -1) ** 2).sum(axis=1))
        scale = scale_of(layer.name)
        if scale is not None:
            norms = norms * np.abs(np.asarray(scale, dtype=np.float64))
        scores[layer.name] = tuple(float(x) for x in norms)
    return Importance(method="magnitude", layer_scores=scores)
