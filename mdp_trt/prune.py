"""The whole pipeline: analyse, score, profile, solve, cut, verify, measure, report.

Everything is written into a staging folder beside ``out_dir`` and swapped into place only
when the run succeeded (``mdp_trt.outputs``: never over an input or a folder of the user's
files; an error, Ctrl-C or SIGTERM never leaves a half-written output directory).
The pruned model is timed together with the original (interleaved, ``benchmark_models``), and
its time scaled to the machine state of the baseline measurement (``_paired``); when it misses
the budget (over by more than ``tolerance``, or under by more than twice that), the target
handed to the solver is adjusted from the measured points and the problem re-solved, at most
``max_rounds`` times (see ``_closed_loop``).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np

from mdp_trt.analysis import Analysis, check_max_options, limit_options, require_prunable
from mdp_trt.bench.measure import benchmark_model, benchmark_models
from mdp_trt.errors import InfeasibleBudget, InputError
from mdp_trt.graph import (check_finite_weights, initializer_array, initializer_bytes, load_model,
                           save_model)
from mdp_trt.importance import Importance
from mdp_trt.importance.magnitude import magnitude_importance
from mdp_trt.importance.output_scale import layer_output_scale
from mdp_trt.latency.backends.registry import backend_options, cell_weights, get_backend
from mdp_trt.latency.backends.timing import MODEL_POLICY
from mdp_trt.latency.protocol import Ratio
from mdp_trt.latency.tables import LatencyTables, profile_tables
from mdp_trt.latency.tables.cache import LatencyCache
from mdp_trt.latency.tables.ray_runner import cells_option, check_ray_flags
from mdp_trt.outputs import output_folder
from mdp_trt.passes import analyze, apply_plan, mask_model, verify
from mdp_trt.prediction.calibration import (CALIBRATIONS, Calibration, correct_layers,
                                            fit_calibration, layer_ratios, probe_options)
from mdp_trt.report import Report
from mdp_trt.solve import load_problem
from mdp_trt.solve.formulate import decode_plan, formulate, removable_blocks
from mdp_trt.solve.methods import METHODS, Method, method_problem, solve_method
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
    importance: Literal["magnitude", "taylor"] = "magnitude"
    calib: Path | None = None  # calibration data for taylor importance (.npz or image folder)
    method: Method = "mdp"  # mdp, or a baseline: mdp-channels, halp, uniform (solve/methods.py)
    group_size: int = 16
    max_options: int | None = None  # coarser units for wider groups (analysis.limit_options)
    interpolate: int | None = None  # latency tables: every k-th width measured (None: all)
    surface: bool | None = None  # tables: fitted surface / measured cells (None: the backend's)
    ray: str | None = None  # Ray cluster measuring the table cells ("local", "auto", ray://...)
    workers: int | None = None  # Ray workers (None: one per GPU or per `threads` CPUs)
    solver: str = "exact"
    time_limit: float | None = None
    cache: Path | None = None
    input_shape: tuple[int, ...] | None = None
    verify_inputs: int = 3
    rtol: float = 1e-4
    calibration: Literal["per-layer", "two-point", "constant"] = "per-layer"  # latency/calibration.py
    tolerance: float = 0.03  # re-solve when measured > budget * (1 + tolerance)
    max_rounds: int = 4
    measure_seconds: float = 3.0  # timed runs per whole-model measurement round (at least 30 runs)
    measure_rounds: int = 3  # whole-model rounds; the least disturbed one counts
    # at most this long per comparison of a candidate with the original (TimingPolicy.compare_s)
    compare_seconds: float = 30.0
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
        raise InputError("give exactly one of --budget FRACTION or --budget-ms MS")
    if options.budget is not None and not 0 < options.budget <= 1:
        raise InputError(f"--budget {options.budget} must be a fraction in (0, 1], e.g. 0.5")
    if options.budget_ms is not None and not (math.isfinite(options.budget_ms)
                                              and options.budget_ms > 0):
        raise InputError(f"--budget-ms {options.budget_ms} must be a positive number of "
                         "milliseconds")
    if options.group_size < 1:
        raise InputError(f"--group-size {options.group_size} must be >= 1")
    check_max_options(options.max_options)
    if options.importance not in ("magnitude", "taylor"):
        raise InputError(f"--importance {options.importance!r}: choose magnitude or taylor")
    if options.importance == "taylor" and options.calib is None:
        raise InputError("--importance taylor scores channels on calibration data: pass --calib "
                         "PATH (an .npz with x and optionally y, or a folder of images)")
    if options.method not in METHODS:
        raise InputError(f"--method {options.method!r}: choose one of {', '.join(METHODS)}")
    # The backend's own flags (--channels-last, --weights) and whether its runtime is here,
    # checked before a model is loaded.
    get_backend(options.backend, **backend_options(
        options.backend, threads=options.threads, precision=options.precision,
        channels_last=options.channels_last,
        weights="hot" if options.weights == "auto" else options.weights))
    if options.calibration not in CALIBRATIONS:
        raise InputError(f"--calibration {options.calibration!r}: choose one of "
                         f"{', '.join(CALIBRATIONS)}")
    check_solver(options.solver, options.time_limit)
    check_ray_flags(options.ray, options.workers)
    if options.calib is not None and not options.calib.exists():
        raise InputError(f"--calib {options.calib}: no such file or folder")


@dataclass(frozen=True)
class _Previous:
    """The saved stages of a finished run (``--resume``)."""

    folder: Path
    analysis: Analysis
    importance: Importance
    report: dict


def _previous_run(out_dir: Path) -> _Previous | None:
    if not out_dir.exists() or not any(out_dir.iterdir()):
        log.info("--resume: %s holds no earlier run; every stage runs", out_dir)
        return None
    if not (out_dir / "report.json").is_file():
        raise InputError(f"--resume: {out_dir} holds no finished prune run (no report.json); "
                         "choose its output folder, or drop --resume")
    stages = {"analysis.json": Analysis.load, "importance.json": Importance.load,
              "report.json": lambda path: json.loads(path.read_text())}
    loaded = []
    for name, load in stages.items():
        try:
            loaded.append(load(out_dir / name))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise InputError(f"--resume: cannot read {out_dir / name} ({type(err).__name__}: "
                             f"{err}); run without --resume (with --force to replace it)") from err
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
        log.warning("--resume: %s was pruned from another model or input shape; every stage "
                    "runs again", previous.folder)
        return None
    calib = str(options.calib) if options.calib is not None else None
    if previous.report.get("importance") != options.importance or previous.report.get("calib") != calib:
        log.info("--resume: importance computed again (--importance or --calib changed)")
        return None
    return previous.importance


def prune(model_path: str | Path, out_dir: str | Path, options: PruneOptions) -> Report:
    """Prune ``model_path`` into ``out_dir`` (the rules of ``mdp_trt.outputs``: with
    ``options.force`` an earlier run's folder is replaced; with ``options.resume`` its files are
    and the files the user added there are kept)."""
    _check_options(options)
    model_path, out_dir = Path(model_path), Path(out_dir)
    inputs = [model_path, options.calib]
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
        analysis = limit_options(analyze(model, str(model_path)), options.group_size,
                                 options.max_options)
        require_prunable(analysis)  # before anything is measured
        analysis.save(work / "analysis.json")
        # The original, with its shape fixed, saved the same way as the pruned model will be,
        # so that both are timed under identical conditions.
        save_model(model, work / "original.onnx")
    # Latency cells need no resuming: the cache holds every cell measured before.
    resumed = _resumed_importance(previous, analysis, options)
    with clock.stage("importance"):
        importance = resumed or _importance(model, analysis, options)
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
                                    cache=cache, progress=options.progress,
                                    interpolate=options.interpolate, surface=options.surface,
                                    measure_cells=cells_option(options.ray, options.workers,
                                                               backend, runtime_options))
            (work / "tables.json").write_text(json.dumps(tables.to_json()))
        with clock.stage("calibrate"):
            paired = _paired(partial(benchmark_models, backend=backend), work / "original.onnx",
                             baseline.latency_ms)
            calibration = calibrate(
                model, analysis, importance, tables, group_size=options.group_size,
                baseline_ms=baseline.latency_ms, measure=lambda path: paired(path)[0],
                folder=work / "calibration", original=work / "original.onnx",
                mode=options.calibration, layer_shares=backend.layer_shares)
        tables = calibration.apply(tables)
        rounds = _closed_loop(model, analysis, importance, tables, work, options, clock, paired,
                              budget_ms=budget_ms, offset_ms=calibration.offset_ms,
                              baseline_ms=baseline.latency_ms, name=model_path.stem)
        best, status = _adopt_best_round(rounds, work, budget_ms * (1 + options.tolerance))
        fingerprint = backend.fingerprint().to_json()
    result, measured_ms = best["result"], best["measured_ms"]
    decoded = result["decoded"]
    report = Report(
        model=str(model_path), backend=options.backend, device=fingerprint, threads=options.threads,
        group_size=options.group_size, max_options=options.max_options,
        importance=importance.method,
        baseline_latency_ms=baseline.latency_ms, budget_ms=budget_ms,
        budget_fraction=budget_ms / baseline.latency_ms,
        predicted_latency_ms=result["predicted_ms"], predicted_tables_ms=result["tables_ms"],
        predicted_offset_ms=result["offset_ms"], measured_latency_ms=measured_ms,
        fps_before=baseline.fps, fps_after=baseline.batch * 1000.0 / measured_ms,
        removed_blocks=list(decoded.removed_block_names),
        kept_channels={g.name: [decoded.kept_channels[g.name], g.channels] for g in analysis.groups},
        objective=result["objective"], solver=result["solver"],
        profile={"cells_measured": tables.cells_measured, "cells_cached": tables.cells_cached,
                 "seconds": tables.seconds, "surface": tables.surface},
        verification=result["verification"], timings=clock.seconds,
        calibration=calibration.to_json(),
        calib=str(options.calib) if options.calib is not None else None,
        weights=weights,
        resumed=["importance"] if resumed is not None else [],
        tolerance=options.tolerance,
        budget_status=status,
        measurement=best["ratio"].to_json(),
        warnings=[w for w in [calibration.note, *(r["warning"] for r in rounds)] if w],
        rounds=[{**r["result"]["solver"], "target_ms": r["target_ms"],
                 "predicted_ms": r["result"]["predicted_ms"], "measured_ms": r["measured_ms"],
                 "original_ms": r["original_ms"], "ratio": r["ratio"].to_json(),
                 "adopted": r is best} for r in rounds],
    )
    report.save(work / "report.json")
    return report


def probe_model(model, analysis: Analysis, importance: Importance, group_size: int):
    """The calibration probe (latency/calibration.probe_options: prunable groups at half width,
    every block kept) as (cut model, its per-group options), or None when nothing is prunable."""
    probe = probe_options(analysis, group_size)
    if probe is None:
        return None
    keep_blocks = [1] * (len(removable_blocks(analysis)) + 1)
    decoded = decode_plan(analysis, importance, group_size, probe, keep_blocks)
    return apply_plan(model, analysis, decoded.keep, frozenset()), probe


def _paired(compare, original: Path, baseline_ms: float):
    """A measure for candidate models: each timed together with the original by ``compare``
    (paths -> results: ``benchmark_models``, interleaved on CPU) and reported as its ratio to
    the original times ``baseline_ms``, i.e. in the machine state of the baseline measurement.
    The ratio of two models timed together survives a slow spell of the machine; lone timings
    do not (on a 2-core VM the same model's timing moved by up to 20% between minutes, enough
    to send the closed loop after noise). Returns (ms, the original's ms then, the Ratio)."""
    def timed(path: Path) -> tuple[float, float, Ratio]:
        now, candidate = compare([original, path])
        return candidate.ratio.value * baseline_ms, now.latency_ms, candidate.ratio
    return timed


def calibrate(model, analysis: Analysis, importance: Importance, tables: LatencyTables, *,
              group_size: int, baseline_ms: float, measure, folder: Path, original: Path,
              mode: str = "per-layer", layer_shares) -> Calibration:
    """The map from table sums to measured latency (latency/calibration.py): through the
    original model (at ``original``, measured ``baseline_ms``) alone (``mode`` constant), also
    through the probe measured with ``measure(path)`` (two-point), and with each layer's
    in-model/cell ratio in both from ``layer_shares(path, layers)`` (per-layer; two-point where
    it gives None). The probe lives in a scratch ``folder``, removed afterwards."""
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
        finally:
            shutil.rmtree(folder)
        if mode == "per-layer" and models[0][2] is None:
            log.info("latency calibration: this backend profiles no nodes; one scale for all layers")
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
        layers = layer_ratios([(_layer_cells(analysis, tables, options),
                                {name: share * measured for name, share in shares.items()})
                               for options, measured, shares in models])
    corrected = correct_layers(tables, layers)
    return fit_calibration([(_table_sum(analysis, corrected, options, frozenset()), measured)
                            for options, measured, _ in models], layers)


def _closed_loop(model, analysis, importance, tables, work, options, clock, measure, *,
                 budget_ms, offset_ms, baseline_ms, name) -> list[dict]:
    """Solve, cut and measure; adjust the solver's target until the measurement fits the budget.

    The latency model (tables + constant calibrated on the measured original) is fixed; what the
    loop adjusts is the *target* handed to the solver. Measured latency is a monotone staircase
    in the target, so the target is found by regula falsi between the best point measured under
    the budget and the lowest point measured over it (the unpruned model is the first such point:
    its target is its own prediction, i.e. the baseline). A round far under the budget is also
    re-solved, to spend the budget on importance. Each round keeps its artefacts in its own
    directory until one is adopted.
    """
    rounds: list[dict] = []
    low, high = budget_ms * (1 - 2 * options.tolerance), budget_ms * (1 + options.tolerance)
    unreachable = partial(_unreachable, budget_ms, baseline_ms=baseline_ms, options=options,
                          analysis=analysis)

    def attempt(index: int, target: float) -> dict | None:
        """One round solved for ``target`` and measured; None when its plan was measured
        already (converged). Raises InfeasibleBudget when the narrowest plan is measured over
        the budget."""
        folder = work / f"round{index}"
        folder.mkdir()
        solve_at = partial(_solve_and_cut, model, analysis, importance, tables, folder, options,
                           clock, offset_ms=offset_ms, baseline_ms=baseline_ms, name=name)
        narrowest = False
        try:
            result = solve_at(budget_ms=target)
        except InfeasibleBudget as exc:
            # The model says no plan fits, but the model can over-estimate (a constant that
            # does not shrink with the network, HALP's output-only view), so the narrowest plan
            # is measured: only the measurement decides that a budget is out of reach.
            target, narrowest = exc.min_latency, True
            result = solve_at(budget_ms=target)
        seen = [r for r in rounds if r["result"]["options"] == result["options"]]
        if seen:
            shutil.rmtree(folder)
            if narrowest and seen[0]["measured_ms"] > high:
                raise unreachable(seen[0])
            return None
        with clock.stage("measure_pruned"):
            measured, original_ms, ratio, warning = _checked(measure, folder / "pruned.onnx",
                                                             result["predicted_ms"], baseline_ms)
        rounds.append({"folder": folder, "result": result, "measured_ms": measured,
                       "original_ms": original_ms, "ratio": ratio, "warning": warning,
                       "target_ms": target, "narrowest": narrowest})
        if narrowest and measured > high:
            raise unreachable(rounds[-1])
        return rounds[-1]

    under: tuple[float, float] | None = None
    over = (baseline_ms, baseline_ms)
    target = budget_ms
    for index in range(options.max_rounds):
        latest = attempt(index, target)
        if latest is None or low <= latest["measured_ms"] <= high:
            break
        point = (latest["target_ms"], latest["measured_ms"])  # the narrowest plan's own target
        if point[1] <= high:
            under = max(under or point, point)
        else:
            over = min(over, point)
        target = _next_target(under, over, budget_ms)
        log.info("measured %.2f ms for a %.2f ms budget: re-solving for a %.2f ms target",
                 point[1], budget_ms, target)
    if all(r["measured_ms"] > high and not r["narrowest"] for r in rounds):
        # Every plan measured misses the budget: whether any plan can is the narrowest plan's
        # to say (a zero target is infeasible for any latency model), so it is measured too.
        attempt(options.max_rounds, 0.0)
    return rounds


# A plan measured beyond this factor of its prediction (either way) is timed again: tables and
# calibration are never that far off for a real plan, a disturbed timing can be.
_IMPLAUSIBLE = 2.0


def _checked(measure, path: Path, predicted_ms: float, baseline_ms: float):
    """``measure(path)``, repeated once when the figure is implausible against the latency
    model's ``predicted_ms`` (beyond a factor ``_IMPLAUSIBLE``) or its ratio is unreliable; the
    figure kept is the one with the narrower interval. Returns (ms, the original's ms then,
    Ratio, a warning or None when the figure stays implausible)."""
    def implausible(measured: float) -> bool:
        return not 1 / _IMPLAUSIBLE <= measured / predicted_ms <= _IMPLAUSIBLE

    measured, original_ms, ratio = measure(path)
    if implausible(measured) or not ratio.reliable:
        log.warning("%s measured %.3f ms (ratio %.4f [%.4f, %.4f]) against %.3f ms predicted: "
                    "timing it again", path.parent.name, measured, ratio.value, ratio.low,
                    ratio.high, predicted_ms)
        again = measure(path)
        if again[2].halfwidth < ratio.halfwidth:
            measured, original_ms, ratio = again
    warning = (f"a plan measured {measured:.3f} ms ({measured / baseline_ms:.1%} of the "
               f"original) twice, {measured / predicted_ms:.2f}x the latency model's "
               f"{predicted_ms:.3f} ms: check it with an independent timing "
               "(benchmarks/retime.py)") if implausible(measured) else None
    return measured, original_ms, ratio, warning


def _unreachable(budget_ms: float, narrowest: dict, *, baseline_ms: float, options: PruneOptions,
                 analysis: Analysis) -> InfeasibleBudget:
    """The error for a budget under the measured latency of the narrowest plan (``narrowest``,
    a round); the model's prediction for that plan may have fitted the budget, which is why
    the measurement, not the model, decides."""
    measured = narrowest["measured_ms"]
    return InfeasibleBudget(
        f"no plan reaches {budget_ms:.2f} ms: the smallest achievable latency is "
        f"{measured:.2f} ms measured ({measured / baseline_ms:.0%} of the measured "
        f"{baseline_ms:.2f} ms; the latency model predicted "
        f"{narrowest['result']['predicted_ms']:.2f} ms for it); "
        f"{_budget_hint(options, analysis, measured, baseline_ms)}",
        min_latency=measured)


def _budget_hint(options: PruneOptions, analysis: Analysis, smallest_ms: float,
                 baseline_ms: float) -> str:
    """What the user can change when no plan reaches the budget: the budget, in the flag they
    used, unless the pruning units leave nothing to narrow or remove."""
    # options(...)[0] is the never-chosen empty option: two entries mean full width only
    if not removable_blocks(analysis) and all(len(g.options(options.group_size)) <= 2
                                              for g in analysis.groups):
        widest = max((g.channels for g in analysis.groups if g.prunable), default=0)
        limit = f" and --max-options {options.max_options}" if options.max_options else ""
        return (f"at --group-size {options.group_size}{limit} every group keeps all its "
                f"channels (the widest prunable one has {widest}) and no block is removable: "
                "lower --group-size" + (" or raise --max-options" if limit else ""))
    # rounded up: the figure given must itself be enough
    if options.budget_ms is not None:
        return f"raise --budget-ms to at least {math.ceil(smallest_ms * 100) / 100:.2f}"
    return f"raise --budget to at least {math.ceil(smallest_ms / baseline_ms * 100) / 100:.2f}"


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


def _adopt_best_round(rounds: list[dict], work: Path, limit_ms: float):
    """Move the best round's files into ``work`` and say how it stands: the most important plan
    among those reliably measured within ``limit_ms`` ("met"); else the most important one
    measured within it on an unreliable ratio ("unreliable"); else the fastest ("over").
    Returns (round, status)."""
    within = [r for r in rounds if r["measured_ms"] <= limit_ms]
    trusted = [r for r in within if r["ratio"].reliable]
    if trusted or within:
        best = max(trusted or within, key=lambda r: r["result"]["objective"])
        status = "met" if trusted else "unreliable"
    else:
        best, status = min(rounds, key=lambda r: r["measured_ms"]), "over"
    for path in best["folder"].iterdir():
        path.rename(work / path.name)
    for r in rounds:
        shutil.rmtree(r["folder"])
    return best, status


def _importance(model, analysis: Analysis, options: PruneOptions) -> Importance:
    if options.importance == "taylor":
        # torch autograd over the whole graph: imported only when asked for
        from mdp_trt.data import load_dataset
        from mdp_trt.importance.taylor import taylor_importance

        data = load_dataset(options.calib, analysis.input_shape)
        return taylor_importance(model, analysis, data, progress=options.progress)
    return magnitude_importance(
        analysis,
        weight_of=lambda name: _weight_out_first(model, analysis, name),
        scale_of=lambda name: layer_output_scale(model, analysis, name),
    )


def _weight_out_first(model, analysis: Analysis, name: str) -> np.ndarray:
    """The layer's weight with the output-channel axis first (Gemm transB=0 and MatMul store
    (in, out))."""
    layer = analysis.layer(name)
    weight = initializer_array(model, layer.weight)
    if layer.op_type == "Conv":
        return weight
    node = next(n for n in model.graph if n.name == name)
    if layer.op_type == "Gemm" and node.attributes.get_int("transB", 0):
        return weight
    return weight.T


def _cell(tables: LatencyTables, layer, options: list[int]) -> float:
    """The layer's table entry at the per-group option indices ``options``."""
    column = 1 if layer.in_group is None else options[layer.in_group]
    return tables.layer_latency(layer.name, options[layer.out_group], column)


def _table_sum(analysis: Analysis, tables: LatencyTables, options: list[int],
               removed: frozenset[int]) -> float:
    return sum(_cell(tables, layer, options) for layer in analysis.layers
               if layer.block is None or layer.block not in removed)


def _layer_cells(analysis: Analysis, tables: LatencyTables, options: list[int]) -> dict[str, float]:
    return {layer.name: _cell(tables, layer, options) for layer in analysis.layers}


def _solve_and_cut(model, analysis, importance, tables, work, options, clock, *, budget_ms,
                   offset_ms, baseline_ms, name) -> dict:
    with clock.stage("solve"):
        instance = method_problem(
            formulate(analysis, importance, tables.tables, group_size=options.group_size,
                      budget_ms=budget_ms, offset_ms=offset_ms, name=name),
            options.method)
        (work / "problem.json").write_text(json.dumps(instance))
        plan = solve_method(load_problem(instance), options.method, solver=options.solver,
                            time_limit=options.time_limit,
                            widths=[g.options(options.group_size) for g in analysis.groups])
        if plan.status == "infeasible":
            smallest = plan.min_latency / 1000.0
            raise InfeasibleBudget(
                f"no plan reaches {budget_ms:.2f} ms: the smallest achievable latency under the "
                f"latency model is {smallest:.2f} ms ({smallest / baseline_ms:.0%} of the measured "
                f"{baseline_ms:.2f} ms); "
                f"{_budget_hint(options, analysis, smallest, baseline_ms)}",
                min_latency=smallest)
    decoded = decode_plan(analysis, importance, options.group_size, plan.options, plan.blocks)
    with clock.stage("surgery"):
        pruned = apply_plan(model, analysis, decoded.keep, decoded.removed_blocks)
    with clock.stage("verify"):
        reference = mask_model(model, analysis, decoded.keep, decoded.removed_blocks)
        check = verify(reference, pruned, inputs=options.verify_inputs, rtol=options.rtol)
    with clock.stage("save"):
        save_model(pruned, work / "pruned.onnx")
        removed = decoded.removed_blocks
        tables_ms = _table_sum(analysis, tables, plan.options, removed)
        plan_json = {**plan.to_json(),
                     "kept_channels": {analysis.groups[g].name: idx for g, idx in decoded.keep.items()},
                     "removed_blocks_names": list(decoded.removed_block_names)}
        (work / "plan.json").write_text(json.dumps(plan_json, indent=1))
    return {
        "decoded": decoded, "options": list(plan.options),
        "predicted_ms": tables_ms + offset_ms, "tables_ms": tables_ms,
        "offset_ms": offset_ms, "objective": plan.objective,
        "solver": {"method": options.method, "name": plan.solver, "status": plan.status,
                   "seconds": plan.solve_seconds, "bound": plan.bound},
        "verification": {"max_abs_diff": check.max_abs_diff, "max_rel_diff": check.max_rel_diff,
                         "inputs": check.inputs},
    }
