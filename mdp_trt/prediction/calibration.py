"""From a plan's table sum to its whole-model latency: the calibration of the bilayer model.

Tables time each layer alone; inside the whole model the layers run faster or slower by a factor
that differs by layer and by width, so a constant calibrated on the original alone errs on every
pruned plan. The calibration is the affine map ``measured = scale x tables + offset`` through two
measured models, the original and a probe with every prunable group at about half width (a scale
out of its limits is clamped, the line then passing through the original; a negative offset
becomes a scale alone through the original). Where the backend profiles nodes
(``layer_shares``), ``layer_ratios`` keeps each layer's in-model/cell ratio at those two widths
and ``correct_layers`` multiplies every cell by it (interpolated by cell time) before the fit.
The measurements behind this: docs/latency-model-notes.md.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from mdp_trt.analysis import Analysis
from mdp_trt.graph import save_model
from mdp_trt.importance import Importance
from mdp_trt.latency.tables import LatencyTables
from mdp_trt.passes import apply_plan
from mdp_trt.prediction.plan_latency import layer_cells, table_sum
from mdp_trt.solve.formulate import decode_plan, removable_blocks

__all__ = ["CALIBRATIONS", "Calibration", "fit_calibration", "probe_options", "probe_model",
           "layer_ratios", "correct_layers", "calibrate", "calibration_through", "SCALE_LIMITS",
           "RATIO_LIMITS"]

log = logging.getLogger(__name__)

# --calibration choices: per-layer ratios where the backend profiles nodes, else one scale
CALIBRATIONS = ("per-layer", "two-point", "constant")

# In-model effects seen so far: 0.79-0.94 at 224 px (ResNet-18/50, ORT CPU) and about 2 at
# 64 px, where the last stages' weights are evicted between layers in the model but stay cached
# in a one-layer cell (benchmarks/node_breakdown.py: 1.8-2.3x). A fitted scale beyond these
# limits is clamped to them (a disturbed measurement must not tilt every prediction further).
SCALE_LIMITS = (0.5, 3.0)
# The probe's table sum must differ from the original's by this fraction for a slope to mean
# anything over the measurement noise.
MIN_SPAN = 0.2
# A layer's in-model/cell ratio outside these is a mismatched node or a disturbed timing, not
# a cache effect (the largest seen: 4.5); such a point is dropped and the layer left as timed.
RATIO_LIMITS = (0.2, 8.0)


@dataclass(frozen=True)
class Calibration:
    """``predict(tables_ms) = scale * tables_ms + offset_ms``, fitted on ``points``
    ((table sum, measured) in ms per measured model); ``note`` says why a fit fell back to the
    constant or was clamped, if it was."""

    scale: float
    offset_ms: float
    points: tuple[tuple[float, float], ...]
    note: str | None = None
    # per layer, (cell ms, in-model/cell ratio) points (``layer_ratios``); None: all alike
    layers: dict[str, list[list[float]]] | None = None
    clamped: bool = False  # the fitted scale left SCALE_LIMITS

    def predict(self, tables_ms: float) -> float:
        """The latency of a plan whose (per-layer corrected) table sum is ``tables_ms``."""
        return self.scale * tables_ms + self.offset_ms

    def apply(self, tables: LatencyTables) -> LatencyTables:
        """``tables`` corrected per layer and scaled: a plan's latency is then its table sum
        plus ``offset_ms``."""
        return correct_layers(tables, self.layers).scaled(self.scale)

    def to_json(self) -> dict:
        return {**asdict(self), "points": [list(p) for p in self.points]}


def _constant(points, note: str | None = None, layers=None) -> Calibration:
    tables_ms, measured_ms = points[0]
    return Calibration(1.0, measured_ms - tables_ms, tuple(points), note, layers)


def fit_calibration(points: list[tuple[float, float]],
                    layers: dict[str, list[list[float]]] | None = None) -> Calibration:
    """The calibration through ``points``; the first is the original model, whose measurement
    the constant model matches exactly. One point gives the constant; more give the least-squares
    affine map, unless their table sums span too little (the constant then) or the slope leaves
    ``SCALE_LIMITS`` (clamped to them, through the original); ``note`` says which. ``layers``
    (``layer_ratios``) is recorded when the sums were corrected with it."""
    if not points:
        raise ValueError("calibration needs at least the original model's measurement")
    if len(points) == 1:
        return _constant(points)
    xs = [t for t, _ in points]
    ys = [m for _, m in points]
    span = (max(xs) - min(xs)) / max(xs)
    if span < MIN_SPAN:
        return _constant(points, f"probe table sums span {span:.0%} (< {MIN_SPAN:.0%})", layers)
    n = len(points)
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    scale = (sum((x - mean_x) * (y - mean_y) for x, y in points)
             / sum((x - mean_x) ** 2 for x in xs))
    note = None
    offset = mean_y - scale * mean_x
    clamped = not SCALE_LIMITS[0] <= scale <= SCALE_LIMITS[1]
    if clamped:
        # Clamped, and through the original (whose measurement every prune starts from): still
        # nearer the fit than the constant's scale 1.
        limit = min(max(scale, SCALE_LIMITS[0]), SCALE_LIMITS[1])
        tables_ms, measured_ms = points[0]
        note = f"fitted scale {scale:.2f} outside {SCALE_LIMITS}, clamped to {limit}"
        scale, offset = limit, measured_ms - limit * tables_ms
    if offset < 0:
        # What the tables leave out (unprunable ops, the runtime's own time) takes no negative
        # time: a negative offset predicts a negative latency for a narrow enough plan (a 2%
        # plan of ResNet-18 was predicted at -0.65 ms on a loaded machine). A scale alone then,
        # through the original.
        tables_ms, measured_ms = points[0]
        note = ((note + "; " if note else "") + f"offset {offset:.3f} ms < 0: a scale alone, "
                f"{measured_ms / tables_ms:.3f}, through the original")
        scale, offset = measured_ms / tables_ms, 0.0
    return Calibration(scale, offset, tuple(points), note, layers, clamped)


def layer_ratios(measured: list[tuple[dict[str, float], dict[str, float]]]
                 ) -> dict[str, list[list[float]]]:
    """Per layer, its (cell ms, in-model ms / cell ms) points sorted by cell time, from
    ``measured``: per profiled model, (each layer's table cell at the model's widths, its
    in-model time). Equal cell times (a layer the probe did not narrow) average their ratios;
    a ratio outside ``RATIO_LIMITS`` is dropped with a warning."""
    points: dict[str, dict[float, list[float]]] = {}
    for cells, in_model in measured:
        for name, inside in in_model.items():
            cell = cells.get(name, 0.0)
            ratio = inside / cell if cell > 0 else float("inf")
            if not RATIO_LIMITS[0] <= ratio <= RATIO_LIMITS[1]:
                log.warning("latency calibration: layer %s runs %.3f ms in the model against a "
                            "%.3f ms table cell; ratio outside %s, layer left as timed",
                            name, inside, cell, RATIO_LIMITS)
                continue
            points.setdefault(name, {}).setdefault(round(cell, 9), []).append(ratio)
    return {name: [[cell, float(np.mean(ratios))] for cell, ratios in sorted(by_cell.items())]
            for name, by_cell in points.items()}


def correct_layers(tables: LatencyTables, layers: dict[str, list[list[float]]] | None
                   ) -> LatencyTables:
    """Every cell of a layer in ``layers`` multiplied by that layer's in-model/cell ratio at
    the cell's time: linear between the measured points and towards 1 at a zero-time cell
    (a layer narrowed until its weights and activations stay cached runs as it does alone),
    constant beyond the widest point."""
    if not layers:
        return tables
    corrected = dict(tables.tables)
    for name, points in layers.items():
        if name in corrected:
            cells, ratios = zip(*([[0.0, 1.0]] + [p for p in points if p[0] > 0]))
            corrected[name] = [[v * float(np.interp(v, cells, ratios)) for v in row]
                               for row in corrected[name]]
    return replace(tables, tables=corrected)


def probe_options(analysis: Analysis, group_size: int, fraction: float = 0.5) -> list[int] | None:
    """Per-group option indices of the probe: every prunable group at about ``fraction`` of its
    units, the others whole; None when no group is prunable (nothing to probe)."""
    full = [len(g.options(group_size)) - 1 for g in analysis.groups]
    options = [max(1, round(fraction * k)) if g.prunable else k
               for g, k in zip(analysis.groups, full)]
    return None if options == full else options


def probe_model(model, analysis: Analysis, importance: Importance, group_size: int):
    """The calibration probe (``probe_options``: prunable groups at half width, every block
    kept) as (cut model, its per-group options), or None when nothing is prunable."""
    probe = probe_options(analysis, group_size)
    if probe is None:
        return None
    keep_blocks = [1] * (len(removable_blocks(analysis)) + 1)
    decoded = decode_plan(analysis, importance, group_size, probe, keep_blocks)
    return apply_plan(model, analysis, decoded.keep, frozenset()), probe


def calibrate(model, analysis: Analysis, importance: Importance, tables: LatencyTables, *,
              group_size: int, baseline_ms: float, measure: Callable[[Path], float],
              folder: Path, original: Path, mode: str = "per-layer", layer_shares) -> Calibration:
    """The map from table sums to measured latency: through the original model (at
    ``original``, measured ``baseline_ms``) alone (``mode`` constant), also through the probe
    measured with ``measure(path)`` (two-point), and with each layer's in-model/cell ratio in
    both from ``layer_shares(path, layers)`` (per-layer; two-point where it gives None). The
    probe lives in a scratch ``folder``, removed afterwards."""
    full = [len(g.options(group_size)) - 1 for g in analysis.groups]
    models = [(full, baseline_ms, None)]
    probe = None if mode == "constant" else probe_model(model, analysis, importance, group_size)
    if probe is not None:
        profile = layer_shares if mode == "per-layer" else lambda path, layers: None
        folder.mkdir()
        try:
            path = save_model(probe[0], folder / "probe.onnx")
            probe_ms = measure(path)
            models = [(full, baseline_ms, profile(original, analysis.layers)),
                      (probe[1], probe_ms, profile(path, analysis.layers))]
            calibration = calibration_through(analysis, tables, models)
            if calibration.clamped:
                # A scale beyond anything a machine has shown is more likely a disturbed timing
                # of the probe than a property of the model: timed once more, the faster figure
                # counts (interference only adds time). If it persists, the note warns.
                log.warning("latency calibration: %s; timing the probe again", calibration.note)
                models[1] = (probe[1], min(probe_ms, measure(path)), models[1][2])
                calibration = calibration_through(analysis, tables, models)
        finally:
            shutil.rmtree(folder)
        if mode == "per-layer" and models[0][2] is None:
            log.info("latency calibration: this backend profiles no nodes; one scale for all layers")
    else:
        calibration = calibration_through(analysis, tables, models)
    if calibration.note:
        log.warning("latency calibration: %s", calibration.note)
    return calibration


def calibration_through(analysis: Analysis, tables: LatencyTables, models: list) -> Calibration:
    """The calibration through measured ``models``, the original first: each (per-group
    options, measured ms, each layer's share of the model's run or None). Per-layer ratios when
    every model has shares, else one scale. A layer's in-model time is its share of the measured
    time: the share comes from a profile taken at another moment, and the machine's speed then
    would otherwise tilt that model's ratios against the other's (2 threads on a 2-core VM: 10-25%
    between two profiles seconds apart)."""
    layers = None
    if all(shares is not None for _, _, shares in models):
        layers = layer_ratios([(layer_cells(analysis, tables, options),
                                {name: share * measured for name, share in shares.items()})
                               for options, measured, shares in models])
    corrected = correct_layers(tables, layers)
    return fit_calibration([(table_sum(analysis, corrected, options), measured)
                            for options, measured, _ in models], layers)
