"""Latency tables from a smooth surface fitted to each signature's measured cells.

On a CPU a layer's latency is smooth in its two widths, but one cell's measurement is noisy, and
the exact solver exploits that noise (it picks the cells that happened to read fast). So each
signature's cells get ``value(o, i) = sum c_ab (o / o_max)^a (i / i_max)^b`` over ``a, b <= 2``
(fewer terms on an axis with fewer distinct widths; a depthwise signature is one-dimensional),
fitted by least squares on relative error (weights 1 / measured). A signature with fewer than
twice as many cells as terms, or whose surface is not positive over its cells, keeps its
measurements; GPU backends keep measured cells, whose staircase no low-order surface follows
(``LatencyBackend.smooth_latency``). The measurements behind this: docs/latency-model-notes.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from mdp_trt.latency.tables.cells import Cell, CellKey
from mdp_trt.signature import group_by_signature

__all__ = ["SurfaceReport", "Surface", "fit_surface", "fit_degrees", "widths", "surface_values",
           "describe", "POINTS_PER_TERM"]

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


def fit_degrees(n_points: int, n_out: int, n_in: int) -> tuple[int, int] | None:
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


def widths(cells: Sequence[Cell]) -> tuple[np.ndarray, np.ndarray]:
    """The cells' (out, in) widths as the surface sees them: a depthwise conv's cells lie on
    in == out, so its in-width is a constant 0 (one axis)."""
    outs = np.array([c.out_channels for c in cells], dtype=np.float64)
    if cells and cells[0].signature.depthwise:
        return outs, np.zeros_like(outs)
    return outs, np.array([c.in_channels for c in cells], dtype=np.float64)


@dataclass(frozen=True, eq=False)
class Surface:
    """One signature's fitted surface: ``degrees`` (out, in), the widths it divides by
    (``scale``), its coefficients, and the inverse Gram matrix of its weighted fit, which gives
    the leverage of any cell (``leverage``)."""

    degrees: tuple[int, int]
    scale: tuple[float, float]
    coef: np.ndarray
    inverse_gram: np.ndarray

    def terms(self, cells: Sequence[Cell]) -> np.ndarray:
        x, y = widths(cells)
        x, y = x / self.scale[0], y / self.scale[1]
        return np.stack([x ** a * y ** b for a in range(self.degrees[0] + 1)
                         for b in range(self.degrees[1] + 1)], axis=1)

    def values(self, cells: Sequence[Cell]) -> np.ndarray:
        """The surface at ``cells``, ms."""
        return self.terms(cells) @ self.coef

    def leverage(self, cells: Sequence[Cell], ms: np.ndarray) -> np.ndarray:
        """Each cell's leverage with latency ``ms``: for a fitted cell (its measurement) the
        hat-matrix diagonal; for another (its surface value) the variance of the surface there
        relative to one cell's noise."""
        rows = self.terms(cells) / ms[:, None]
        return np.einsum("ij,jk,ik->i", rows, self.inverse_gram, rows)


def fit_surface(cells: Sequence[Cell], ms: np.ndarray) -> Surface | None:
    """The surface of one signature fitted to ``cells`` timed at ``ms`` (least squares on
    relative error), or None: too few cells for ``fit_degrees``, or a latency <= 0."""
    outs, ins = widths(cells)
    degrees = fit_degrees(len(ms), len(set(outs)), len(set(ins)))
    if degrees is None or not np.all(ms > 0):
        return None
    scale = (max(outs.max(), 1.0), max(ins.max(), 1.0))
    shape = Surface(degrees, scale, np.empty(0), np.empty((0, 0)))
    rows = shape.terms(cells) / ms[:, None]
    coef = np.linalg.lstsq(rows, np.ones_like(ms), rcond=None)[0]
    return Surface(degrees, scale, coef, np.linalg.pinv(rows.T @ rows))


def _fit_signature(cells: list[Cell], measured: Mapping[CellKey, float]
                   ) -> tuple[dict[CellKey, float], np.ndarray] | None:
    """Surface values at ``cells`` and the fit's relative residuals, or None (kept)."""
    fitted = [c for c in cells if c.key() in measured]
    y = np.array([measured[c.key()] for c in fitted])
    surface = fit_surface(fitted, y)
    if surface is None:
        return None
    values = surface.values(cells)
    if not (np.all(np.isfinite(values)) and np.all(values > 0)):
        return None
    return {c.key(): float(v) for c, v in zip(cells, values)}, surface.values(fitted) / y - 1


def surface_values(cells: Iterable[Cell], measured: Mapping[CellKey, float],
                   fallback: Mapping[CellKey, float]) -> tuple[dict[CellKey, float], SurfaceReport]:
    """A value for every cell in ``cells``: its signature's surface fitted to the ``measured``
    cells of that signature, or ``fallback`` where the signature keeps its measurements."""
    values: dict[CellKey, float] = {}
    residuals: list[np.ndarray] = []
    groups = group_by_signature(cells)
    for group in groups:
        fit = _fit_signature(group, measured)
        if fit is None:
            values.update({c.key(): fallback[c.key()] for c in group})
            continue
        values.update(fit[0])
        residuals.append(np.abs(fit[1]))
    mean = float(np.mean(np.concatenate(residuals))) if residuals else None
    return values, SurfaceReport(len(residuals), len(groups) - len(residuals), mean)


def describe(report: dict | None) -> str | None:
    """One line on a ``SurfaceReport`` (JSON) for the CLI and prune's summary; None when no
    signature was fitted."""
    if not report or not report["fitted"]:
        return None
    return (f"tables fitted to the cells of {report['fitted']} layer signatures ("
            f"{report['kept']} kept as measured), which scatter "
            f"{100 * report['mean_rel_residual']:.1f}% around them (their measurement noise)")
