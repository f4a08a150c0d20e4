"""Bilayer latency tables: L_l[i, j] for every layer of an analysis, filled from the cache.

For layer l with output group g and input group p, ``tables[l][i][j]`` is the latency (ms) of
l with the channel count of option i of g as outputs and option j of p as inputs: as measured,
or on CPU backends the value at those widths of a surface fitted to the measured cells of l's
signature (``surface.py``), which averages out their noise. Row 0
and column 0 are zeros (option 0 keeps no channel; the solver never picks it, and a removed
block's layers are dropped by the block variable, not by these zeros). A layer whose input is a
graph input (``in_group is None``) has two columns ``[0, value]`` so that indexing is uniform:
its real column is 1, at the layer's full input width.

Depthwise convs: a channel survives only if both its input and output do, so cell (i, j) is the
depthwise conv at ``min(channels_i, channels_j)``; with the input and output in one group (the
usual case) only the diagonal is ever selected and no off-diagonal cell costs a measurement.

``profile_tables`` measures only the cells the cache lacks, after deduplicating cells across
layers with equal signatures. The cell list is deterministic: layers in analysis order, then
rows, then columns, first occurrence wins. Which of them it times is a design: every cell
(``cells="all"``), adaptive cells timed in rounds until the held-back cells say the tables are
at the noise level (``adaptive.py`` for fitted surfaces, the default on CPU backends;
``staircase.py`` for measured tables), or with ``interpolate=k`` a coarse grid (every k-th width)
plus a few held-back cells, the rest interpolated (``interpolate.py``). Cells are timed under
the reference-cell drift guard (``drift.py``), here or on each worker that a ``measure_cells``
callable hands them to.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field, replace
from typing import Literal, get_args

from mdp_trt.analysis import Analysis, ChannelGroup, Layer, check_layer, layer_out_widths
from mdp_trt.errors import InputError
from mdp_trt.latency.protocol import LatencyBackend, Measurement
from mdp_trt.latency.tables.adaptive import AdaptiveDesign
from mdp_trt.latency.tables.adaptive import describe as describe_adaptive
from mdp_trt.latency.tables.cache import LatencyCache
from mdp_trt.latency.tables.cells import Cell, CellKey
from mdp_trt.latency.tables.drift import (DriftHistory, DriftLog, DriftPolicy, measure_guarded,
                                          workers_record)
from mdp_trt.latency.tables.interpolate import CoarsePlan, monotone_values
from mdp_trt.latency.tables.overhead import OVERHEAD_CELL, net_of_overhead
from mdp_trt.latency.tables.staircase import StaircaseDesign
from mdp_trt.latency.tables.surface import surface_values
from mdp_trt.signature import LayerSignature

__all__ = ["LatencyTables", "LayerCells", "MeasuredChunk", "MeasureCells", "plan_cells",
           "required_cells", "profile_tables", "check_cells", "Cells", "CELLS", "FORMAT"]

log = logging.getLogger(__name__)

FORMAT = "mdp-latency-tables/1"

# Which cells profile_tables times: as few as the tables need, in rounds, or every needed cell
Cells = Literal["adaptive", "all"]
CELLS: tuple[str, ...] = get_args(Cells)


@dataclass(frozen=True)
class MeasuredChunk:
    """Cells that ``worker`` timed in one run under the drift guard: ``(cell, measurement,
    drift)`` each, drift being the guard's value for that measurement (None: unguarded), and
    the guard's log of the run."""

    worker: str
    cells: tuple[tuple[Cell, Measurement, float | None], ...]
    log: DriftLog


# Measures cells elsewhere (e.g. on Ray workers) under a drift policy (None: no guard), yielding
# each chunk of them as soon as it is done.
MeasureCells = Callable[[Sequence[Cell], DriftPolicy | None], Iterator[MeasuredChunk]]


