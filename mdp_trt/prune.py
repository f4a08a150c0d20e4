"""The whole pipeline: analyse, score, profile, solve, cut, verify, measure, report.

Everything is written into a staging folder beside ``out_dir`` and swapped into place only
when the run succeeded (``mdp_trt.outputs``: never over an input or a folder of the user's
files; an error, Ctrl-C or SIGTERM never leaves a half-written output directory).
The pruned model is timed together with the original (interleaved, ``benchmark_models``), and
its time scaled to the machine state of the baseline measurement (``paired_measure``); when it
misses the budget (over by more than ``tolerance``, or under by more than twice that), the target
handed to the solver is adjusted from the measured points and the problem re-solved, at most
``max_rounds`` times (see ``_closed_loop``). The latency model of a plan (table sums, their
calibration, the paired measurement) is ``mdp_trt.prediction``'s.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Literal

import onnx_ir as ir

from mdp_trt.analysis import Analysis, check_max_options, limit_options, require_prunable
from mdp_trt.bench.measure import benchmark_model, benchmark_models
from mdp_trt.errors import InfeasibleBudget, InputError
from mdp_trt.extras import require
from mdp_trt.graph import check_finite_weights, initializer_bytes, load_model, save_model
from mdp_trt.importance import IMPORTANCE_METHODS, Importance, ImportanceMethod, score_channels
from mdp_trt.latency.backends.registry import backend_options, cell_weights, get_backend
from mdp_trt.latency.backends.timing import MODEL_POLICY
from mdp_trt.latency.protocol import Ratio
from mdp_trt.latency.tables import Cells, LatencyTables, check_cells, profile_tables
from mdp_trt.latency.tables.cache import LatencyCache
from mdp_trt.latency.tables.ray_runner import cells_option, check_ray_flags
from mdp_trt.outputs import output_folder
from mdp_trt.passes import analyze, apply_plan, mask_model, verify
from mdp_trt.passes.reachability import keep_outputs_reachable
from mdp_trt.prediction import CALIBRATIONS, PairedTiming, calibrate, paired_measure, table_sum
from mdp_trt.report import Candidate, ProfileSummary, Report, Round, SolveOutcome
from mdp_trt.solve import load_problem
from mdp_trt.solve.formulate import decode_plan, formulate, removable_blocks
from mdp_trt.solve.methods import METHODS, Method, method_problem, removes_blocks, solve_method
from mdp_trt.solve.registry import check_solver

__all__ = ["PruneOptions", "prune"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PruneOptions:
    budget: float | None = None  # fraction of the measured baseline latency
    budget_ms: float | None = None
    backend: str = "ort-cpu"
    threads: int = 1
    precision: str = "fp32"  # fp16/int8 on backends that support them (torch-*, tensorrt)
    channels_last: bool = False  # torch backends only
    weights: Literal["hot", "cold", "auto"] = "hot"  # ort-cpu cells: weights cached or streamed
    importance: ImportanceMethod = "magnitude"
    calib_data: Path | None = None  # data for taylor importance (.npz or image folder)
    method: Method = "mdp"  # mdp, or a baseline: mdp-channels, halp, uniform (solve/methods.py)
    group_size: int = 16
    max_options: int | None = None  # coarser units for wider groups (analysis.limit_options)
    # also cut channels that LayerNorms normalise over (a transformer's embedding width)
    prune_embedding: bool = False
    # latency tables: cells timed adaptively / every cell (None: adaptive where the tables are
    # a fitted surface, i.e. CPU backends; tables/adaptive.py, tables/staircase.py)
    cells: Cells | None = None
    interpolate: int | None = None  # latency tables: every k-th width measured (not with cells)
    surface: bool | None = None  # tables: fitted surface / measured cells (None: the backend's)
    ray: str | None = None  # Ray cluster measuring the table cells ("local", "auto", ray://...)
    workers: int | None = None  # Ray workers (None: one per GPU or per `threads` CPUs)
    solver: str = "exact"
    time_limit: float | None = None
    cache: Path | None = None
    input_shape: tuple[int, ...] | None = None
    verify_inputs: int = 3
    rtol: float = 1e-4
    calibration: Literal["per-layer", "two-point", "constant"] = "per-layer"  # prediction/calibration.py
    tolerance: float = 0.03  # re-solve when measured > budget * (1 + tolerance)
    max_rounds: int = 4
    measure_seconds: float = 3.0  # timed runs per whole-model measurement round (at least 30 runs)
    measure_rounds: int = 3  # whole-model rounds; the least disturbed one counts
    # at most this long per comparison of a candidate with the original (TimingPolicy.compare_s)
    compare_seconds: float = 30.0
    # A plan about to be accepted is timed in this many windows, this far apart, and its
    # slowest ratio counts (``_confirmed``: the ratio moves with the machine's state).
    confirm_windows: int = 3
    confirm_gap_seconds: float = 10.0
    force: bool = False
    resume: bool = False  # reuse the stages of the finished run in the output directory
    progress: bool = True


class _Stopwatch:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def _check_options(options: PruneOptions) -> None:
    if (options.budget is None) == (options.budget_ms is None):
        raise InputError("give exactly one of `budget` FRACTION or `budget_ms` MS",
                         parameters=("budget", "budget_ms"))
    if options.budget is not None and not 0 < options.budget <= 1:
        raise InputError(f"`budget` {options.budget} must be a fraction in (0, 1], e.g. 0.5",
                         parameters=("budget",))
    if options.budget_ms is not None and not (math.isfinite(options.budget_ms)
                                              and options.budget_ms > 0):
        raise InputError(f"`budget_ms` {options.budget_ms} must be a positive number of "
                         "milliseconds", parameters=("budget_ms",))
    if options.group_size < 1:
        raise InputError(f"`group_size` {options.group_size} must be >= 1",
                         parameters=("group_size",))
    check_max_options(options.max_options)
    check_cells(options.cells, options.interpolate)
    if options.importance not in IMPORTANCE_METHODS:
        raise InputError(f"`importance` {options.importance!r}: choose magnitude or taylor",
                         parameters=("importance",))
    if options.importance == "taylor":
        require("torch", "`importance` taylor", parameters=("importance",))
    if options.importance == "taylor" and options.calib_data is None:
        raise InputError("`importance` taylor scores channels on calibration data: pass "
                         "`calib_data` PATH (an .npz with x and optionally y, or a folder of "
                         "images)", parameters=("importance", "calib_data"))
    if options.confirm_windows < 1:
        raise InputError(f"`confirm_windows` {options.confirm_windows} must be >= 1 (1: a plan is "
                         "accepted on one timing)", parameters=("confirm_windows",))
    if not options.confirm_gap_seconds >= 0:
        raise InputError(f"`confirm_gap_seconds` {options.confirm_gap_seconds} must be >= 0",
                         parameters=("confirm_gap_seconds",))
    if options.method not in METHODS:
        raise InputError(f"`method` {options.method!r}: choose one of {', '.join(METHODS)}",
                         parameters=("method",))
    # The backend's own flags (--channels-last, --weights) and whether its runtime is here,
    # checked before a model is loaded.
    get_backend(options.backend, **backend_options(
        options.backend, threads=options.threads, precision=options.precision,
        channels_last=options.channels_last,
        weights="hot" if options.weights == "auto" else options.weights))
    if options.calibration not in CALIBRATIONS:
        raise InputError(f"`calibration` {options.calibration!r}: choose one of "
                         f"{', '.join(CALIBRATIONS)}", parameters=("calibration",))
    check_solver(options.solver, options.time_limit)
    check_ray_flags(options.ray, options.workers)
    if options.calib_data is not None and not options.calib_data.exists():
        raise InputError(f"`calib_data` {options.calib_data}: no such file or folder",
                         parameters=("calib_data",))


@dataclass(frozen=True)
class _Previous:
    """The saved stages of a finished run (``--resume``)."""

    folder: Path
    analysis: Analysis
    importance: Importance
    report: dict


def _previous_run(out_dir: Path) -> _Previous | None:
    if not out_dir.exists() or not any(out_dir.iterdir()):
        log.info("resume: %s holds no earlier run; every stage runs", out_dir)
        return None
    if not (out_dir / "report.json").is_file():
        raise InputError(f"`resume`: {out_dir} holds no finished prune run (no report.json); "
                         "choose its output folder, or drop `resume`", parameters=("resume",))
    stages = {"analysis.json": Analysis.load, "importance.json": Importance.load,
              "report.json": lambda path: json.loads(path.read_text())}
    loaded = []
    for name, load in stages.items():
        try:
            loaded.append(load(out_dir / name))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise InputError(f"`resume`: cannot read {out_dir / name} ({type(err).__name__}: "
                             f"{err}); run without `resume` (with `force` to replace it)",
                             parameters=("resume", "force")) from err
    return _Previous(out_dir, *loaded)


def _same_network(a: Analysis, b: Analysis) -> bool:
    """The same model file and graph (option units may differ: they do not change scores)."""
    def shape(x: Analysis):
        return (x.model, x.input_shape, [(l.name, l.out_group) for l in x.layers],
                [(g.producers, g.channels) for g in x.groups])
    return shape(a) == shape(b)


def _resumed_importance(previous: _Previous | None, analysis: Analysis,
                        options: PruneOptions) -> Importance | None:
    if previous is None:
        return None
    if not _same_network(previous.analysis, analysis):
        log.warning("resume: %s was pruned from another model or input shape; every stage "
                    "runs again", previous.folder)
        return None
    calib = str(options.calib_data) if options.calib_data is not None else None
    if previous.report.get("importance") != options.importance or previous.report.get("calib") != calib:
        log.info("resume: importance computed again (its method or calibration data changed)")
        return None
    return previous.importance


def prune(model_path: str | Path, out_dir: str | Path, options: PruneOptions) -> Report:
    """Prune ``model_path`` into ``out_dir`` (the rules of ``mdp_trt.outputs``: with
    ``options.force`` an earlier run's folder is replaced; with ``options.resume`` its files are
    and the files the user added there are kept)."""
    _check_options(options)
    model_path, out_dir = Path(model_path), Path(out_dir)
    inputs = [model_path, options.calib_data]
    with output_folder(out_dir, command="prune", inputs=inputs,
                       force=options.force or options.resume, keep_foreign=options.resume
                       ) as work, LatencyCache(options.cache) as cache:
        previous = _previous_run(out_dir) if options.resume else None
        report = _run(model_path, work, options, previous, cache)
        for staged in work.glob("original.onnx*"):
            staged.unlink()
    return report


def _run(model_path: Path, work: Path, options: PruneOptions, previous: _Previous | None,
         cache: LatencyCache) -> Report:
    clock = _Stopwatch()
    with clock.stage("analyze"):
        model = load_model(model_path, options.input_shape)
        check_finite_weights(model, model_path)
        analysis = limit_options(analyze(model, str(model_path),
                                         prune_normalised=options.prune_embedding),
                                 options.group_size, options.max_options)
        require_prunable(analysis)  # before anything is measured
        if removes_blocks(options.method):
            analysis = keep_outputs_reachable(model, analysis)
        analysis.save(work / "analysis.json")
        # The original, with its shape fixed, saved the same way as the pruned model will be,
        # so that both are timed under identical conditions.
        save_model(model, work / "original.onnx")
    # Latency cells need no resuming: the cache holds every cell measured before.
    resumed = _resumed_importance(previous, analysis, options)
    with clock.stage("importance"):
        importance = resumed or score_channels(model, analysis, options.importance,
                                               options.calib_data, options.progress)
        importance.save(work / "importance.json")
    weights = cell_weights(options.weights, options.backend, initializer_bytes(model))
    runtime_options = backend_options(options.backend, threads=options.threads,
                                      precision=options.precision,
                                      channels_last=options.channels_last, weights=weights)
    backend = get_backend(options.backend, **runtime_options,
                          model_policy=replace(MODEL_POLICY, budget_s=options.measure_seconds,
                                               compare_s=options.compare_seconds))
    measure = partial(benchmark_model, backend=backend, rounds=options.measure_rounds)
    with backend:
        with clock.stage("measure_baseline"):
            baseline = measure(work / "original.onnx")
        budget_ms = options.budget_ms if options.budget_ms is not None else options.budget * baseline.latency_ms
        with clock.stage("profile"):
            tables = profile_tables(analysis, group_size=options.group_size, backend=backend,
                                    cache=cache, progress=options.progress, cells=options.cells,
                                    interpolate=options.interpolate, surface=options.surface,
                                    measure_cells=cells_option(options.ray, options.workers,
                                                               backend, runtime_options))
            (work / "tables.json").write_text(json.dumps(tables.to_json()))
        with clock.stage("calibrate"):
            paired = paired_measure(partial(benchmark_models, backend=backend),
                                    work / "original.onnx", baseline.latency_ms)
            calibration = calibrate(
                model, analysis, importance, tables, group_size=options.group_size,
                baseline_ms=baseline.latency_ms, measure=lambda path: paired(path).ms,
                folder=work / "calibration", original=work / "original.onnx",
                mode=options.calibration, layer_shares=backend.layer_shares)
        context = _Context(model, analysis, importance, calibration.apply(tables), options, clock,
                           offset_ms=calibration.offset_ms, baseline_ms=baseline.latency_ms,
                           name=model_path.stem)
        rounds = _closed_loop(context, work, paired, budget_ms)
        rounds, best, status = _adopt_best_round(
            rounds, work, budget_ms * (1 + options.tolerance),
            partial(_confirmed, context=context, measure=paired))
        fingerprint = backend.fingerprint().to_json()
    plan, measured_ms = best.plan, best.measured_ms
    report = Report(
        model=str(model_path), backend=options.backend, device=fingerprint, threads=options.threads,
        group_size=options.group_size, max_options=options.max_options,
        importance=importance.method,
        baseline_latency_ms=baseline.latency_ms, budget_ms=budget_ms,
        budget_fraction=budget_ms / baseline.latency_ms,
        predicted_latency_ms=plan.predicted_ms, predicted_tables_ms=plan.tables_ms,
        predicted_offset_ms=plan.offset_ms, measured_latency_ms=measured_ms,
        fps_before=baseline.fps, fps_after=baseline.batch * 1000.0 / measured_ms,
        removed_blocks=list(plan.decoded.removed_block_names),
        kept_channels={g.name: [plan.decoded.kept_channels[g.name], g.channels]
                       for g in analysis.groups},
        objective=plan.objective, solver=plan.solver, profile=ProfileSummary.of(tables),
        verification=plan.verification, timings=clock.seconds,
        calibration=calibration,
        calib=str(options.calib_data) if options.calib_data is not None else None,
        weights=weights,
        resumed=["importance"] if resumed is not None else [],
        tolerance=options.tolerance,
        budget_status=status,
        measurement={**best.ratio.to_json(), "windows": list(best.windows)},
        warnings=[w for w in [calibration.note, *(r.warning for r in rounds), plan.verification.note] if w],
        rounds=[replace(r, adopted=r is best) for r in rounds],
        renormalised=[norm for g in analysis.groups if g.norms
                      and plan.decoded.kept_channels[g.name] < g.channels for norm in g.norms],
    )
    report.save(work / "report.json")
    return report


@dataclass(frozen=True)
class _Context:
    """What every closed-loop round of a run shares: the model and its stages, the calibrated
    tables (a plan's table sum plus ``offset_ms`` is its predicted latency), the options, the
    stage clock, the measured baseline and the problem's ``name``."""

    model: ir.Model
    analysis: Analysis
    importance: Importance
    tables: LatencyTables
    options: PruneOptions
    clock: _Stopwatch
    offset_ms: float
    baseline_ms: float
    name: str


def _closed_loop(context: _Context, work: Path, measure: Callable[[Path], PairedTiming],
                 budget_ms: float) -> list[Round]:
    """Solve, cut and measure; adjust the solver's target until the measurement fits the budget.

    The latency model (tables + constant calibrated on the measured original) is fixed; what the
    loop adjusts is the *target* handed to the solver. Measured latency is a monotone staircase
    in the target, so the target is found by regula falsi between the best point measured under
    the budget and the lowest point measured over it (the unpruned model is the first such point:
    its target is its own prediction, i.e. the baseline). A round far under the budget is also
    re-solved, to spend the budget on importance; a re-solve that returns a plan measured
    already moves the bracket past it (uniform pruning's few plans are steps wider than the
    guesses). Each round keeps its artefacts in its own directory until one is adopted.
    """
    options, baseline_ms = context.options, context.baseline_ms
    rounds: list[Round] = []
    confirm = partial(_confirmed, context=context, measure=measure)
    low, high = budget_ms * (1 - 2 * options.tolerance), budget_ms * (1 + options.tolerance)

    def attempt(index: int, target: float) -> tuple[Round, bool]:
        """One round solved for ``target`` and measured, and whether its plan is new (else it
        is the round that measured it already). Raises InfeasibleBudget when the narrowest plan
        is measured over the budget."""
        latest, new = _measured_round(context, work / f"round{index}", target, rounds, measure)
        if new:
            rounds.append(latest)
        if latest.narrowest and latest.measured_ms > high:
            raise _unreachable(context, budget_ms, latest)
        return latest, new

    under: tuple[float, float] | None = None
    over = (baseline_ms, baseline_ms)
    target = budget_ms
    for index in range(options.max_rounds):
        latest, new = attempt(index, target)
        if new and low <= latest.measured_ms <= high:
            latest = rounds[-1] = confirm(latest)
        if low <= latest.measured_ms <= high:
            break
        # A plan is the solver's choice for a range of targets, so a plan given again moves its
        # side of the bracket to the target that gave it; the next target lies beyond it. (Not
        # to its prediction: a baseline's view of latency, HALP's, is in other units.)
        point = (max(target, latest.target_ms), latest.measured_ms)  # the narrowest plan's own
        if latest.measured_ms > high:
            over = min(over, (target, latest.measured_ms))
        else:
            under = max(under or point, point)
        if under is not None and abs(over[0] - under[0]) <= 1e-3 * budget_ms:
            break  # adjacent plans: one under the budget, the next over it
        target = _next_target(under, over, budget_ms)
        log.info("measured %.2f ms for a %.2f ms budget: re-solving for a %.2f ms target",
                 latest.measured_ms, budget_ms, target)
    if all(r.measured_ms > high and not r.narrowest for r in rounds):
        # Every plan measured misses the budget: whether any plan can is the narrowest plan's
        # to say (a zero target is infeasible for any latency model), so it is measured too.
        attempt(options.max_rounds, 0.0)
    return _below_the_floor(context, work / "narrowest", rounds, measure)


def _measured_round(context: _Context, folder: Path, target: float, rounds: list[Round],
                    measure: Callable[[Path], PairedTiming]) -> tuple[Round, bool]:
    """The plan solved for ``target`` (the narrowest plan when the latency model finds none),
    cut in ``folder`` and measured: (its round, True), or (the round of ``rounds`` that measured
    the same plan already, False)."""
    folder.mkdir()
    narrowest = False
    try:
        plan = _solve_and_cut(context, folder, budget_ms=target)
    except InfeasibleBudget as exc:
        # The model says no plan fits, but the model can over-estimate (a constant that does
        # not shrink with the network, HALP's output-only view), so the narrowest plan is
        # measured: only the measurement decides that a budget is out of reach.
        target, narrowest = exc.min_latency, True
        plan = _solve_and_cut(context, folder, budget_ms=target)
    seen = next((r for r in rounds if r.plan.options == plan.options), None)
    if seen is not None:
        shutil.rmtree(folder)
        return replace(seen, narrowest=seen.narrowest or narrowest), False
    with context.clock.stage("measure_pruned"):
        measured, original_ms, ratio, warning = _checked(measure, folder / "pruned.onnx",
                                                         plan.predicted_ms, context.baseline_ms)
    return Round(folder, plan, target, measured, original_ms, ratio, warning, narrowest,
                 windows=(ratio.value,)), True


def _confirmed(r: Round, *, context: _Context, measure: Callable[[Path], PairedTiming]) -> Round:
    """``r`` timed again with the original until it has ``confirm_windows`` windows, each
    ``confirm_gap_seconds`` after the last, its figure the slowest window's.

    A plan's ratio to the original is not a constant of the machine: it moves with the machine's
    state, which lasts tens of seconds, and interleaving cannot cancel it (ghostnet_100 at
    160 px, a plan at half the latency, in 8 s windows 12 s apart on the 2-core VM: 0.49 while
    the original ran in 3.7 ms, 0.54 while it ran in 5.0 ms; docs/latency-model-notes.md).
    A later re-timing meets another state, so the budget is checked against the slowest of
    windows spread over time, not the one window that happened to time the round."""
    options = context.options
    while len(r.windows) < options.confirm_windows:
        log.info("%s: ratio %.4f in %d window(s); timing it again in %.0f s to confirm",
                 r.folder.name, r.ratio.value, len(r.windows), options.confirm_gap_seconds)
        with context.clock.stage("confirm"):
            time.sleep(options.confirm_gap_seconds)
            *timing, warning = _checked(measure, r.folder / "pruned.onnx", r.predicted_ms,
                                        context.baseline_ms)
        r = _with_window(r, PairedTiming(*timing))
        if warning and warning not in (r.warning or ""):
            r = replace(r, warning="; ".join(w for w in (r.warning, warning) if w))
    return r


def _with_window(r: Round, timing: PairedTiming) -> Round:
    """``r`` with one more window timed; its figure stays the slowest window's."""
    r = replace(r, windows=(*r.windows, timing.ratio.value))
    if timing.ratio.value <= r.ratio.value:
        return r
    return replace(r, measured_ms=timing.ms, original_ms=timing.original_ms, ratio=timing.ratio)


def _below_the_floor(context: _Context, folder: Path, rounds: list[Round],
                     measure: Callable[[Path], PairedTiming]) -> list[Round]:
    """``rounds``, each one measured below the narrowest plan's time timed again and, if it
    stays below, warned about. Fewer channels never make the runtime slower by much, so a plan
    measured faster than the narrowest plan is more likely a disturbed timing. The narrowest
    plan is measured only when a round is below what the latency model predicts for it."""
    # The floor is never above a plan's own prediction: a round measured at or over its
    # prediction cannot be below it, and the floor's solve is skipped.
    faster = [r for r in rounds if not r.narrowest and r.measured_ms < r.predicted_ms]
    floor_ms = _predicted_floor(context) if faster else 0.0
    if not any(r.measured_ms < floor_ms for r in faster):
        return rounds
    narrowest = next((r for r in rounds if r.narrowest), None)
    if narrowest is None:
        narrowest, new = _measured_round(context, folder, floor_ms, rounds, measure)
        if new:
            shutil.rmtree(narrowest.folder)
    checked = []
    for r in rounds:
        if r.ratio.high < narrowest.ratio.low:
            log.warning("%s measured below the narrowest plan (ratio %.4f against %.4f): "
                        "timing it again", r.folder.name, r.ratio.value, narrowest.ratio.value)
            r = _with_window(r, measure(r.folder / "pruned.onnx"))
            if r.ratio.high < narrowest.ratio.low:
                below = (f"a plan measured {r.ratio.value:.1%} of the original, below the "
                         f"narrowest plan's {narrowest.ratio.value:.1%}, twice: check it with an "
                         "independent timing (benchmarks/retime.py)")
                r = replace(r, warning="; ".join(w for w in (r.warning, below) if w))
        checked.append(r)
    return checked


def _predicted_floor(context: _Context) -> float:
    """The latency model's smallest achievable latency (ms): no plan fits a zero budget, and
    the solver says what the narrowest one takes."""
    with tempfile.TemporaryDirectory() as scratch:
        try:
            _solve_and_cut(context, Path(scratch), budget_ms=0.0)
        except InfeasibleBudget as exc:
            return exc.min_latency
    return 0.0


# A plan measured beyond this factor of its prediction (either way) is timed again: tables and
# calibration are never that far off for a real plan, a disturbed timing can be.
_IMPLAUSIBLE = 2.0


def _checked(measure: Callable[[Path], PairedTiming], path: Path, predicted_ms: float,
             baseline_ms: float) -> tuple[float, float, Ratio, str | None]:
    """``measure(path)``, repeated once when the figure is implausible against the latency
    model's ``predicted_ms`` (beyond a factor ``_IMPLAUSIBLE``) or its ratio is unreliable; the
    figure kept is the one with the narrower interval. Returns (ms, the original's ms then,
    Ratio, a warning or None when the figure stays implausible)."""
    def implausible(measured: float) -> bool:
        return not 1 / _IMPLAUSIBLE <= measured / predicted_ms <= _IMPLAUSIBLE

    timing = measure(path)
    if implausible(timing.ms) or not timing.ratio.reliable:
        log.warning("%s measured %.3f ms (ratio %.4f [%.4f, %.4f]) against %.3f ms predicted: "
                    "timing it again", path.parent.name, timing.ms, timing.ratio.value,
                    timing.ratio.low, timing.ratio.high, predicted_ms)
        again = measure(path)
        if again.ratio.halfwidth < timing.ratio.halfwidth:
            timing = again
    measured = timing.ms
    warning = (f"a plan measured {measured:.3f} ms ({measured / baseline_ms:.1%} of the "
               f"original) twice, {measured / predicted_ms:.2f}x the latency model's "
               f"{predicted_ms:.3f} ms: check it with an independent timing "
               "(benchmarks/retime.py)") if implausible(measured) else None
    return measured, timing.original_ms, timing.ratio, warning


def _unreachable(context: _Context, budget_ms: float, narrowest: Round) -> InfeasibleBudget:
    """The error for a budget under the measured latency of the ``narrowest`` plan's round;
    the model's prediction for that plan may have fitted the budget, which is why the
    measurement, not the model, decides."""
    measured, baseline_ms = narrowest.measured_ms, context.baseline_ms
    return InfeasibleBudget(
        f"no plan reaches {budget_ms:.2f} ms: the smallest achievable latency is "
        f"{measured:.2f} ms measured ({measured / baseline_ms:.0%} of the measured "
        f"{baseline_ms:.2f} ms; the latency model predicted "
        f"{narrowest.predicted_ms:.2f} ms for it); "
        f"{_budget_hint(context.options, context.analysis, measured, baseline_ms)}",
        min_latency=measured, parameters=_HINT_PARAMETERS)


# The parameters a _budget_hint may name, declared by the errors that carry one
_HINT_PARAMETERS = ("budget", "budget_ms", "group_size", "max_options")


def _budget_hint(options: PruneOptions, analysis: Analysis, smallest_ms: float,
                 baseline_ms: float) -> str:
    """What the user can change when no plan reaches the budget: the budget, in the parameter
    they gave, unless the pruning units leave nothing to narrow or remove."""
    # options(...)[0] is the never-chosen empty option: two entries mean full width only
    if not removable_blocks(analysis) and all(len(g.options(options.group_size)) <= 2
                                              for g in analysis.groups):
        widest = max((g.channels for g in analysis.groups if g.prunable), default=0)
        limit = f" and `max_options` {options.max_options}" if options.max_options else ""
        return (f"at `group_size` {options.group_size}{limit} every group keeps all its "
                f"channels (the widest prunable one has {widest}) and no block is removable: "
                "lower `group_size`" + (" or raise `max_options`" if limit else ""))
    # rounded up: the figure given must itself be enough
    if options.budget_ms is not None:
        return f"raise `budget_ms` to at least {math.ceil(smallest_ms * 100) / 100:.2f}"
    return f"raise `budget` to at least {math.ceil(smallest_ms / baseline_ms * 100) / 100:.2f}"


def _next_target(under, over, budget_ms: float) -> float:
    """Regula falsi on (target, measured) points bracketing the budget, kept inside the bracket."""
    t_over, m_over = over
    if under is None:
        return t_over - (m_over - budget_ms)  # slope 1 until a point under the budget is known
    t_under, m_under = under
    if m_over <= m_under or t_over <= t_under:
        return (t_under + t_over) / 2
    guess = t_under + (budget_ms - m_under) * (t_over - t_under) / (m_over - m_under)
    margin = 0.1 * (t_over - t_under)
    return min(max(guess, t_under + margin), t_over - margin)


def _adopt_best_round(rounds: list[Round], work: Path, limit_ms: float,
                      confirm: Callable[[Round], Round]) -> tuple[list[Round], Round, str]:
    """Move the best round's files into ``work`` and say how it stands: the most important plan
    among those reliably measured within ``limit_ms`` ("met"); else the most important one
    measured within it on an unreliable ratio ("unreliable"); else the fastest ("over").
    A round is ``confirm``ed before it is adopted within the limit; one that the confirmation
    puts over the limit is out. Returns (the rounds as measured now, the round, status)."""
    rounds = list(rounds)
    while True:
        within = [r for r in rounds if r.measured_ms <= limit_ms]
        trusted = [r for r in within if r.ratio.reliable]
        if not within:
            best, status = min(rounds, key=lambda r: r.measured_ms), "over"
            break
        best = max(trusted or within, key=lambda r: r.plan.objective)
        status = "met" if trusted else "unreliable"
        confirmed = confirm(best)
        rounds = [confirmed if r is best else r for r in rounds]
        if confirmed.measured_ms <= limit_ms and confirmed.ratio.reliable == best.ratio.reliable:
            best = confirmed
            break
    for path in best.folder.iterdir():
        path.rename(work / path.name)
    for r in rounds:
        shutil.rmtree(r.folder)
    return rounds, best, status


def _solve_and_cut(context: _Context, folder: Path, *, budget_ms: float) -> Candidate:
    """The method's plan for ``budget_ms`` under the latency model, cut, verified against the
    masked original and saved in ``folder`` (problem.json, plan.json, pruned.onnx). Raises
    InfeasibleBudget with the model's smallest latency when no plan fits."""
    model, analysis, options, clock = (context.model, context.analysis, context.options,
                                       context.clock)
    with clock.stage("solve"):
        problem = method_problem(load_problem(formulate(
            analysis, context.importance, context.tables.tables, group_size=options.group_size,
            budget_ms=budget_ms, offset_ms=context.offset_ms, name=context.name)),
            options.method)
        (folder / "problem.json").write_text(json.dumps(problem.to_json()))
        plan = solve_method(problem, options.method, solver=options.solver,
                            time_limit=options.time_limit,
                            widths=[g.options(options.group_size) for g in analysis.groups])
        if plan.status == "infeasible":
            smallest, baseline_ms = plan.min_latency / 1000.0, context.baseline_ms
            raise InfeasibleBudget(
                f"no plan reaches {budget_ms:.2f} ms: the smallest achievable latency under the "
                f"latency model is {smallest:.2f} ms ({smallest / baseline_ms:.0%} of the measured "
                f"{baseline_ms:.2f} ms); "
                f"{_budget_hint(options, analysis, smallest, baseline_ms)}",
                min_latency=smallest, parameters=_HINT_PARAMETERS)
    decoded = decode_plan(analysis, context.importance, options.group_size, plan.options,
                          plan.blocks)
    with clock.stage("surgery"):
        pruned = apply_plan(model, analysis, decoded.keep, decoded.removed_blocks)
    with clock.stage("verify"):
        reference = mask_model(model, analysis, decoded.keep, decoded.removed_blocks)
        check = verify(reference, pruned, inputs=options.verify_inputs, rtol=options.rtol)
    with clock.stage("save"):
        save_model(pruned, folder / "pruned.onnx")
        plan_json = {**plan.to_json(),
                     "kept_channels": {analysis.groups[g].name: idx for g, idx in decoded.keep.items()},
                     "removed_blocks_names": list(decoded.removed_block_names)}
        (folder / "plan.json").write_text(json.dumps(plan_json, indent=1))
    return Candidate(
        decoded, tuple(plan.options),
        tables_ms=table_sum(analysis, context.tables, plan.options, decoded.removed_blocks),
        offset_ms=context.offset_ms, objective=plan.objective,
        solver=SolveOutcome(options.method, plan.solver, plan.status, plan.solve_seconds,
                            plan.bound),
        verification=check)
