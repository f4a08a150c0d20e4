"""Top-1 accuracy of an ONNX classifier on a labelled dataset, with ONNX Runtime on the CPU.

Pruned models have a fixed batch dimension (``prune`` fixes the input shape it profiled), so a
model is fed in batches of its own fixed size, the last one padded with copies of its first
sample (the padded rows are dropped before scoring); a dynamic batch takes ``batch_size``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mdp_trt.data.datasets import ArrayDataset
from mdp_trt.errors import InputError

__all__ = ["evaluate_accuracy", "predict"]


def predict(model_path: str | Path, x: np.ndarray, *, batch_size: int = 256,
            threads: int | None = None) -> np.ndarray:
    """The first output of the model for every row of ``x`` (float32), in order."""
    import onnxruntime as ort

    model_path = Path(model_path)
    if not model_path.is_file():
        raise InputError(f"{model_path}: no such model file")
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise InputError(f"{model_path}: accuracy is measured on single-input classifiers; this "
                         f"model has {len(inputs)} inputs")
    name, shape = inputs[0].name, inputs[0].shape
    sample = [d if isinstance(d, int) else None for d in shape[1:]]
    if len(sample) != x.ndim - 1 or any(d is not None and d != s for d, s in zip(sample, x.shape[1:])):
        raise InputError(f"{model_path}: input {name!r} takes samples of shape {shape[1:]}, the "
                         f"data holds {list(x.shape[1:])}; give data shaped like the model's input")
    fixed = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
    step = fixed or batch_size
    outputs = []
    for start in range(0, len(x), step):
        chunk = np.ascontiguousarray(x[start:start + step], dtype=np.float32)
        rows = len(chunk)
        if fixed and rows < fixed:
            chunk = np.concatenate([chunk, np.repeat(chunk[:1], fixed - rows, axis=0)])
        outputs.append(session.run(None, {name: chunk})[0][:rows])
    return np.concatenate(outputs)


def evaluate_accuracy(model_path: str | Path, dataset: ArrayDataset, *, batch_size: int = 256,
                      threads: int | None = None) -> float:
    """Fraction of ``dataset`` whose label is the argmax of the model's first output."""
    if dataset.y is None:
        raise InputError("accuracy needs labels: the dataset has no 'y' array")
    if len(dataset.y) == 0:
        raise InputError("accuracy of an empty dataset is undefined; give at least one sample")
    logits = predict(model_path, dataset.x, batch_size=batch_size, threads=threads)
    if logits.ndim != 2:
        raise InputError(f"{model_path}: the first output has shape {list(logits.shape)}; "
                         "accuracy needs (batch, classes) logits")
    dataset.check_classes(logits.shape[1])  # a label the model cannot predict is bad data
    return float(np.mean(np.argmax(logits, axis=1) == dataset.y))
