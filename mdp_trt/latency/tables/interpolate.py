"""Cheaper latency tables: measure a coarse sub-grid of each table and interpolate the rest.

A bilayer table of a layer with K_out x K_in options costs K_out * K_in measurements; latency
varies smoothly (roughly bilinearly) in the two channel counts, so most cells can be predicted
from a few. For every layer signature (tables of equal signatures share cells) the coarse grid is
every ``step``-th needed width on each axis from the smallest, plus the full width; every other
cell is the bilinear interpolation of the grid in channel coordinates. A depthwise conv's cells
lie on the diagonal (out == in), so its grid and interpolation are one-dimensional.

Measured grids are noisy and need not be monotone; the interpolant is built from the mean of the
grid's upper monotone envelope (running maximum from the narrow end) and lower one (running
minimum from the wide end). Both are non-decreasing in both channel counts, so their mean is,
and it is the grid itself wherever the grid already was monotone. Bilinear interpolation of a
monotone grid is monotone, so every interpolated table is non-decreasing in both widths.

The interpolation error is measured, not assumed: ``holdout`` off-grid cells per signature are
measured too (cells already in the cache count first, at no cost) and compared with their
interpolated value. Tables use the interpolant for every off-grid cell, held-back ones included,
so the reported error is the error of the tables actually used. On CPU backends a surface fitted
to the grid cells (``surface.py``) replaces the interpolant and the grid's own measurements, and
the report is that surface's error.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace

import numpy as np

from mdp_trt.errors import InputError
from mdp_trt.latency.tables.cells import Cell, CellKey
from mdp_trt.signature import group_by_signature

__all__ = ["CoarsePlan", "InterpolationReport", "coarse_axis", "monotone_grid", "monotone_values",
           "bilinear"]



def coarse_axis(values: Iterable[int], step: int) -> tuple[int, ...]:
    """Every ``step``-th of the sorted distinct ``values`` from the smallest, plus the largest."""
    if step < 1:
        raise ValueError(f"interpolation step must be >= 1, got {step}")
    ordered = sorted(set(values))
    picked = ordered[::step]
    if picked[-1] != ordered[-1]:
        picked.append(ordered[-1])
    return tuple(picked)


def monotone_grid(values: np.ndarray) -> np.ndarray:
    """The mean of the upper and lower monotone envelopes of a 1-D or 2-D grid (see module doc);
    non-decreasing along every axis, equal to ``values`` where that already holds."""
    upper = np.asarray(values, dtype=np.float64)
    lower = upper
    for axis in range(upper.ndim):
        upper = np.maximum.accumulate(upper, axis=axis)
        lower = np.flip(np.minimum.accumulate(np.flip(lower, axis), axis=axis), axis)
    return (upper + lower) / 2


def monotone_values(cells: Iterable[Cell],
                    medians: Mapping[CellKey, float]) -> dict[CellKey, float]:
    """``medians`` of ``cells`` made non-decreasing in both widths, per signature
    (``monotone_grid`` over its out x in grid; over its widths for a depthwise signature). A
    signature whose cells do not fill their grid (a layer that needs only some pairs) keeps its
    medians as measured."""
    groups = group_by_signature(cells)
    values = {cell.key(): medians[cell.key()] for group in groups for cell in group}
    for group in groups:
        if group[0].signature.depthwise:
            ordered = sorted(group, key=lambda c: c.out_channels)
            smooth = monotone_grid(np.array([medians[c.key()] for c in ordered]))
            values.update({c.key(): float(v) for c, v in zip(ordered, smooth)})
            continue
        outs = sorted({c.out_channels for c in group})
        ins = sorted({c.in_channels for c in group})
        if len(group) != len(outs) * len(ins):
            continue
        grid = np.zeros((len(outs), len(ins)))
        for c in group:
            grid[outs.index(c.out_channels), ins.index(c.in_channels)] = medians[c.key()]
        smooth = monotone_grid(grid)
        values.update({c.key(): float(smooth[outs.index(c.out_channels), ins.index(c.in_channels)])
                       for c in group})
    return values


def _bracket(grid: np.ndarray, x: float) -> tuple[int, float]:
    """Index of the grid interval holding ``x`` and the position of ``x`` inside it (0..1)."""
    if grid.size == 1:
        return 0, 0.0
    k = int(np.clip(np.searchsorted(grid, x, side="right") - 1, 0, grid.size - 2))
    return k, float((x - grid[k]) / (grid[k + 1] - grid[k]))


def bilinear(out_grid: np.ndarray, in_grid: np.ndarray, values: np.ndarray, out_channels: float,
             in_channels: float) -> float:
    """Bilinear interpolation of ``values[out_grid index, in_grid index]`` at the given widths,
    which must lie inside the grid's range (an axis of one point is constant)."""
    if not (out_grid[0] <= out_channels <= out_grid[-1] and in_grid[0] <= in_channels <= in_grid[-1]):
        raise ValueError(f"({out_channels}, {in_channels}) is outside the interpolation grid "
                         f"[{out_grid[0]}, {out_grid[-1]}] x [{in_grid[0]}, {in_grid[-1]}]")
    i, s = _bracket(out_grid, out_channels)
    j, t = _bracket(in_grid, in_channels)
    i1, j1 = min(i + 1, out_grid.size - 1), min(j + 1, in_grid.size - 1)
    return float((1 - s) * ((1 - t) * values[i, j] + t * values[i, j1])
                 + s * ((1 - t) * values[i1, j] + t * values[i1, j1]))


