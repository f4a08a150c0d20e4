"""From a plan's table sum to its whole-model latency: the calibration of the bilayer model.

Tables time each layer alone, as a one-layer model. In the whole model the same layers run back
to back (inputs arrive from the previous layer, the runtime picks layouts and fusions for the
whole graph) next to ops no table covers (residual Adds, pooling, reorders). So the tables and
the model's layers differ by a factor, not by a constant: on ONNX Runtime CPU, ResNet-18 at
224 px (1 thread, benchmarks/latency_model.py) measured 0.88 x its table sum plus 1.9 ms. A
constant calibrated on the original alone (measured minus table sum) then keeps the original's
error at every plan: 20% mean and 41% max error on 10 pruned plans. Measuring one more model, a
probe with every prunable group at about half its width, gives a second point; the affine map
``measured = scale x tables + offset`` through both points is the calibration: 2.0% mean and
6.2% max error on the same plans.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from mdp_trt.analysis import Analysis

__all__ = ["Calibration", "fit_calibration", "probe_options", "SCALE_LIMITS"]

# In-model effects seen so far: 0.79-0.94 at 224 px (ResNet-18/50, ORT CPU) and about 2 at
# 64 px, where the last stages' weights are evicted between layers in the model but stay cached
# in a one-layer cell (benchmarks/node_breakdown.py: 1.8-2.3x). A fitted scale beyond these
# limits is clamped to them (a disturbed measurement must not tilt every prediction further).
SCALE_LIMITS = (0.5, 3.0)
# The probe's table sum must differ from the original's by this fraction for a slope to mean
# anything over the measurement noise.
MIN_SPAN = 0.2


@dataclass(frozen=True)
class Calibration:
    """``predict(tables_ms) = scale * tables_ms + offset_ms``, fitted on ``points``
    ((table sum, measured) in ms per measured model); ``note`` says why a fit fell back to the
    constant or was clamped, if it was."""

    scale: float
    offset_ms: float
    points: tuple[tuple[float, float], ...]
    note: str | None = None

    def predict(self, tables_ms: float) -> float:
        return self.scale * tables_ms + self.offset_ms

    def to_json(self) -> dict:
        return {**asdict(self), "points": [list(p) for p in self.points]}


def _constant(points, note: str | None = None) -> Calibration:
    tables_ms, measured_ms = points[0]
    return Calibration(1.0, measured_ms - tables_ms, tuple(points), note)


def fit_calibration(points: list[tuple[float, float]]) -> Calibration:
    """The calibration through ``points``; the first is the original model, whose measurement
    the constant model matches exactly. One point gives the constant; more give the least-squares
    affine map, unless their table sums span too little (the constant then) or the slope leaves
    ``SCALE_LIMITS`` (clamped to them, through the original); ``note`` says which."""
    if not points:
        raise ValueError("calibration needs at least the original model's measurement")
    if len(points) == 1:
        return _constant(points)
    xs = [t for t, _ in points]
    ys = [m for _, m in points]
    span = (max(xs) - min(xs)) / max(xs)
    if span < MIN_SPAN:
        return _constant(points, f"probe table sums span {span:.0%} (< {MIN_SPAN:.0%})")
    n = len(points)
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    scale = (sum((x - mean_x) * (y - mean_y) for x, y in points)
             / sum((x - mean_x) ** 2 for x in xs))
    if not SCALE_LIMITS[0] <= scale <= SCALE_LIMITS[1]:
        # Clamped, and through the original (whose measurement every prune starts from): still
        # nearer the fit than the constant's scale 1.
        clamped = min(max(scale, SCALE_LIMITS[0]), SCALE_LIMITS[1])
        tables_ms, measured_ms = points[0]
        return Calibration(clamped, measured_ms - clamped * tables_ms, tuple(points),
                           f"fitted scale {scale:.2f} outside {SCALE_LIMITS}, clamped to {clamped}")
    return Calibration(scale, mean_y - scale * mean_x, tuple(points))


def probe_options(analysis: Analysis, group_size: int, fraction: float = 0.5) -> list[int] | None:
    """Per-group option indices of the probe: every prunable group at about ``fraction`` of its
    units, the others whole; None when no group is prunable (nothing to probe)."""
    full = [len(g.options(group_size)) - 1 for g in analysis.groups]
    options = [max(1, round(fraction * k)) if g.prunable else k
               for g, k in zip(analysis.groups, full)]
    return None if options == full else options
