"""Adaptive cells for measured tables: a coarse grid, the steps between its cells found by
bisection, and every other cell filled by the staircase.

Where latency is not smooth in the widths (GPU backends, ``smooth_latency`` False: kernels tile
channels, so latency is flat across a tile and jumps at its edge) the tables keep measured
values, which no surface may replace. Per layer signature, on the sorted distinct widths of each
axis (one axis for a depthwise conv):

1. **Coarse grid**: every ``STEP``-th width per axis from the narrowest, plus the widest
   (``interpolate.coarse_axis``), all pairs timed.
2. **Bisection**: for each pair of neighbouring coarse widths (a, b) on one axis, the coarse
   lines of the other axis on which the cells at a and b differ by more than noise (``differ``);
   on the line where they differ most, the widths between are bisected: the middle one is
   timed, and each half whose ends still differ is bisected again, until every step between a
   and b lies between two adjacent widths. The width after each such step starts a new plateau.
3. **Plateau pairs**: the steps of both axes cut the table into blocks of cells (an out-plateau
   by an in-plateau); a block holding no timed cell gets one (its first cell).
4. **Fill**: a timed cell keeps its measurement; every other cell takes the median of the timed
   cells of its block: the step function, not a smooth surface.

This assumes that a step's position along one axis does not depend on the other width (a
kernel tiles each width on its own) and that latency between two equal coarse neighbours does
not rise and fall back (such a bump is missed). A gradual rise is no staircase: its neighbours
keep differing, bisection times every width along its line, and the blocks shrink to single
cells, so it costs up to the full grid but stays measured. The held-back error is each timed
cell of a block with several against the median of the others (what the step function would
have given it). Like ``adaptive.py``, every step is a function of the needed cells and the known
measurements only, so cached cells count and a second run times nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from mdp_trt.latency.protocol import Measurement
from mdp_trt.latency.tables.adaptive import AdaptiveReport, error_summary
from mdp_trt.latency.tables.cells import Cell, CellKey
from mdp_trt.latency.tables.interpolate import coarse_axis
from mdp_trt.signature import group_by_signature

__all__ = ["StaircaseDesign", "differ", "STEP", "STEP_FLOOR"]

STEP = 4  # coarse grid: every 4th width per axis (two bisections between neighbours)
STEP_FLOOR = 0.02  # smaller relative differences are never a step (timing jitter)

Known = Mapping[CellKey, Measurement]
Point = tuple[int, int]  # (out, in) width; in is 0 along a depthwise conv's one axis


def differ(a: Measurement, b: Measurement) -> bool:
    """Whether two cells' latencies differ by more than noise: more than ``STEP_FLOOR`` and half
    the larger p10-p90 spread, relative to the faster."""
    tolerance = max(STEP_FLOOR, a.spread / 2, b.spread / 2)
    return abs(a.median_ms - b.median_ms) > tolerance * min(a.median_ms, b.median_ms)


def _point(axis: int, at: int, width: int) -> Point:
    """The point at ``width`` along ``axis`` (0: out, 1: in) and ``at`` on the other axis."""
    return (width, at) if axis == 0 else (at, width)


@dataclass(frozen=True)
class _Line:
    """The cells of one bisection: along ``axis`` from one coarse width to the next, at ``at``
    on the other axis; ``widths`` are those between (both ends included) that the signature
    needs there."""

    axis: int
    at: int
    widths: tuple[int, ...]

    def point(self, width: int) -> Point:
        return _point(self.axis, self.at, width)


class _Signature:
    """One signature's cells on their (out, in) points, with the coarse grid over them."""

    def __init__(self, cells: Sequence[Cell]) -> None:
        self.cells = tuple(cells)
        depthwise = cells[0].signature.depthwise
        self.points: dict[Point, Cell] = {
            (c.out_channels, 0 if depthwise else c.in_channels): c for c in cells}
        signature = cells[0].signature.key()  # one signature: its (costly) key once
        self.keys: dict[Point, CellKey] = {
            point: (signature, c.out_channels, c.in_channels) for point, c in self.points.items()}
        self.coarse = tuple(coarse_axis((p[axis] for p in self.points), STEP) for axis in (0, 1))

    def known(self, point: Point, known: Known) -> Measurement | None:
        key = self.keys.get(point)
        return None if key is None else known.get(key)

    def coarse_points(self) -> list[Point]:
        return [(o, i) for o in self.coarse[0] for i in self.coarse[1] if (o, i) in self.points]

    def lines(self, known: Known) -> Iterator[_Line]:
        """For each pair of neighbouring coarse widths that differ on some coarse line, the line
        where they differ most (by log ratio; the first of equals)."""
        for axis in (0, 1):
            coarse, across = self.coarse[axis], self.coarse[1 - axis]
            widths = sorted({p[axis] for p in self.points})
            for a, b in zip(coarse, coarse[1:]):
                jumps = []
                for at in across:
                    ends = [self.known(_point(axis, at, w), known) for w in (a, b)]
                    if None not in ends and differ(*ends):
                        jumps.append((abs(np.log(ends[1].median_ms / ends[0].median_ms)), -at))
                if jumps:
                    at = -max(jumps)[1]
                    yield _Line(axis, at, tuple(w for w in widths if a <= w <= b
                                                and _point(axis, at, w) in self.points))

    def bisections(self, known: Known) -> list[Point]:
        """The middle point of every stretch of a line whose timed ends differ and are not yet
        neighbours."""
        wanted = []
        for line in self.lines(known):
            timed = [(k, m) for k, w in enumerate(line.widths)
                     if (m := self.known(line.point(w), known)) is not None]
            for (j, left), (k, right) in zip(timed, timed[1:]):
                if k - j > 1 and differ(left, right):
                    wanted.append(line.point(line.widths[(j + k) // 2]))
        return wanted

    def plateaus(self, known: Known) -> tuple[list[int], list[int]]:
        """Per axis, the widths where a new plateau starts (after a step found on a line)."""
        starts: tuple[set[int], set[int]] = (set(), set())
        for line in self.lines(known):
            timed = [(w, m) for w in line.widths
                     if (m := self.known(line.point(w), known)) is not None]
            starts[line.axis].update(w for (_, left), (w, right) in zip(timed, timed[1:])
                                     if differ(left, right))
        return sorted(starts[0]), sorted(starts[1])

    def blocks(self, known: Known) -> list[list[Point]]:
        """The points of each (out-plateau, in-plateau) block, in cell order."""
        starts = self.plateaus(known)
        blocks: dict[tuple[int, ...], list[Point]] = {}
        for point in self.points:
            block = tuple(int(np.searchsorted(s, w, side="right")) for s, w in zip(starts, point))
            blocks.setdefault(block, []).append(point)
        return list(blocks.values())

    def next_cells(self, known: Known) -> list[Cell]:
        """Steps 1-3 of the module doc, whichever is not done yet; empty when done."""
        stages = (self.coarse_points, lambda: self.bisections(known),
                  lambda: [block[0] for block in self.blocks(known)
                           if not any(self.keys[p] in known for p in block)])
        for stage in stages:
            # a stage's cells are asked for only once the stages before it are done
            missing = [p for p in dict.fromkeys(stage()) if self.keys[p] not in known]
            if missing:
                return [self.points[p] for p in missing]
        return []

    def fill(self, known: Known) -> tuple[dict[CellKey, float], list[tuple[float, CellKey]]]:
        """Every cell's value (step 4) and the held-back errors of blocks with several timed
        cells."""
        values: dict[CellKey, float] = {}
        errors: list[tuple[float, CellKey]] = []
        for block in self.blocks(known):
            keys = [self.keys[p] for p in block]
            timed = {key: known[key].median_ms for key in keys if key in known}
            level = float(np.median(list(timed.values())))
            values.update({key: timed.get(key, level) for key in keys})
            if len(timed) > 1:
                errors += [(abs(float(np.median([v for o, v in timed.items() if o != key]))
                                / ms - 1), key) for key, ms in timed.items()]
        return values, errors

    def timed(self, known: Known) -> int:
        return sum(key in known for key in self.keys.values())


class StaircaseDesign:
    """The staircase design over all signatures of a table plan: ``next_cells(known)`` per
    round until it returns nothing, then ``fill`` and ``report``."""

    def __init__(self, cells: Iterable[Cell]) -> None:
        self._signatures = [_Signature(group) for group in group_by_signature(cells)]

    def next_cells(self, known: Known) -> list[Cell]:
        return [cell for signature in self._signatures for cell in signature.next_cells(known)]

    def fill(self, known: Known) -> dict[CellKey, float]:
        return {key: value for signature in self._signatures
                for key, value in signature.fill(known)[0].items()}

    def report(self, known: Known, rounds: int) -> AdaptiveReport:
        errors = [e for signature in self._signatures for e in signature.fill(known)[1]]
        timed = [signature.timed(known) for signature in self._signatures]
        return AdaptiveReport(
            "staircase", sum(len(s.cells) for s in self._signatures), sum(timed), rounds,
            len(self._signatures),
            sum(count == len(s.cells) for count, s in zip(timed, self._signatures)),
            **error_summary(errors))