@dataclass(frozen=True)
class _SignatureGrid:
    """The needed cells of one signature and the coarse grid that stands for them."""

    cells: tuple[Cell, ...]
    out_grid: tuple[int, ...]
    in_grid: tuple[int, ...]  # empty for a diagonal (depthwise) grid
    held_back: tuple[Cell, ...]

    @property
    def diagonal(self) -> bool:
        return not self.in_grid

    def grid_cells(self) -> list[Cell]:
        cell = self.cells[0]
        if self.diagonal:
            return [replace(cell, out_channels=w, in_channels=w) for w in self.out_grid]
        return [replace(cell, out_channels=o, in_channels=i)
                for o in self.out_grid for i in self.in_grid]

    def interpolant(self, medians: Mapping[CellKey, float]):
        """A function (out, in) -> ms over this signature's widths, from the grid's medians."""
        out_grid = np.asarray(self.out_grid, dtype=np.float64)
        if self.diagonal:
            grid = monotone_grid(np.array([medians[c.key()] for c in self.grid_cells()]))
            return lambda o, i: float(np.interp(o, out_grid, grid))
        in_grid = np.asarray(self.in_grid, dtype=np.float64)
        raw = np.array([medians[c.key()] for c in self.grid_cells()]).reshape(
            out_grid.size, in_grid.size)
        grid = monotone_grid(raw)
        return lambda o, i: bilinear(out_grid, in_grid, grid, o, i)


@dataclass(frozen=True)
class InterpolationReport:
    """How the coarse tables were made and how wrong they are on held-back cells.

    ``mean_rel_error``/``max_rel_error``: |interpolated - measured| / measured over the
    ``held_back`` cells (None when there were none); ``worst``: [signature key, out, in] of the
    worst one. ``cells_grid`` cells were measured (or cached) on the grids, ``cells_interpolated``
    filled by interpolation.
    """

    step: int
    cells_grid: int
    cells_interpolated: int
    held_back: int
    mean_rel_error: float | None
    max_rel_error: float | None
    worst: list | None = None

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "InterpolationReport":
        return cls(**data)


