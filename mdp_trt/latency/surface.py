"""Latency tables from a smooth surface fitted to each signature's measured cells.

On a CPU one layer's latency is a smooth function of its two widths (the work grows with
out x in, the traffic with out and with in), but one cell's measurement is not: on a shared
2-core host two independent profiles of ResNet-50's 6 826 cells (ORT, 2 threads) differed by
22% per cell (ms-weighted mean), while a biquadratic surface fitted to each profile's cells of
one signature agreed with the other profile's surface within 6-7%, and the fit's residuals in
the two profiles were uncorrelated (r ~ 0.0-0.1): what the surface leaves out is noise. That
noise is what the exact solver exploits: it picks the cells that happened to read fast, and its
plans then run slower than predicted (results rows 19 and 23: up to 8% on ResNet-50).

Each signature's cells get ``value(o, i) = sum c_ab (o / o_max)^a (i / i_max)^b`` over
``a, b <= 2`` (fewer terms on an axis with fewer distinct widths; a depthwise signature is
one-dimensional), fitted by least squares on relative error (weights 1 / measured) so that
narrow, fast cells count as much as wide ones. A signature with fewer than twice as many cells
as terms, or whose surface is not positive over its cells, keeps its measurements.
GPU kernels tile channels into a staircase that no low-order surface follows, so GPU backends
keep measured cells (``LatencyBackend.smooth_latency``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # tables.py imports this module
    from mdp_trt.latency.tables import Cell

__all__ = ["SurfaceReport", "surface_values"]

CellKey = tuple[str, int, int]
MAX_DEGREE = 2
POINTS_PER_TERM = 2  # fewer measured cells than this per coefficient: keep the measurements


@dataclass(frozen=True)
class SurfaceReport:
    """``fitted``/``kept``: signatures given a surface / left as measured (too few cells or a
    non-positive surface); ``mean_rel_residual``: |surface - measured| / measured over the
    fitted cells, mostly measurement noise (None when nothing was fitted)."""

    fitted: int
    kept: int
    mean_rel_residual: float | None

    def to_json(self) -> dict:
        return asdict(self)


def _degrees(n_points: int, n_out: int, n_in: int) -> tuple[int, int] | None:
    """The highest (out, in) degrees that the distinct widths allow and the points pin down;
    every axis along which the cells vary keeps at least a linear term."""
    low_out, low_in = min(1, n_out - 1), min(1, n_in - 1)
    top_out, top_in = min(MAX_DEGREE, n_out - 1), min(MAX_DEGREE, n_in - 1)
    candidates = sorted(((a, b) for a in range(low_out, top_out + 1)
                         for b in range(low_in, top_in + 1) if a + b > 0),
                        key=lambda d: (-(d[0] + 1) * (d[1] + 1), -d[0]))
    for a, b in candidates:
        if n_points >= POINTS_PER_TERM * (a + 1) * (b + 1):
            return a, b
    return None


def _design(outs: np.ndarray, ins: np.ndarray, degrees: tuple[int, int],
            scale: tuple[float, float]) -> np.ndarray:
    x, y = outs / scale[0], ins / scale[1]
    return np.stack([x ** a * y ** b for a in range(degrees[0] + 1)
                     for b in range(degrees[1] + 1)], axis=1)


def _fit_signature(cells: list["Cell"], measured: Mapping[CellKey, float]
                   ) -> tuple[dict[CellKey, float], np.ndarray] | None:
    """Surface values at ``cells`` and the fit's relative residuals, or None (kept)."""
    points = [c for c in cells if c.key() in measured]
    if not points:
        return None
    diagonal = cells[0].signature.depthwise  # in == out: one axis
    outs = np.array([c.out_channels for c in points], dtype=np.float64)
    ins = np.zeros_like(outs) if diagonal else np.array([c.in_channels for c in points],
                                                         dtype=np.float64)
    degrees = _degrees(len(points), len(set(outs)), len(set(ins)))
    y = np.array([measured[c.key()] for c in points])
    if degrees is None or not np.all(y > 0):
        return None
    scale = (max(outs.max(), 1.0), max(ins.max(), 1.0))
    design = _design(outs, ins, degrees, scale)
    coef = np.linalg.lstsq(design / y[:, None], np.ones_like(y), rcond=None)[0]
    all_outs = np.array([c.out_channels for c in cells], dtype=np.float64)
    all_ins = (np.zeros_like(all_outs) if diagonal
               else np.array([c.in_channels for c in cells], dtype=np.float64))
    values = _design(all_outs, all_ins, degrees, scale) @ coef
    if not (np.all(np.isfinite(values)) and np.all(values > 0)):
        return None
    return {c.key(): float(v) for c, v in zip(cells, values)}, design @ coef / y - 1


def surface_values(cells: Iterable["Cell"], measured: Mapping[CellKey, float],
                   fallback: Mapping[CellKey, float]) -> tuple[dict[CellKey, float], SurfaceReport]:
    """A value for every cell in ``cells``: its signature's surface fitted to the ``measured``
    cells of that signature, or ``fallback`` where the signature keeps its measurements."""
    by_sig: dict[str, list["Cell"]] = {}
    for cell in cells:
        by_sig.setdefault(cell.signature.key(), []).append(cell)
    values: dict[CellKey, float] = {}
    residuals: list[np.ndarray] = []
    kept = 0
    for group in by_sig.values():
        fit = _fit_signature(group, measured)
        if fit is None:
            kept += 1
            values.update({c.key(): fallback[c.key()] for c in group})
            continue
        values.update(fit[0])
        residuals.append(np.abs(fit[1]))
    mean = float(np.mean(np.concatenate(residuals))) if residuals else None
    return values, SurfaceReport(len(by_sig) - kept, kept, mean)
