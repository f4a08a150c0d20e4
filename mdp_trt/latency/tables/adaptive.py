"""Adaptive cells: per layer signature, time a lean design, fit the surface, and time more cells
only where the held-back cells say the fit is not yet at the noise level.

Used where the tables are a fitted surface (``surface.py``; CPU backends, ``smooth_latency``):
the surface, not the cells, is what the tables hold, so most cells need not be timed. Per
signature, on the sorted distinct widths of each axis (one axis for a depthwise conv):

1. **First design**: a ``LATTICE`` x ``LATTICE`` lattice of evenly spread widths (corners
   included), plus spread points (each the needed cell farthest from those chosen) up to
   ``POINTS_PER_TERM`` cells per term of the biquadratic and at least ``HOLDOUT`` off the
   lattice: 16 + 2 = 18 cells for a table of 4 x 4 widths or more, 6 for a depthwise one. A
   signature with no more cells than that has every cell timed.
2. **Held-back check**: the cells off the lattice are held back one at a time: each is predicted
   by the surface fitted to all other timed cells of its signature (the leave-one-out residual,
   exact for least squares: residual / (1 - leverage)), as a relative error. The noise level is
   the larger of the cells' own measurement noise (median of half their p10-p90 spread) and the
   fit's robust scatter (1.4826 x the median studentized residual of the timed cells): cells
   often scatter more between timings than within one (small Gemm cells on a 2-core host: 4.7%
   against 1.2%), and a misfit spread over the table raises it too, which more cells would not
   remove; the median keeps a narrow bump in a few cells from hiding itself. The signature is
   settled when its mean held-back error is at most that noise level.
3. **Growth**: an unsettled signature gets, next round, the untimed cell nearest its worst
   held-back cell and the cells where the surface is least certain (highest prediction variance
   of the weighted least-squares fit, picked one after another), ``GROWTH`` of its timed cells
   in all (at least 2): off the lattice, they are held back in the next check.
4. **Stop**: settled, or ``MAX_SHARE`` of the signature's cells timed (``capped`` in the
   report). A signature whose surface cannot be fitted, or is not positive over its cells, gets
   every cell timed.

The tables are the surface fitted to every timed cell of each signature; the reported held-back
error is each held-back cell's error under the surface fitted without it (step 2), so it holds
for a surface with one cell fewer than the tables use, and includes that cell's own noise.

Every step is a function of the needed cells and the measurements known so far, nothing else:
cells already in the cache are used as if timed now (design points and held-back cells for free),
and a second run, whose cache holds every cell the first one timed, asks for nothing. The
profiler times each round's cells of all signatures together (``bilayer.profile_tables``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from mdp_trt.latency.protocol import Measurement
from mdp_trt.latency.tables.cells import Cell, CellKey
from mdp_trt.latency.tables.surface import (MAX_DEGREE, POINTS_PER_TERM, Surface, fit_surface,
                                            widths)
from mdp_trt.signature import group_by_signature

__all__ = ["AdaptiveDesign", "AdaptiveReport", "SignatureDesign", "HeldBack", "error_summary",
           "describe", "LATTICE", "HOLDOUT", "GROWTH", "MAX_SHARE"]

LATTICE = 4  # widths per axis in the first design: enough distinct ones for quadratic terms
HOLDOUT = 2  # first-design cells off the lattice (held back from the start)
GROWTH = 0.25  # a round adds this share of an unsettled signature's timed cells (at least 2)
MAX_SHARE = 0.25  # a signature stops growing at this share of its cells (or its first design)

Known = Mapping[CellKey, Measurement]


def _positions(cells: Sequence[Cell]) -> np.ndarray:
    """Each cell's place in its signature's table: the index of its out and in width among the
    distinct ones, scaled to [0, 1] (a constant axis is 0)."""
    columns = []
    for axis in widths(cells):
        distinct = np.unique(axis)
        index = np.searchsorted(distinct, axis).astype(np.float64)
        columns.append(index / max(len(distinct) - 1, 1))
    return np.stack(columns, axis=1)


def _lattice_levels(count: int) -> set[int]:
    return {int(round(x)) for x in np.linspace(0, count - 1, min(count, LATTICE))}


@dataclass(frozen=True)
class HeldBack:
    """One signature's held-back check: the held-back ``cells``, each one's relative error under
    the surface fitted without it, and the noise level it is compared with (module doc)."""

    cells: tuple[Cell, ...]
    errors: tuple[float, ...]
    noise: float

    @property
    def settled(self) -> bool:
        return bool(self.errors) and float(np.mean(np.abs(self.errors))) <= self.noise


class SignatureDesign:
    """The adaptive design of one signature's needed ``cells`` (module doc). What depends on the
    cells alone (their keys, places and first design) is computed once; every answer after that
    depends on the ``known`` measurements given, nothing else."""

    def __init__(self, cells: Sequence[Cell]) -> None:
        self.cells = tuple(cells)
        signature = cells[0].signature.key()  # one signature: its (costly) key once
        self._keys = [(signature, c.out_channels, c.in_channels) for c in self.cells]
        self._where = _positions(self.cells)
        axes = widths(self.cells)
        levels = [(np.searchsorted(np.unique(axis), axis), _lattice_levels(len(np.unique(axis))))
                  for axis in axes]
        lattice = [k for k in range(len(self.cells))
                   if all(index[k] in chosen for index, chosen in levels)]
        terms = math.prod(min(MAX_DEGREE, len(np.unique(axis)) - 1) + 1 for axis in axes)
        size = max(len(lattice) + HOLDOUT, POINTS_PER_TERM * terms)
        if len(self.cells) <= size:  # small: every cell, none held back
            lattice, size = list(range(len(self.cells))), len(self.cells)
        self.lattice = np.zeros(len(self.cells), dtype=bool)
        self.lattice[lattice] = True
        # each cell's distance to the design so far; the farthest joins it (the first of equals)
        distance = np.min([np.linalg.norm(self._where - self._where[k], axis=1) for k in lattice],
                          axis=0, initial=np.inf)
        self._first = list(lattice)
        while len(self._first) < size:
            self._first.append(int(np.argmax(distance)))
            distance = np.minimum(distance,
                                  np.linalg.norm(self._where - self._where[self._first[-1]], axis=1))
        self.cap = max(len(self._first), math.ceil(MAX_SHARE * len(self.cells)))

    @property
    def first(self) -> tuple[Cell, ...]:
        """The first design: the lattice, then the spread cells (step 1)."""
        return tuple(self.cells[k] for k in self._first)

    def timed(self, known: Known) -> np.ndarray:
        """Which cells are ``known``, as a mask over ``cells``."""
        return np.array([key in known for key in self._keys])

    def _fit(self, known: Known, timed: np.ndarray
             ) -> tuple[Surface, np.ndarray, np.ndarray] | None:
        """The surface fitted to the timed cells, its values at every cell and the timed cells'
        measurements; None where it cannot be fitted or is not positive everywhere."""
        index = np.flatnonzero(timed)
        measured = np.array([known[self._keys[k]].median_ms for k in index])
        surface = fit_surface([self.cells[k] for k in index], measured)
        if surface is None:
            return None
        values = surface.values(self.cells)
        if not (np.all(np.isfinite(values)) and np.all(values > 0)):
            return None
        return surface, values, measured

    def held_back(self, known: Known) -> HeldBack | None:
        """The held-back check (step 2); None when no surface fits."""
        timed = self.timed(known)
        fit = self._fit(known, timed)
        return None if fit is None else self._check(known, timed, fit)

    def _check(self, known: Known, timed: np.ndarray, fit) -> HeldBack:
        surface, values, measured = fit
        index = np.flatnonzero(timed)
        residual = values[index] / measured - 1
        leverage = np.minimum(surface.leverage([self.cells[k] for k in index], measured),
                              1 - 1e-9)
        off = ~self.lattice[index]
        spread = float(np.median([known[self._keys[k]].spread for k in index])) / 2
        # residuals scaled to one cell's noise (a fitted cell's residual is shrunk by its
        # leverage); the median keeps a few cells in a bump from raising the level
        scatter = 1.4826 * float(np.median(np.abs(residual) / np.sqrt(1 - leverage)))
        return HeldBack(tuple(self.cells[k] for k in index[off]),
                        tuple(map(float, residual[off] / (1 - leverage[off]))),
                        max(spread, scatter))

    def next_cells(self, known: Known) -> list[Cell]:
        """The cells to time next given the ``known`` measurements (any cell's, cached or
        timed); empty when the signature is done (steps 1-4)."""
        missing = [self.cells[k] for k in self._first if self._keys[k] not in known]
        if missing:
            return missing
        timed = self.timed(known)
        if timed.all():
            return []
        fit = self._fit(known, timed)
        if fit is None:
            return [c for c, t in zip(self.cells, timed) if not t]
        check = self._check(known, timed, fit)
        count = int(timed.sum())
        if check.settled or count >= self.cap:
            return []
        return self._grow(timed, fit, check, min(max(2, math.ceil(GROWTH * count)),
                                                 self.cap - count))

    def _grow(self, timed: np.ndarray, fit, check: HeldBack, count: int) -> list[Cell]:
        """``count`` untimed cells: the one nearest the worst held-back cell, then those of
        highest prediction variance, each pick lowering the variance near it (a rank-one
        update of the inverse Gram matrix)."""
        surface, values, _ = fit
        untimed = np.flatnonzero(~timed)
        worst = np.flatnonzero(timed & ~self.lattice)[int(np.argmax(np.abs(check.errors)))]
        near = int(np.argmin(np.linalg.norm(self._where[untimed] - self._where[worst], axis=1)))
        picks = [near]
        rows = surface.terms([self.cells[k] for k in untimed]) / values[untimed][:, None]
        inverse = surface.inverse_gram
        while len(picks) < min(count, len(untimed)):
            row = inverse @ rows[picks[-1]]
            inverse = inverse - np.outer(row, row) / (1 + rows[picks[-1]] @ row)
            variance = np.einsum("ij,jk,ik->i", rows, inverse, rows)
            variance[picks] = -np.inf
            picks.append(int(np.argmax(variance)))
        return [self.cells[untimed[k]] for k in picks]


@dataclass(frozen=True)
class AdaptiveReport:
    """What adaptive cells cost and how wrong their tables are on held-back cells.

    ``design``: "surface" (this module) or "staircase" (``staircase.py``). ``cells_needed``:
    the full grid's distinct cells; ``cells_timed``: those the tables rest on, timed by this run
    or found in the cache; ``rounds``: rounds of timing this run. ``signatures``: layer
    signatures; ``complete``: those with every cell timed. ``held_back``: cells held back (see
    each design's module doc); ``mean_rel_error``/``max_rel_error``: their relative error (None
    without any), ``worst``: [signature key, out, in] of the worst; ``noise``: the mean noise
    level they were held to; ``capped``: signatures that stopped at the cap above it.
    """

    design: str
    cells_needed: int
    cells_timed: int
    rounds: int
    signatures: int
    complete: int
    held_back: int
    mean_rel_error: float | None
    max_rel_error: float | None
    worst: list | None = None
    noise: float | None = None
    capped: int = 0

    def to_json(self) -> dict:
        return asdict(self)


def error_summary(errors: Sequence[tuple[float, CellKey]]) -> dict:
    """``held_back``, ``mean_rel_error``, ``max_rel_error`` and ``worst`` of (|error|, cell key)
    pairs, as ``AdaptiveReport`` holds them."""
    if not errors:
        return {"held_back": 0, "mean_rel_error": None, "max_rel_error": None, "worst": None}
    worst = max(errors)
    return {"held_back": len(errors), "mean_rel_error": float(np.mean([e for e, _ in errors])),
            "max_rel_error": worst[0], "worst": list(worst[1])}


class AdaptiveDesign:
    """The adaptive surface design over all signatures of a table plan: ``next_cells(known)``
    per round until it returns nothing, then ``report``. The tables are the surface of each
    signature fitted to its known cells (``surface.surface_values``)."""

    def __init__(self, cells: Iterable[Cell]) -> None:
        self._signatures = [SignatureDesign(group) for group in group_by_signature(cells)]

    def next_cells(self, known: Known) -> list[Cell]:
        return [cell for signature in self._signatures for cell in signature.next_cells(known)]

    def report(self, known: Known, rounds: int) -> AdaptiveReport:
        errors: list[tuple[float, CellKey]] = []
        noise: list[float] = []
        complete = capped = timed = 0
        for signature in self._signatures:
            count = int(signature.timed(known).sum())
            timed += count
            if count == len(signature.cells):
                complete += 1
                continue
            check = signature.held_back(known)
            noise.append(check.noise)
            capped += not check.settled
            errors += [(abs(e), c.key()) for c, e in zip(check.cells, check.errors)]
        return AdaptiveReport(
            "surface", sum(len(s.cells) for s in self._signatures), timed, rounds,
            len(self._signatures), complete, **error_summary(errors),
            noise=float(np.mean(noise)) if noise else None, capped=capped)


def describe(report: dict | None) -> str | None:
    """One line on an ``AdaptiveReport`` (JSON) for the CLI and prune's summary."""
    if not report:
        return None
    share = report["cells_timed"] / max(report["cells_needed"], 1)
    line = (f"adaptive cells ({report['design']}): {report['cells_timed']} of "
            f"{report['cells_needed']} cells timed or cached ({share:.0%}) in {report['rounds']} "
            f"round{'s' * (report['rounds'] != 1)}")
    if report["held_back"]:
        line += (f"; held-back error mean {100 * report['mean_rel_error']:.1f}%, max "
                 f"{100 * report['max_rel_error']:.1f}% over {report['held_back']} cells")
    if report.get("noise") is not None:
        line += f" (noise level {100 * report['noise']:.1f}%)"
    if report.get("capped"):
        line += f"; {report['capped']} signature(s) stopped at the cap above it"
    return line