class CoarsePlan:
    """Which cells to measure for coarse tables, and how to fill the others from them.

    ``cells`` are the distinct cells the tables need (``required_cells``); ``cached`` the keys of
    those already in the cache (they serve as held-back cells for free). ``to_measure()`` lists
    the grid cells and the held-back cells; after measuring, ``fill(medians)`` gives a value for
    every needed cell and ``report(medians)`` the held-back error.
    """

    def __init__(self, cells: Iterable[Cell], *, step: int, holdout: int = 2,
                 cached: Iterable[CellKey] = ()) -> None:
        if step < 1:
            raise InputError(f"`interpolate` K measures every K-th width: K must be >= 1, got "
                             f"{step}", parameters=("interpolate",))
        if holdout < 0:
            raise InputError(f"the held-back cell count must be >= 0, got {holdout}")
        self.step = step
        cached = set(cached)
        self._grids = [self._grid(group, step, holdout, cached)
                       for group in group_by_signature(cells)]

    @staticmethod
    def _grid(cells: list[Cell], step: int, holdout: int, cached: set[CellKey]) -> _SignatureGrid:
        if cells[0].signature.depthwise:
            out_grid, in_grid = coarse_axis((c.out_channels for c in cells), step), ()
            on_grid = {(w, w) for w in out_grid}
        else:
            out_grid = coarse_axis((c.out_channels for c in cells), step)
            in_grid = coarse_axis((c.in_channels for c in cells), step)
            on_grid = {(o, i) for o in out_grid for i in in_grid}
        off = [c for c in cells if (c.out_channels, c.in_channels) not in on_grid]
        held = [c for c in off if c.key() in cached]
        rest = [c for c in off if c.key() not in cached]
        if len(held) < holdout and rest:
            # Centres of equal slices of the off-grid cells (row-major): both axes get sampled
            # and a single pick lands mid-table, not on an edge where interpolation is easiest.
            n = min(holdout - len(held), len(rest))
            held += [rest[int((k + 0.5) * len(rest) / n)] for k in range(n)]
        return _SignatureGrid(tuple(cells), out_grid, in_grid, tuple(held))

    def to_measure(self) -> list[Cell]:
        """Grid cells then held-back cells, deterministic order, no duplicates."""
        seen: dict[CellKey, Cell] = {}
        for grid in self._grids:
            for cell in grid.grid_cells() + list(grid.held_back):
                seen.setdefault(cell.key(), cell)
        return list(seen.values())

    def fill(self, medians: Mapping[CellKey, float]) -> dict[CellKey, float]:
        """Every needed cell's value: measured on the grid, interpolated elsewhere."""
        values: dict[CellKey, float] = {}
        for grid in self._grids:
            estimate = grid.interpolant(medians)
            on_grid = {c.key() for c in grid.grid_cells()}
            for cell in grid.cells:
                values[cell.key()] = (medians[cell.key()] if cell.key() in on_grid
                                      else estimate(cell.out_channels, cell.in_channels))
        return values

    def grid_values(self, medians: Mapping[CellKey, float]) -> dict[CellKey, float]:
        """The grid cells' medians (held-back and other cached cells left out)."""
        return {c.key(): medians[c.key()] for grid in self._grids for c in grid.grid_cells()}

    def report(self, medians: Mapping[CellKey, float],
               values: Mapping[CellKey, float] | None = None) -> InterpolationReport:
        """The held-back cells' error of ``values``, the tables as used (default: ``fill``)."""
        values = self.fill(medians) if values is None else values
        errors: list[tuple[float, CellKey]] = []
        grid_cells = interpolated = 0
        for grid in self._grids:
            on_grid = {c.key() for c in grid.grid_cells()}
            grid_cells += len(on_grid)
            interpolated += sum(1 for c in grid.cells if c.key() not in on_grid)
            for cell in grid.held_back:
                measured = medians[cell.key()]
                errors.append((abs(values[cell.key()] - measured) / measured, cell.key()))
        if not errors:
            return InterpolationReport(self.step, grid_cells, interpolated, 0, None, None)
        worst = max(errors)
        return InterpolationReport(self.step, grid_cells, interpolated, len(errors),
                                   float(np.mean([e for e, _ in errors])), worst[0],
                                   list(worst[1]))
