"""Time a whole ONNX model with the same backend protocol that fills the latency tables.

``benchmark_model`` is what ``bench`` and ``prune`` use for the original and the pruned model:
same session options and timing loop as a table cell, but the backend's model policy (at least
30 runs and 3 s by default), because a whole model is timed once and its median is compared
with a prediction.

Other processes on the machine only ever add time, so a model is timed in several rounds spread
over a few seconds and the round with the lowest median is kept: a burst of foreign load that
inflates one round does not move the figure.

``benchmark_models`` times models that are compared with each other (prune's candidates with the
original) through the backend's ``measure_models``: on CPU in alternating short blocks, so that
a slow spell of the machine falls on all of them alike; each model after the first carries its
``Ratio`` to the first, with a 95% interval and whether it is reliable (latency/backends/timing.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

from mdp_trt.latency.backends.inputs import ModelInput, model_inputs
from mdp_trt.latency.protocol import LatencyBackend, Ratio

__all__ = ["BenchResult", "benchmark_model", "benchmark_models", "FORMAT"]

log = logging.getLogger(__name__)

FORMAT = "mdp-bench/1"


@dataclass(frozen=True)
class BenchResult:
    """End-to-end latency of one model on one backend.

    Times are milliseconds per inference call (one batch): ``latency_ms`` is the median,
    ``p10_ms``/``p90_ms`` the 10th/90th percentiles, ``spread = (p90 - p10) / median``.
    ``fps = batch * 1000 / latency_ms`` (images per second). ``batch`` is the leading dimension
    of the first input.
    """

    model: str
    backend: str
    fingerprint: dict
    inputs: tuple[ModelInput, ...]
    batch: int
    latency_ms: float
    p10_ms: float
    p90_ms: float
    spread: float
    fps: float
    repeats: int
    round_medians_ms: tuple[float, ...] = ()
    ratio: Ratio | None = None  # to the first model timed with it (benchmark_models)

    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "model": self.model,
            "backend": self.backend,
            "fingerprint": self.fingerprint,
            "inputs": [x.to_json() for x in self.inputs],
            "batch": self.batch,
            "latency_ms": self.latency_ms,
            "p10_ms": self.p10_ms,
            "p90_ms": self.p90_ms,
            "spread": self.spread,
            "fps": self.fps,
            "repeats": self.repeats,
            "round_medians_ms": list(self.round_medians_ms),
            "ratio": None if self.ratio is None else self.ratio.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict) -> "BenchResult":
        fields = {k: v for k, v in data.items() if k != "format"}
        fields["inputs"] = tuple(ModelInput(x["name"], tuple(x["shape"]), x["dtype"])
                                 for x in data["inputs"])
        fields["round_medians_ms"] = tuple(data.get("round_medians_ms", ()))
        fields["ratio"] = Ratio.from_json(data["ratio"]) if data.get("ratio") else None
        return cls(**fields)


def benchmark_model(path: str | Path, backend: LatencyBackend, *,
                    batch: int | None = None, rounds: int = 3) -> BenchResult:
    """Median end-to-end latency and FPS of the ONNX model at ``path`` on ``backend``.

    ``batch`` fills a symbolic leading input dimension (default 1); a fixed one must match.
    Activates the backend for the duration if the caller has not.
    """
    path = Path(path)
    inputs = model_inputs(path, batch=batch)
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    with backend:
        measured = [backend.measure_model(path, batch=batch) for _ in range(rounds)]
        fingerprint = backend.fingerprint().to_json()
    return _result(path, backend, fingerprint, inputs, measured)


def benchmark_models(paths, backend: LatencyBackend, *, batch: int | None = None
                     ) -> list[BenchResult]:
    """``benchmark_model`` of each of ``paths`` (one round), timed together by the backend's
    ``measure_models`` so that their figures are comparable."""
    paths = [Path(p) for p in paths]
    inputs = [model_inputs(path, batch=batch) for path in paths]
    with backend:
        compared = backend.measure_models(paths, batch=batch)
        fingerprint = backend.fingerprint().to_json()
    return [replace(_result(path, backend, fingerprint, x, [m]), ratio=ratio)
            for path, x, m, ratio in zip(paths, inputs, compared.measurements,
                                         [None, *compared.ratios])]


def _result(path: Path, backend: LatencyBackend, fingerprint: dict, inputs, measured
            ) -> BenchResult:
    """The round with the lowest median, with every round's median."""
    m = min(measured, key=lambda x: x.median_ms)
    n = inputs[0].shape[0] if inputs[0].shape else 1
    log.info("%s on %s: %.3f ms median over %d runs (p10 %.3f, p90 %.3f)", path, backend.name,
             m.median_ms, m.repeats, m.p10_ms, m.p90_ms)
    return BenchResult(model=str(path), backend=backend.name, fingerprint=fingerprint,
                       inputs=inputs, batch=n, latency_ms=m.median_ms, p10_ms=m.p10_ms,
                       p90_ms=m.p90_ms, spread=m.spread, fps=n * 1000.0 / m.median_ms,
                       repeats=sum(x.repeats for x in measured),
                       round_medians_ms=tuple(x.median_ms for x in measured))