@dataclass(frozen=True)
class LayerCells:
    """Which cell fills each entry of one layer's table.

    ``out_options``/``in_options`` are channel counts per option (index 0 = 0 channels);
    ``cells[i][j]`` is the cell of entry (i, j), None on row/column 0.
    """

    layer: str
    out_options: tuple[int, ...]
    in_options: tuple[int, ...]
    cells: tuple[tuple[Cell | None, ...], ...]


@dataclass(frozen=True)
class LatencyTables:
    """Per-layer bilayer latency tables in milliseconds.

    ``tables[name][i][j]``: rows = output option 0..K_out, columns = input option 0..K_in (two
    columns when the layer reads a graph input). ``channels[name]`` = [channel count per output
    option, channel count per input option]. ``cells_measured``/``cells_cached`` count distinct
    cells the tables rest on that this run measured / found in the cache, ``cells_needed`` the
    distinct cells of the full grid (0 in files written before it was recorded); ``seconds`` is
    the wall time of the run. ``adaptive`` is the ``AdaptiveReport`` (JSON) of adaptive cells,
    ``interpolation`` the ``InterpolationReport`` (JSON) of coarse tables, both None for full
    ones; ``call_overhead_ms`` what was taken out of every entry as the per-call overhead of a
    cell (``overhead.py``; 0: none); ``drift`` the ``DriftLog`` (JSON) of the cells measured by
    this run, or for cells measured elsewhere ``drift.workers_record`` (the same
    ``max_drift``/``remeasured_cells``/``unresolved_batches``, plus ``workers``: each worker's
    log).
    """

    backend: str
    fingerprint: dict
    group_size: int
    tables: dict[str, list[list[float]]]
    cells_measured: int = 0
    cells_cached: int = 0
    seconds: float = 0.0
    channels: dict[str, list[list[int]]] = field(default_factory=dict)
    interpolation: dict | None = None
    drift: dict | None = None
    monotone: bool = False  # values made non-decreasing in both widths (profile_tables)
    surface: dict | None = None  # SurfaceReport (JSON) when cells are a fitted surface
    cells_needed: int = 0
    adaptive: dict | None = None
    call_overhead_ms: float = 0.0

    @property
    def held_back_error(self) -> tuple[float, float] | None:
        """(mean, max) relative error of the tables on held-back cells, adaptive or
        interpolated; None for full tables or without any held-back cell."""
        report = self.adaptive or self.interpolation
        if not report or not report["held_back"]:
            return None
        return report["mean_rel_error"], report["max_rel_error"]

    def layer_latency(self, name: str, out_option: int, in_option: int) -> float:
        """L_name[out_option, in_option] in ms (in_option is 1 for a layer fed by the input)."""
        try:
            table = self.tables[name]
        except KeyError:
            raise KeyError(f"no latency table for layer {name!r}") from None
        if not (0 <= out_option < len(table) and 0 <= in_option < len(table[0])):
            raise IndexError(
                f"option ({out_option}, {in_option}) outside the {len(table)} x {len(table[0])} "
                f"latency table of layer {name!r}")
        return table[out_option][in_option]

    def scaled(self, factor: float) -> "LatencyTables":
        """The same tables with every cell multiplied by ``factor`` (a calibration's scale)."""
        return replace(self, tables={name: [[factor * v for v in row] for row in table]
                                     for name, table in self.tables.items()})

    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "backend": self.backend,
            "fingerprint": self.fingerprint,
            "group_size": self.group_size,
            "tables": self.tables,
            "channels": self.channels,
            "cells_measured": self.cells_measured,
            "cells_cached": self.cells_cached,
            "seconds": self.seconds,
            "interpolation": self.interpolation,
            "drift": self.drift,
            "monotone": self.monotone,
            "surface": self.surface,
            "cells_needed": self.cells_needed,
            "adaptive": self.adaptive,
            "call_overhead_ms": self.call_overhead_ms,
        }

    @classmethod
    def from_json(cls, data: dict) -> "LatencyTables":
        if data.get("format") != FORMAT:
            raise InputError(f"latency tables format {data.get('format')!r} is not {FORMAT!r}")
        return cls(
            backend=data["backend"],
            fingerprint=dict(data["fingerprint"]),
            group_size=int(data["group_size"]),
            tables={k: [[float(v) for v in row] for row in m] for k, m in data["tables"].items()},
            cells_measured=int(data.get("cells_measured", 0)),
            cells_cached=int(data.get("cells_cached", 0)),
            seconds=float(data.get("seconds", 0.0)),
            channels={k: [list(map(int, axis)) for axis in v]
                      for k, v in data.get("channels", {}).items()},
            interpolation=data.get("interpolation"),
            drift=data.get("drift"),
            monotone=bool(data.get("monotone", False)),
            surface=data.get("surface"),
            cells_needed=int(data.get("cells_needed", 0)),
            adaptive=data.get("adaptive"),
            call_overhead_ms=float(data.get("call_overhead_ms", 0.0)),
        )


