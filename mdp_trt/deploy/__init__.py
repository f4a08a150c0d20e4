"""Deployment artefacts built from a (pruned) ONNX model for a target runtime."""
