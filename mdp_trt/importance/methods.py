"""The importance methods by name, scored on an ONNX model: what ``prune --importance`` runs.

``magnitude`` needs the weights only; ``taylor`` runs the graph in PyTorch on calibration data
(``calib_data``: an .npz or an image folder, see ``mdp_trt.data``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

import numpy as np
import onnx_ir as ir

from mdp_trt.analysis import Analysis
from mdp_trt.graph import initializer_array
from mdp_trt.importance.magnitude import magnitude_importance
from mdp_trt.importance.output_scale import layer_output_scale
from mdp_trt.importance.scores import Importance

__all__ = ["ImportanceMethod", "IMPORTANCE_METHODS", "score_channels"]

ImportanceMethod = Literal["magnitude", "taylor"]
IMPORTANCE_METHODS: tuple[str, ...] = get_args(ImportanceMethod)


def score_channels(model: ir.Model, analysis: Analysis, method: ImportanceMethod = "magnitude",
                   calib_data: Path | None = None, progress: bool = True) -> Importance:
    """Every layer's per-channel scores by ``method``; ``taylor`` reads ``calib_data``."""
    if method == "taylor":
        # torch autograd over the whole graph: imported only when asked for
        from mdp_trt.data import load_dataset
        from mdp_trt.importance.taylor import taylor_importance

        data = load_dataset(calib_data, analysis.input_shape)
        return taylor_importance(model, analysis, data, progress=progress)
    return magnitude_importance(
        analysis,
        weight_of=lambda name: _weight_out_first(model, analysis, name),
        scale_of=lambda name: layer_output_scale(model, analysis, name),
    )


def _weight_out_first(model: ir.Model, analysis: Analysis, name: str) -> np.ndarray:
    """The layer's weight with the output-channel axis first (Gemm transB=0 and MatMul store
    (in, out))."""
    layer = analysis.layer(name)
    weight = initializer_array(model, layer.weight)
    if layer.op_type == "Conv":
        return weight
    node = next(n for n in model.graph if n.name == name)
    if layer.op_type == "Gemm" and node.attributes.get_int("transB", 0):
        return weight
    return weight.T