def _group(groups: dict[int, ChannelGroup], layer: Layer, gid: int, role: str) -> ChannelGroup:
    try:
        return groups[gid]
    except KeyError:
        raise InputError(f"layer {layer.name!r}: its {role} group {gid} is not in the analysis "
                         "(re-run analyze)") from None


def _layer_cells(layer: Layer, groups: dict[int, ChannelGroup], group_size: int) -> LayerCells:
    sig = layer.signature
    out_group = _group(groups, layer, layer.out_group, "output")
    in_group = None if layer.in_group is None else _group(groups, layer, layer.in_group, "input")
    check_layer(layer, out_group, in_group)
    # A layer producing a part of its group keeps the plan's share of that part.
    out_options = tuple(layer_out_widths(layer, out_group, out_group.options(group_size)))
    if in_group is None:
        in_options: tuple[int, ...] = (0, sig.in_channels)
    else:
        # A Gemm after a Flatten reads in_stride (= H*W) weight columns per channel.
        in_options = tuple(c * layer.in_stride for c in in_group.options(group_size))
    if sig.conv_group > 1 and not sig.depthwise:
        bad = [c for c in out_options[1:] + in_options[1:] if c % sig.conv_group]
        if bad:
            raise InputError(
                f"layer {layer.name!r} is a grouped Conv (group={sig.conv_group}) and cannot "
                f"have {bad[0]} channels; use a `group_size` that is a multiple of "
                f"{sig.conv_group}", parameters=("group_size",))
    rows = []
    for i, out_ch in enumerate(out_options):
        row: list[Cell | None] = []
        for j, in_ch in enumerate(in_options):
            if i == 0 or j == 0:
                row.append(None)
            elif sig.depthwise:
                width = min(out_ch, in_ch)
                row.append(Cell(sig, width, width))
            else:
                row.append(Cell(sig, out_ch, in_ch))
        rows.append(tuple(row))
    return LayerCells(layer.name, out_options, in_options, tuple(rows))


def plan_cells(analysis: Analysis, group_size: int) -> tuple[LayerCells, ...]:
    """The cell of every table entry of every layer, in analysis layer order."""
    if group_size < 1:
        raise InputError(f"`group_size` must be at least 1, got {group_size}",
                         parameters=("group_size",))
    groups = {g.id: g for g in analysis.groups}
    return tuple(_layer_cells(layer, groups, group_size) for layer in analysis.layers)


def required_cells(plan: tuple[LayerCells, ...]) -> list[Cell]:
    """Distinct cells of a plan (equal signatures share cells), deterministic order."""
    seen: dict[tuple[str, int, int], Cell] = {}
    for layer in plan:
        for row in layer.cells:
            for cell in row:
                if cell is not None and cell.key() not in seen:
                    seen[cell.key()] = cell
    return list(seen.values())


def _progress(enabled: bool):
    if not enabled:
        return None
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("cells"), TimeElapsedColumn(), TextColumn("left"),
                    TimeRemainingColumn(), console=Console(stderr=True))


