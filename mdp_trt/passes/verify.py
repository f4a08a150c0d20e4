"""Numerical check of a pruned model against its reference (the masked original) in ORT CPU."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx_ir as ir

from mdp_trt.errors import InputError, VerificationFailed

__all__ = ["Verification", "input_sensitivity", "verify", "run_model"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verification:
    """Worst differences over all outputs and inputs tried.

    ``max_rel_diff`` = max|ref - pruned| / max(max|ref|, 1e-12), per output and input.
    ``input_sensitivity``: how far the reference's outputs move between the inputs tried, in the
    same relative units (the largest over outputs); a check is only as strong as this is large.
    """

    max_abs_diff: float
    max_rel_diff: float
    inputs: int
    passed: bool
    input_sensitivity: float | None = None

    @property
    def weak(self) -> bool:
        """The outputs barely depend on the input, so a wrong cut could pass unnoticed."""
        return self.input_sensitivity is not None and self.inputs > 1 and self.input_sensitivity < WEAK_SENSITIVITY

    @property
    def note(self) -> str | None:
        if not self.weak:
            return None
        return (f"verification is weak: the model's outputs move by only {self.input_sensitivity:.1e} "
                f"of their size between {self.inputs} random inputs, so a wrong cut could pass it "
                "(random weights with saturated heads do this; a trained model does not)")

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "Verification":
        return cls(**data)


# Below this the outputs' response to the input is within 10x the default tolerance.
WEAK_SENSITIVITY = 1e-3

# A protobuf message cannot exceed 2 GiB; above this many weight bytes (leaving room for the
# graph) ORT reads the model from a file with external data instead of from bytes.
IN_MEMORY_LIMIT_BYTES = 3 << 29


def _session(model: ir.Model):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    providers = ["CPUExecutionProvider"]
    weights = sum(v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None)
    if weights > IN_MEMORY_LIMIT_BYTES:
        # ORT has read every initializer once the session exists, so the files can go.
        with tempfile.TemporaryDirectory(prefix="mdp-verify-") as tmp:
            path = Path(tmp) / "model.onnx"
            ir.save(model, path, external_data="model.onnx.data")
            return ort.InferenceSession(str(path), options, providers=providers)
    # External data is read into memory on a copy (ORT gets bytes, not a path).
    copy = model.clone()
    ir.external_data.load_to_model(copy)
    return ort.InferenceSession(ir.to_proto(copy).SerializeToString(), options, providers=providers)


def _feeds(session, rng: np.random.Generator) -> dict[str, np.ndarray]:
    feeds = {}
    for arg in session.get_inputs():
        if not all(isinstance(d, int) for d in arg.shape):
            raise InputError(
                f"input {arg.name!r} has a dynamic shape {arg.shape}; "
                "load the model with load_model(path, input_shape)"
            )
        dtype = np.float16 if arg.type == "tensor(float16)" else np.float32
        feeds[arg.name] = rng.standard_normal(arg.shape).astype(dtype)
    return feeds


def run_model(model: ir.Model, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Outputs of ``model`` on ``feeds`` in ORT CPU (a convenience for tests and callers)."""
    return _session(model).run(None, feeds)


def input_sensitivity(model: ir.Model, *, inputs: int = 3, seed: int = 0) -> float:
    """How far ``model``'s outputs move between ``inputs`` seeded random inputs, relative to
    their size (the largest over outputs): 0 for a model whose outputs ignore the input."""
    session = _session(model)
    rng = np.random.default_rng(seed)
    runs = [session.run(None, _feeds(session, rng)) for _ in range(inputs)]
    return _spread(runs)


def _spread(runs: list[list[np.ndarray]]) -> float:
    return max((_difference(a, b)[1] for run in runs[1:] for a, b in zip(runs[0], run)), default=0.0)


def _difference(ref: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    """max|ref - other| and that over max|ref| (0, 0 for empty outputs)."""
    if not ref.size:
        return 0.0, 0.0
    diff = float(np.max(np.abs(ref.astype(np.float64) - other.astype(np.float64))))
    return diff, diff / max(float(np.max(np.abs(ref))), 1e-12)


def verify(
    reference: ir.Model,
    pruned: ir.Model,
    *,
    inputs: int = 3,
    seed: int = 0,
    rtol: float = 1e-4,
) -> Verification:
    """Run both models on ``inputs`` seeded standard-normal inputs and compare all outputs.

    Raises VerificationFailed (with the figures) when ``max_rel_diff > rtol`` or the outputs
    differ in number or shape; otherwise returns the figures.
    """
    ref_session, pruned_session = _session(reference), _session(pruned)
    rng = np.random.default_rng(seed)
    max_abs = max_rel = 0.0
    references = []
    for _ in range(inputs):
        feeds = _feeds(ref_session, rng)
        expected = ref_session.run(None, feeds)
        actual = pruned_session.run(None, feeds)
        references.append(expected)
        if len(expected) != len(actual):
            raise VerificationFailed(
                f"the pruned model has {len(actual)} outputs, the reference {len(expected)}"
            )
        for ref, got in zip(expected, actual):
            if ref.shape != got.shape:
                raise VerificationFailed(f"output shape {got.shape} differs from the reference's {ref.shape}")
            diff, relative = _difference(ref, got)
            max_abs, max_rel = max(max_abs, diff), max(max_rel, relative)
    result = Verification(max_abs_diff=max_abs, max_rel_diff=max_rel, inputs=inputs,
                          passed=max_rel <= rtol, input_sensitivity=_spread(references))
    if result.note:
        log.warning("%s", result.note)
    log.info("verification: max abs diff %.3g, max rel diff %.3g over %d inputs", max_abs, max_rel, inputs)
    if not result.passed:
        raise VerificationFailed(
            f"the pruned model differs from the masked original: max relative difference "
            f"{max_rel:.3g} > {rtol:g} (max absolute {max_abs:.3g}, {inputs} inputs)"
        )
    return result
