"""mdp-trt: latency-budgeted multi-dimensional pruning of ONNX models (MDP, arXiv 2406.12079)."""

__version__ = "0.1.0"
__all__ = ["__version__"]