def check_cells(cells: str | None, interpolate: int | None) -> None:
    """``cells`` must be one of ``CELLS`` (or None: the default) and not come with
    ``interpolate``, a cell design of its own; checked before anything is measured."""
    if cells is not None and cells not in CELLS:
        raise InputError(f"`cells` {cells!r}: choose {' or '.join(CELLS)}",
                         parameters=("cells",))
    if cells is not None and interpolate is not None:
        raise InputError("`interpolate` K is a cell design of its own: give it or `cells`, "
                         "not both", parameters=("cells", "interpolate"))


@dataclass(frozen=True)
class _Listed:
    """A design that wants a fixed list of cells (all of them, or an interpolation grid)."""

    cells: tuple[Cell, ...]

    def next_cells(self, known: Mapping[CellKey, Measurement]) -> list[Cell]:
        return [cell for cell in self.cells if cell.key() not in known]


class _Timer:
    """Times the cells each round asks for, here under the drift guard or through
    ``measure_cells``, caching each as soon as it is timed. The backend, and ``measure_cells``
    where it is a context (Ray's cluster), are entered on the first cell to time and left on
    exit: they serve every round. One progress bar runs across rounds."""

    def __init__(self, backend: LatencyBackend, cache: LatencyCache, drift: DriftPolicy | None,
                 measure_cells: MeasureCells | None, progress: bool) -> None:
        self.backend, self.cache, self.drift = backend, cache, drift
        self.measure_cells = measure_cells
        self.fp = backend.fingerprint()
        self.rounds = self.measured = self.uncounted = 0
        self._local: list[DriftLog] = []
        self._history = DriftHistory()  # every local round is guarded against the same quiet speed
        self._workers: dict[str, list[DriftLog]] = {}
        self._stack = ExitStack()
        self._bar = _progress(progress)
        self._task = None

    def __enter__(self) -> "_Timer":
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._bar.stop()
        self._stack.close()

    def time(self, cells: Sequence[Cell], known: dict[CellKey, Measurement], *,
             counted: bool = True) -> None:
        """Time ``cells`` (none of them in ``known``) and add each to ``known``; ``counted``
        False keeps them out of the tables' cell counts (the overhead cell)."""
        if not counted:
            self.uncounted += len(cells)
        if self.rounds == 0:
            self._stack.enter_context(self.backend)
            if isinstance(self.measure_cells, AbstractContextManager):  # e.g. a Ray cluster,
                self._stack.enter_context(self.measure_cells)  # kept across the rounds
        self.rounds += 1
        self.measured += len(cells)
        if self._bar is not None:
            if self._task is None:
                self._bar.start()
                self._task = self._bar.add_task(f"profiling {self.backend.name}", total=0)
            self._bar.update(self._task, total=self.measured,
                             description=f"profiling {self.backend.name}, round {self.rounds}")

        def store(index: int, m: Measurement, cell_drift: float | None) -> None:
            cell = cells[index]
            self.cache.put(self.fp, cell.signature, cell.out_channels, cell.in_channels, m,
                           weights=self.backend.weights, drift=cell_drift)
            # the drift guard calls again when a repeat is faster: count a cell once
            if self._task is not None and cell.key() not in known:
                self._bar.advance(self._task)
            known[cell.key()] = m

        if self.measure_cells is None:
            self._local.append(measure_guarded(
                self.backend, [(c.signature, c.out_channels, c.in_channels) for c in cells],
                store, policy=self.drift, history=self._history))
            return
        index = {cell.key(): k for k, cell in enumerate(cells)}
        for chunk in self.measure_cells(cells, self.drift):
            for cell, m, cell_drift in chunk.cells:
                store(index[cell.key()], m, cell_drift)
            self._workers.setdefault(chunk.worker, []).append(chunk.log)
        absent = [c for c in cells if c.key() not in known]
        if absent:
            raise RuntimeError(f"measure_cells returned {len(cells) - len(absent)} of "
                               f"{len(cells)} cells; first missing: {absent[0]}")

    @property
    def counted(self) -> int:
        """Cells timed for the tables (not the overhead cell)."""
        return self.measured - self.uncounted

    def drift_record(self) -> dict | None:
        """The drift guard's record of every round (None: nothing timed)."""
        if self._workers:
            return workers_record(self._workers)
        return DriftLog.joined(self._local).to_json() if self._local else None


