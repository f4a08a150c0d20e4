"""Latency backends: runtimes that time one-layer models and whole ONNX models the same way
(ONNX Runtime CPU/CUDA, PyTorch CPU/CUDA, TensorRT), picked by name in ``registry``."""
