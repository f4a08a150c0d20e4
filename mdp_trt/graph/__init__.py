"""Loading, saving and reading ONNX models (onnx-ir based)."""

from mdp_trt.graph.constants import constant_array, initializer_array
from mdp_trt.graph.model import initializer_bytes, load_model, save_model
from mdp_trt.graph.shapes import check_model, infer_shapes
from mdp_trt.graph.weights import check_finite_weights

__all__ = [
    "load_model",
    "initializer_bytes",
    "save_model",
    "infer_shapes",
    "check_model",
    "constant_array",
    "initializer_array",
    "check_finite_weights",
]