def profile_tables(analysis: Analysis, *, group_size: int, backend: LatencyBackend,
                   cache: LatencyCache, progress: bool = True, cells: Cells | None = None,
                   interpolate: int | None = None, holdout: int = 2,
                   drift: DriftPolicy | None = DriftPolicy(),
                   measure_cells: MeasureCells | None = None,
                   monotone: bool | None = None, surface: bool | None = None,
                   call_overhead: bool | None = None) -> LatencyTables:
    """Fill every layer's table, measuring only the cells ``cache`` lacks.

    Each measured cell is stored in the cache as soon as it is measured, so an interrupted run
    (an exception, Ctrl-C) keeps every finished cell and a re-run resumes where it stopped.
    ``cells``: "all" times every needed cell; "adaptive" times them in rounds, only as many as
    the tables need: on a fitted surface (``adaptive.py``), or on measured tables a coarse grid
    and the steps between its cells (``staircase.py``); None: adaptive where the tables are a
    fitted surface (``surface``), all where they are measured cells.
    ``interpolate``: measure every k-th width per axis (plus ``holdout`` held-back cells per
    signature) and interpolate the rest (not with ``cells``). ``drift``: the reference-cell
    guard (None: none); each round is guarded on its own, so a round of fewer cells than a drift
    batch is not. Cells are cached and looked up under the backend's ``weights`` mode.
    ``measure_cells``: measures the missing cells elsewhere (e.g. ``ray_runner``) under the
    ``drift`` policy, yielding each ``MeasuredChunk`` as it finishes, on backends whose
    fingerprint is ``backend``'s; None measures them here on ``backend``. Each cell is cached with
    its worker's drift value, as soon as its chunk arrives; it is called once per round.
    ``monotone``: make each signature's medians non-decreasing in both widths (None: the
    backend's ``monotone_latency``). On a CPU a wider layer is never faster, so a cell that reads
    faster than a narrower neighbour is noise, and the exact solver seeks such cells out: on
    ResNet-50 at 224 px (ORT CPU) 18% of neighbouring cells were such dips (median 8%) and the
    solver's plans came out under-predicted by up to 18%. GPU kernels tile channels, so there a
    wider layer can be faster and the dips are kept. Applied to interpolated tables too (their
    grid cells otherwise keep their measurement). The cache keeps the raw medians.
    ``surface``: each signature's cells become a surface fitted to its measured cells
    (``surface.py``; None: the backend's ``smooth_latency``); with ``interpolate`` the surface is
    fitted to the grid cells alone, so the held-back error is the surface's. Before ``monotone``.
    ``call_overhead``: where cells carry a per-call overhead (None: the backend's
    ``call_overhead``; never with cold weights), the time of ``overhead.OVERHEAD_CELL`` (cached
    like the others, counted in no total) is taken out of every entry, before ``monotone``.
    """
    check_cells(cells, interpolate)
    start = time.perf_counter()
    plan = plan_cells(analysis, group_size)
    needed = required_cells(plan)
    surface = backend.smooth_latency if surface is None else surface
    monotone = backend.monotone_latency if monotone is None else monotone
    fp = backend.fingerprint()
    by_signature: dict[str, dict] = {}

    def cached(cell: Cell) -> Measurement | None:
        sig_key = cell.signature.key()
        if sig_key not in by_signature:
            by_signature[sig_key] = cache.get_many(fp, cell.signature, weights=backend.weights)
        return by_signature[sig_key].get((cell.out_channels, cell.in_channels))

    known = {cell.key(): hit for cell in needed if (hit := cached(cell)) is not None}
    coarse = adaptive = stairs = None
    if interpolate is not None:
        coarse = CoarsePlan(needed, step=interpolate, holdout=holdout, cached=known)
    elif surface and cells != "all":
        adaptive = AdaptiveDesign(needed)
    elif cells == "adaptive":
        # measured tables (GPU backends, `surface` False) are filled by their staircase
        adaptive = stairs = StaircaseDesign(needed)
    design = adaptive or _Listed(tuple(needed if coarse is None else coarse.to_measure()))
    log.info("%d layers need %d distinct cells, %d of them cached; %s on %s", len(plan),
             len(needed), len(known),
             "adaptive cells" if adaptive else f"interpolation step {interpolate}" if coarse
             else "every cell", backend.name)
    with _Timer(backend, cache, drift, measure_cells, progress) as timer:
        while wanted := design.next_cells(known):
            # an interpolation grid may hold cells no table needs, so not looked up yet
            known.update({c.key(): hit for c in wanted if (hit := cached(c)) is not None})
            missing = [c for c in wanted if c.key() not in known]
            if missing:
                timer.time(missing, known)
        rounds = timer.rounds  # the design's rounds, not the overhead cell's
        overhead = _call_overhead(backend, cached, timer, call_overhead)
    medians = {key: m.median_ms for key, m in known.items()}
    values = coarse.fill(medians) if coarse else stairs.fill(known) if stairs else medians
    fit = None
    if surface:
        values, fit = surface_values(
            needed, medians if coarse is None else coarse.grid_values(medians), values)
    if overhead:
        values = net_of_overhead(values, overhead.median_ms)
    if monotone:
        values = monotone_values(needed, values)
    tables = {
        layer.layer: [[0.0 if cell is None else values[cell.key()] for cell in row]
                      for row in layer.cells]
        for layer in plan
    }
    channels = {layer.layer: [list(layer.out_options), list(layer.in_options)] for layer in plan}
    report = None if coarse is None else coarse.report(medians, values)
    if report is not None and report.held_back:
        log.info("interpolated tables (step %d): %d cells timed, %d interpolated; error on %d "
                 "held-back cells: mean %.1f%%, max %.1f%%", interpolate, report.cells_grid,
                 report.cells_interpolated, report.held_back, 100 * report.mean_rel_error,
                 100 * report.max_rel_error)
    design_report = None if adaptive is None else adaptive.report(known, rounds).to_json()
    if design_report:
        log.info("%s", describe_adaptive(design_report))
    used = len(coarse.to_measure()) if coarse else sum(c.key() in known for c in needed)
    return LatencyTables(backend=backend.name, fingerprint=fp.to_json(), group_size=group_size,
                         tables=tables, cells_measured=timer.counted,
                         cells_cached=used - timer.counted,
                         seconds=time.perf_counter() - start, channels=channels,
                         interpolation=None if report is None else report.to_json(),
                         drift=timer.drift_record(), monotone=bool(monotone),
                         surface=None if fit is None else fit.to_json(),
                         cells_needed=len(needed), adaptive=design_report,
                         call_overhead_ms=overhead.median_ms if overhead else 0.0)


def _call_overhead(backend: LatencyBackend, cached: Callable[[Cell], Measurement | None],
                   timer: "_Timer", wanted: bool | None) -> Measurement | None:
    """The overhead cell's timing (from the cache, else timed now) where the cells carry a
    call's overhead (``wanted``; None: the backend's ``call_overhead``); None where they do not,
    or with cold weights (a replicated layer spreads the call over its copies)."""
    wanted = backend.call_overhead if wanted is None else wanted
    if not wanted or backend.weights != "hot":
        return None
    hit = cached(OVERHEAD_CELL)
    if hit is None:
        timed: dict[CellKey, Measurement] = {}
        timer.time([OVERHEAD_CELL], timed, counted=False)
        hit = timed[OVERHEAD_CELL.key()]
    return hit
