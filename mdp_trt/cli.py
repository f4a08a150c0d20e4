"""The ``mdp-trt`` command line. Each command's docstring is its help.

Only this module turns errors into exit codes (docs/interfaces.md): 0 success, 2 bad usage or
input, 3 infeasible budget, 4 verification failed, 5 budget not confirmed, 130/143/129
interrupted (SIGINT/SIGTERM/SIGHUP: raised as ``Interrupted`` where the program was, so staging
folders are removed as on Ctrl-C); anything else escaping is a bug and keeps its traceback.
Library errors name parameters (`group_size`); this module prints them as flags (``--group-size``).
Every output is checked against ``mdp_trt.outputs``' rules before any work starts. Text is
printed literally: user paths and install hints such as ``mdp-trt[tensorrt]`` are not rich
markup.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.text import Text

from mdp_trt.errors import InputError, Interrupted, MdpTrtError
from mdp_trt.extras import require
from mdp_trt.latency.backends.registry import BACKENDS, DEFAULT_BACKEND, backend_names
from mdp_trt.outputs import check_output_file, check_output_folder, output_folder, write_text

__all__ = ["app", "main"]

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Latency-budgeted channel + block pruning of ONNX models (MDP).")
# soft_wrap: a long path stays on one line, so messages can be searched and pasted
out = Console(markup=False, highlight=False, soft_wrap=True)
err = Console(stderr=True, markup=False, highlight=False, soft_wrap=True)

DEFAULT_DEMO_DIR = Path("mdp-trt-demo")


BACKEND_HELP = f"latency backend: {', '.join(backend_names())}"
RAY_HELP = ("measure table cells on Ray workers: 'local' starts a cluster on this machine, "
            "'auto' joins the running one, or ray://HOST:PORT")
WORKERS_HELP = "Ray workers (default: one per GPU, or one per --threads CPUs)"


def _precision_option():
    others = "; ".join(f"{name}: {', '.join(spec.precisions[1:])}"
                       for name, spec in BACKENDS.items() if len(spec.precisions) > 1)
    return typer.Option("fp32", help=f"fp32, or another precision where the backend has it "
                        f"({others})")


def _channels_last_option():
    takers = "/".join(name for name, spec in BACKENDS.items() if spec.channels_last)
    return typer.Option(False, "--channels-last", help=f"{takers}: NHWC memory layout")


def _weights_option():
    return typer.Option("hot", help="ort-cpu table cells: hot (weights cached between runs), cold "
                        "(weights streamed from memory, as inside a model larger than the "
                        "last-level cache) or auto (cold when the model's weights exceed it)")


def _surface_option():
    return typer.Option(None, "--surface/--measured-cells", help="tables from a smooth surface "
                        "fitted to each layer signature's measured cells (averages out their "
                        "noise) or the cells as measured; default: the surface on CPU backends, "
                        "the cells on GPUs (whose latency is a staircase in the widths)")


def _cells_option():
    return typer.Option(None, metavar="adaptive|all", help="latency table cells to time: "
                        "adaptive (a lean design per layer signature, more cells only where "
                        "held-back cells show the tables above the noise level) or all; default: "
                        "adaptive where the tables are a fitted surface (CPU backends), all where "
                        "they are measured cells (GPUs, --measured-cells)")


def _max_options_option():
    return typer.Option(None, metavar="N", help="at most N options per group: wider groups are "
                        "cut in a multiple of --group-size (fewer table cells for wide layers)")


def _embedding_option():
    return typer.Option(False, "--prune-embedding", help="also cut channels that LayerNorms "
                        "normalise over (a transformer's embedding width: patch and position "
                        "embedding, every block's input and output, the head); verified against "
                        "the original with its LayerNorms normalising over the kept channels")


def _force_option(what: str):
    return typer.Option(False, "--force", help=f"replace {what}")


def _json_target(json_out: Optional[Path], force: bool, *inputs: Path) -> Optional[Path]:
    """``--json``'s path, checked before any work (never an input, never overwritten without
    --force)."""
    if json_out is None:
        return None
    return check_output_file(json_out, flag="--json", inputs=inputs, force=force)


def parse_shape(text: Optional[str]) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        dims = tuple(int(d) for d in text.lower().split("x"))
    except ValueError:
        dims = ()
    if not dims or any(d <= 0 for d in dims):
        raise InputError(f"--input-shape {text!r} is not a shape like 1x3x224x224")
    return dims


@app.command()
def export(
    arch: str = typer.Argument(..., help="torchvision architecture, e.g. resnet18, or a detector "
                               "with an FPN, e.g. retinanet_resnet50_fpn (its backbone + FPN)"),
    output: Path = typer.Option(..., "-o", "--output", help="ONNX file to write"),
    input_shape: str = typer.Option("1x3x224x224", help="static input shape NxCxHxW"),
    seed: int = typer.Option(0, help="seed of the random weights and BN statistics"),
    exporter: str = typer.Option("dynamo", help="dynamo (torch.export, external data) or torchscript"),
    fold_bn: bool = typer.Option(True, "--fold-bn/--keep-bn", help="fold BatchNorm into Conv"),
    bn_stats: str = typer.Option("random", help="random (trained-looking) or identity BN statistics"),
    force: bool = _force_option("an existing output file"),
) -> None:
    """Build a torchvision architecture (weights=None, seeded; nothing downloaded) and export ONNX
    (a detector: its backbone and FPN, the feature maps as outputs)."""
    require("torch", "`mdp-trt export`")
    from mdp_trt.models.export import ExportOptions, export_architecture

    check_output_file(output, flag="-o", force=force)
    if exporter not in ("dynamo", "torchscript"):
        raise InputError(f"--exporter {exporter!r}: choose dynamo or torchscript")
    if bn_stats not in ("random", "identity"):
        raise InputError(f"--bn-stats {bn_stats!r}: choose random or identity")
    path = export_architecture(arch, output, ExportOptions(
        input_shape=parse_shape(input_shape), seed=seed, exporter=exporter, fold_bn=fold_bn,
        bn_stats=bn_stats))
    out.print(f"wrote {path}")


@app.command()
def analyze(
    model: Path = typer.Argument(..., help="ONNX model"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the analysis as JSON"),
    input_shape: Optional[str] = typer.Option(None, help="fix dynamic input dims, e.g. 1x3x224x224"),
    prune_embedding: bool = _embedding_option(),
    force: bool = _force_option("an existing --json file"),
) -> None:
    """Find prunable layers, channel groups, residual blocks, and what cannot be pruned (and why)."""
    from mdp_trt.analysis_table import render_analysis
    from mdp_trt.graph.model import load_model
    from mdp_trt.passes.analyze import analyze as run_analysis

    json_out = _json_target(json_out, force, model)
    analysis = run_analysis(load_model(model, parse_shape(input_shape)), str(model),
                            prune_normalised=prune_embedding)
    render_analysis(analysis, out)
    if json_out:
        write_text(json_out, json.dumps(analysis.to_json(), indent=1))
        out.print(f"wrote {json_out}")


@app.command()
def profile(
    model: Path = typer.Argument(..., help="ONNX model"),
    backend: str = typer.Option(DEFAULT_BACKEND, help=BACKEND_HELP),
    group_size: int = typer.Option(16, help="channels per pruning unit"),
    max_options: Optional[int] = _max_options_option(),
    threads: int = typer.Option(1, help="runtime threads (1 gives the most stable timings)"),
    precision: str = _precision_option(),
    channels_last: bool = _channels_last_option(),
    weights: str = _weights_option(),
    cache: Optional[Path] = typer.Option(None, help="SQLite latency cache (default: user cache dir)"),
    input_shape: Optional[str] = typer.Option(None, help="fix dynamic input dims"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the tables as JSON"),
    ray: Optional[str] = typer.Option(None, "--ray", metavar="ADDRESS", help=RAY_HELP),
    workers: Optional[int] = typer.Option(None, help=WORKERS_HELP),
    cells: Optional[str] = _cells_option(),
    interpolate: Optional[int] = typer.Option(
        None, metavar="K", help="measure every K-th width per axis (plus held-back cells that "
        "report the error) and interpolate the rest (instead of --cells)"),
    surface: Optional[bool] = _surface_option(),
    prune_embedding: bool = _embedding_option(),
    force: bool = _force_option("an existing --json file"),
) -> None:
    """Measure (or load from the cache) the bilayer latency table of every prunable layer."""
    from mdp_trt.analysis import check_max_options, limit_options, require_prunable
    from mdp_trt.graph.model import initializer_bytes, load_model
    from mdp_trt.latency.tables.cache import LatencyCache
    from mdp_trt.latency.tables.ray_runner import cells_option, check_ray_flags
    from mdp_trt.latency.backends.registry import backend_options, cell_weights, get_backend
    from mdp_trt.latency.tables.adaptive import describe as describe_adaptive
    from mdp_trt.latency.tables.overhead import describe_overhead
    from mdp_trt.latency.tables.surface import describe as describe_surface
    from mdp_trt.latency.tables import check_cells, profile_tables
    from mdp_trt.passes.analyze import analyze as run_analysis

    if group_size < 1:
        raise InputError(f"--group-size {group_size} must be >= 1")
    check_max_options(max_options)  # before a large model is loaded and analysed
    check_cells(cells, interpolate)
    check_ray_flags(ray, workers)
    get_backend(backend, **backend_options(  # flags and runtime checked before loading
        backend, threads=threads, precision=precision, channels_last=channels_last,
        weights="hot" if weights == "auto" else weights))
    json_out = _json_target(json_out, force, model)
    store = LatencyCache(cache)  # a bad cache is refused before the model loads
    loaded = load_model(model, parse_shape(input_shape))
    options = backend_options(backend, threads=threads, precision=precision,
                              channels_last=channels_last,
                              weights=cell_weights(weights, backend, initializer_bytes(loaded)))
    analysis = limit_options(run_analysis(loaded, str(model), prune_normalised=prune_embedding),
                             group_size, max_options)
    require_prunable(analysis)
    with store, get_backend(backend, **options) as runtime:
        tables = profile_tables(analysis, group_size=group_size, backend=runtime, cache=store,
                                progress=True, cells=cells, interpolate=interpolate,
                                surface=surface,
                                measure_cells=cells_option(ray, workers, runtime, options))
    out.print(f"{len(tables.tables)} layer tables: {tables.cells_measured} cells measured, "
              f"{tables.cells_cached} from the cache, {tables.seconds:.1f} s")
    if design := describe_adaptive(tables.adaptive):
        out.print(design)
    if fit := describe_surface(tables.surface):
        out.print(fit)
    if tables.call_overhead_ms:
        out.print(describe_overhead(tables.call_overhead_ms))
    report = tables.interpolation
    if report and report["held_back"]:
        out.print(f"interpolated {report['cells_interpolated']} cells from {report['cells_grid']}; "
                  f"error on {report['held_back']} held-back cells: mean "
                  f"{100 * report['mean_rel_error']:.1f}%, max {100 * report['max_rel_error']:.1f}%")
    if tables.drift and tables.drift["max_drift"] > 0:
        out.print(f"reference cell drift during profiling: up to {100 * tables.drift['max_drift']:.0f}%"
                  f", {tables.drift['remeasured_cells']} cell timings repeated")
    if json_out:
        write_text(json_out, json.dumps(tables.to_json()))
        out.print(f"wrote {json_out}")


@app.command()
def solve(
    problem: Path = typer.Argument(..., help="mdp-minlp-instance/1 JSON file"),
    solver: str = typer.Option("exact", help="exact, milp, mindtpy or greedy"),
    time_limit: Optional[float] = typer.Option(None, help="seconds"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the plan as JSON"),
    force: bool = _force_option("an existing --json file"),
) -> None:
    """Solve a pruning problem and print the plan (exit 3 when the budget is infeasible)."""
    from mdp_trt.errors import InfeasibleBudget
    from mdp_trt.solve import load_problem, solve as run_solver
    from mdp_trt.solve.registry import check_solver

    check_solver(solver, time_limit)
    json_out = _json_target(json_out, force, problem)
    plan = run_solver(load_problem(problem), solver, time_limit)
    if json_out:
        write_text(json_out, json.dumps(plan.to_json(), indent=1))
    out.print(f"{plan.solver}: {plan.status}, objective {plan.objective}, bound {plan.bound}, "
              f"latency {plan.latency}, {plan.solve_seconds * 1000:.1f} ms")
    if plan.status == "infeasible":
        raise InfeasibleBudget(f"infeasible: the smallest achievable latency is {plan.min_latency} "
                               "(problem units)", min_latency=plan.min_latency, unit="problem")


@app.command()
def bench(
    models: list[Path] = typer.Argument(..., help="ONNX model(s); several are timed together "
                                        "(interleaved) and compared with the first"),
    backend: str = typer.Option(DEFAULT_BACKEND, help=BACKEND_HELP),
    threads: int = typer.Option(1, help="runtime threads"),
    precision: str = _precision_option(),
    channels_last: bool = _channels_last_option(),
    batch: Optional[int] = typer.Option(None, help="batch size for a dynamic leading dimension"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the figures as JSON "
                                            "(a list for several models)"),
    force: bool = _force_option("an existing --json file"),
) -> None:
    """Measure end-to-end latency and FPS of a model, or compare several (e.g. original and
    pruned) timed in alternating blocks, so that a slow spell of the machine falls on all."""
    from mdp_trt.bench.measure import benchmark_model, benchmark_models
    from mdp_trt.latency.backends.registry import backend_options, get_backend

    for model in models:
        if not model.is_file():
            raise InputError(f"{model}: no such file")
    json_out = _json_target(json_out, force, *models)
    options = backend_options(backend, threads=threads, precision=precision,
                              channels_last=channels_last)
    with get_backend(backend, **options) as runtime:
        results = ([benchmark_model(models[0], runtime, batch=batch)] if len(models) == 1
                   else benchmark_models(models, runtime, batch=batch))
    for model, result in zip(models, results):
        ratio = result.ratio
        versus = "" if ratio is None else (
            f", {ratio.value:.4f} x {models[0].name} (95% interval [{ratio.low:.4f}, "
            f"{ratio.high:.4f}], {ratio.rounds} interleaved rounds"
            f"{'' if ratio.reliable else '; too wide: UNRELIABLE, the machine is too busy'})")
        out.print(f"{model}: {result.latency_ms:.3f} ms median, {result.fps:.1f} FPS "
                  f"({backend}){versus}")
    if json_out:
        figures = [r.to_json() for r in results]
        write_text(json_out, json.dumps(figures[0] if len(models) == 1 else figures, indent=1))


@app.command()
def build(
    model: Path = typer.Argument(..., help="ONNX model"),
    output: Path = typer.Option(..., "-o", "--output", help="engine file to write"),
    fp16: bool = typer.Option(False, "--fp16"),
    int8: bool = typer.Option(False, "--int8", help="needs Q/DQ nodes in the model"),
    workspace_mib: int = typer.Option(4096, help="scratch memory tactics may use, MiB"),
    optimization_level: int = typer.Option(3, help="builder optimisation level 0-5"),
    force: bool = _force_option("an existing engine file"),
) -> None:
    """Build a TensorRT engine (needs the tensorrt package and an NVIDIA GPU)."""
    from mdp_trt.deploy.tensorrt import build_engine

    check_output_file(output, flag="-o", inputs=[model], force=force)
    build_engine(model, output, fp16=fp16, int8=int8, workspace_mib=workspace_mib,
                 optimization_level=optimization_level)
    out.print(f"wrote {output}")


def _prune_options(**kwargs):
    from mdp_trt.prune import PruneOptions

    return PruneOptions(**kwargs)


@app.command()
def prune(
    model: Path = typer.Argument(..., help="ONNX model"),
    output: Path = typer.Option(..., "-o", "--output", help="output directory"),
    budget: Optional[float] = typer.Option(None, help="latency budget as a fraction of the measured baseline"),
    budget_ms: Optional[float] = typer.Option(None, help="latency budget in ms"),
    backend: str = typer.Option(DEFAULT_BACKEND, help=BACKEND_HELP),
    threads: int = typer.Option(1, help="runtime threads (1 gives the most stable timings)"),
    precision: str = _precision_option(),
    channels_last: bool = _channels_last_option(),
    weights: str = _weights_option(),
    importance: str = typer.Option("magnitude", help="channel importance: magnitude (data-free) "
                                   "or taylor (gradients on --calib-data)"),
    calib_data: Optional[Path] = typer.Option(
        None, "--calib-data", "--calib", help="data for --importance taylor's gradients: an .npz "
        "(x, optional y) or a folder of images (--calib is the same flag)"),
    method: str = typer.Option("mdp", help="mdp (channels + blocks), or a baseline: mdp-channels, "
                               "halp (output-only latency, greedy), uniform (same fraction everywhere)"),
    group_size: int = typer.Option(16, help="channels per pruning unit"),
    max_options: Optional[int] = _max_options_option(),
    cells: Optional[str] = _cells_option(),
    interpolate: Optional[int] = typer.Option(
        None, metavar="K", help="latency tables from every K-th width, the rest interpolated "
        "(instead of --cells)"),
    surface: Optional[bool] = _surface_option(),
    calibration: str = typer.Option("per-layer", help="map from table sums to model latency: "
                                    "per-layer (each layer's in-model/table ratio from the "
                                    "runtime's profiler on the original and a half-width probe; "
                                    "two-point where the backend profiles no nodes), two-point "
                                    "(one scale through both models, measured) or constant (the "
                                    "original only)"),
    solver: str = typer.Option("exact", help="exact, milp, mindtpy or greedy"),
    time_limit: Optional[float] = typer.Option(None, help="solver time limit, seconds"),
    cache: Optional[Path] = typer.Option(None, help="SQLite latency cache (default: user cache dir)"),
    input_shape: Optional[str] = typer.Option(None, help="fix dynamic input dims"),
    prune_embedding: bool = _embedding_option(),
    force: bool = typer.Option(False, help="replace the output folder of an earlier run (never "
                               "a folder holding files mdp-trt did not write)"),
    resume: bool = typer.Option(False, help="reuse the finished run in --output: its importance "
                                "scores when the model, --importance and --calib-data are the same "
                                "(measured latency cells always come from the cache); its files "
                                "are replaced by the new run's, files you added there are kept"),
    ray: Optional[str] = typer.Option(None, "--ray", metavar="ADDRESS", help=RAY_HELP),
    workers: Optional[int] = typer.Option(None, help=WORKERS_HELP),
    allow_over: bool = typer.Option(False, "--allow-over", help="exit 0 when the best plan is "
                                    "measured over the budget beyond the tolerance (default: "
                                    "exit 5; the plan is written either way)"),
    confirm_windows: int = typer.Option(3, help="a plan is accepted after this many timings "
                                        "with the original, --confirm-gap-seconds apart; the "
                                        "slowest counts (1: one timing)"),
    confirm_gap_seconds: float = typer.Option(10.0, help="seconds between those timings (the "
                                              "machine's state changes over tens of seconds)"),
) -> None:
    """Prune MODEL to a latency budget and write pruned.onnx, plan.json, problem.json, report.json.
    Exit 3 when no plan can reach the budget, 5 when the best plan measured misses it."""
    from mdp_trt.prune import prune as run_prune
    from mdp_trt.report import format_summary

    check_output_folder(output, inputs=[model, calib_data], force=force or resume,
                        keep_foreign=resume)
    report = run_prune(model, output, _prune_options(
        budget=budget, budget_ms=budget_ms, backend=backend, threads=threads,
        precision=precision, channels_last=channels_last, weights=weights,
        importance=importance, calib_data=calib_data, method=method, group_size=group_size,
        max_options=max_options, cells=cells, interpolate=interpolate, surface=surface,
        calibration=calibration,
        solver=solver, time_limit=time_limit, cache=cache, input_shape=parse_shape(input_shape),
        force=force, resume=resume, ray=ray, workers=workers, confirm_windows=confirm_windows,
        confirm_gap_seconds=confirm_gap_seconds, prune_embedding=prune_embedding))
    out.print(format_summary(report))
    out.print(f"wrote {output}/pruned.onnx, plan.json, problem.json, report.json")
    _require_budget(report, output, allow_over)


def _require_budget(report, output: Path, allow_over: bool) -> None:
    """Exit 5 (after the files are written) when the adopted plan missed the budget."""
    from mdp_trt.errors import BudgetNotConfirmed

    if report.budget_status == "unreliable" and not allow_over:
        ratio = report.measurement
        raise BudgetNotConfirmed(
            f"budget not confirmed: the plan written to {output} measured "
            f"{report.measured_latency_ms:.2f} ms for a {report.budget_ms:.2f} ms budget, but "
            f"its ratio to the original, {ratio['value']:.4f}, has a 95% interval "
            f"[{ratio['low']:.4f}, {ratio['high']:.4f}] wider than the timing allows after "
            f"{ratio['rounds']} rounds: the machine is too busy to measure reliably. Re-run on a "
            "quieter machine, check with benchmarks/retime.py, or pass --allow-over to accept it")
    if report.budget_status == "over" and not allow_over:
        raise BudgetNotConfirmed(
            f"budget not met: the fastest plan measured {report.measured_latency_ms:.2f} ms for a "
            f"{report.budget_ms:.2f} ms budget ({report.measured_latency_ms / report.budget_ms - 1:.1%}"
            f" over, tolerance {report.tolerance:.0%}); it is written to {output} for inspection. "
            "Pass --allow-over to accept it with exit 0, or raise the budget")


@app.command()
def finetune(
    model: Path = typer.Argument(..., help="the pruned ONNX model (the student)"),
    teacher: Path = typer.Option(..., help="the original ONNX model it was pruned from"),
    data: Path = typer.Option(..., help="training data: an .npz (x, optional y) or a folder of "
                              "images (class sub-folders give labels)"),
    output: Path = typer.Option(..., "-o", "--output", help="fine-tuned ONNX model to write"),
    epochs: int = typer.Option(1, help="passes over the data"),
    batch_size: int = typer.Option(64, help="samples per optimizer step"),
    lr: float = typer.Option(1e-3, help="Adam learning rate"),
    checkpoint: Optional[Path] = typer.Option(
        None, help="state saved after every epoch; an existing one is resumed"),
    seed: int = typer.Option(0, help="seeds the batch order"),
    force: bool = _force_option("an existing output file"),
) -> None:
    """Recover a pruned model's accuracy: distil the teacher into it on DATA, write OUTPUT."""
    require("torch", "`mdp-trt finetune`")
    from mdp_trt.data import load_dataset
    from mdp_trt.finetune import FinetuneOptions, finetune as run_finetune
    from mdp_trt.graph import load_model

    options = FinetuneOptions(epochs=epochs, batch_size=batch_size, lr=lr, checkpoint=checkpoint,
                              seed=seed)  # checks the flags
    check_output_file(output, flag="-o", inputs=[model, teacher, data, checkpoint], force=force)
    if checkpoint is not None:
        check_output_file(checkpoint, flag="--checkpoint", inputs=[model, teacher, data, output],
                          force=True)
    dataset = load_dataset(data, tuple(load_model(model).graph.inputs[0].shape))
    result = run_finetune(model, teacher, dataset, output, options)
    losses = ", ".join(f"{loss:.4f}" for loss in result.losses)
    out.print(f"{result.epochs} epochs in {result.seconds:.1f} s (resumed after "
              f"{result.resumed_from}); loss per epoch: {losses}")
    out.print(f"wrote {output}")


@app.command()
def progressive(
    model: Path = typer.Argument(..., help="ONNX model"),
    output: Path = typer.Option(..., "-o", "--output", help="output directory"),
    budget: float = typer.Option(..., help="final latency as a fraction of MODEL's measured latency"),
    steps: int = typer.Option(3, help="prune + fine-tune steps; step k aims at budget^(k/steps)"),
    data: Path = typer.Option(..., help="fine-tuning data: an .npz (x, optional y) or a folder of images"),
    eval_data: Optional[Path] = typer.Option(None, "--eval", help="labelled data: accuracy per step"),
    epochs: int = typer.Option(1, help="fine-tuning epochs per step"),
    method: str = typer.Option("mdp", help="mdp, mdp-channels, halp or uniform (see prune)"),
    importance: str = typer.Option("magnitude", help="magnitude or taylor (gradients on --data)"),
    group_size: int = typer.Option(16, help="channels per pruning unit"),
    threads: int = typer.Option(1, help="runtime threads"),
    cache: Optional[Path] = typer.Option(None, help="SQLite latency cache (default: user cache dir)"),
    input_shape: Optional[str] = typer.Option(None, help="fix dynamic input dims"),
    seed: int = typer.Option(0, help="seeds the fine-tuning batch order"),
    force: bool = typer.Option(False, help="replace the output folder of an earlier run"),
) -> None:
    """Prune in STEPS steps with fine-tuning between (the original is the teacher); writes
    step1..stepN/, final.onnx and summary.json."""
    require("torch", "`mdp-trt progressive`")
    from mdp_trt.data import load_dataset
    from mdp_trt.finetune import FinetuneOptions
    from mdp_trt.graph import load_model
    from mdp_trt.progressive import ProgressiveOptions, progressive as run_progressive

    check_output_folder(output, inputs=[model, data, eval_data], force=force)
    options = ProgressiveOptions(
        budget=budget, steps=steps, force=force,
        prune=_prune_options(threads=threads, importance=importance,
                             calib_data=data if importance == "taylor" else None,
                             method=method,
                             group_size=group_size, cache=cache,
                             input_shape=parse_shape(input_shape)),
        finetune=FinetuneOptions(epochs=epochs, seed=seed))
    shape = tuple(load_model(model, parse_shape(input_shape)).graph.inputs[0].shape)
    train = load_dataset(data, shape)
    evaluate = load_dataset(eval_data, shape) if eval_data is not None else None
    summary = run_progressive(model, output, train, options, evaluate)
    for step in summary.steps:
        accuracy = ("" if step.accuracy_finetuned is None else
                    f"; accuracy {step.accuracy_pruned:.2%} pruned, {step.accuracy_finetuned:.2%} fine-tuned")
        out.print(f"step {step.step}: {step.measured_ms:.3f} ms for a {step.budget_ms:.3f} ms budget "
                  f"({step.fraction:.0%} of {summary.baseline_latency_ms:.3f} ms){accuracy}")
    out.print(f"wrote {output}/final.onnx, summary.json, step1..step{steps}/")


@app.command()
def demo(
    output: Path = typer.Option(DEFAULT_DEMO_DIR, "-o", "--output", help="output directory"),
    arch: str = typer.Option("resnet18", help="torchvision architecture"),
    budget: float = typer.Option(0.5, help="latency budget as a fraction of the baseline"),
    group_size: int = typer.Option(32, help="channels per pruning unit"),
    cache: Optional[Path] = typer.Option(None, help="SQLite latency cache"),
    input_shape: str = typer.Option("1x3x224x224", help="static input shape NxCxHxW"),
) -> None:
    """Export a ResNet-18 (224x224) and prune it to 50% of its latency on ONNX Runtime CPU.
    A second run replaces the first one's folder (never a folder of other files)."""
    require("torch", "`mdp-trt demo` (it exports a torchvision model)")
    from mdp_trt.models.export import ExportOptions, export_architecture
    from mdp_trt.prune import prune as run_prune
    from mdp_trt.report import format_summary

    shape = parse_shape(input_shape)
    with output_folder(output, command="demo", force=True) as work:
        model = export_architecture(arch, work / f"{arch}.onnx", ExportOptions(input_shape=shape))
        out.print(f"exported {output / model.name}")
        report = run_prune(model, work / "pruned", _prune_options(
            budget=budget, group_size=group_size, cache=cache))
    out.print(format_summary(report))
    _require_budget(report, output / "pruned", allow_over=False)
    out.print(f"wrote {output}/pruned/ (pruned.onnx, plan.json, problem.json, report.json)")


def _flags() -> dict[str, str]:
    """Each command option's parameter name and its flag, as the commands declare them (an
    alias after a slash: ``calib_data`` is ``--calib-data/--calib``)."""
    commands = typer.main.get_command(app).commands.values()
    return {param.name: "/".join(opt for opt in param.opts if opt.startswith("--"))
            for command in commands for param in command.params
            if param.param_type_name == "option"}


def _flag_message(exc: MdpTrtError) -> str:
    """The error as a command-line user reads it: each parameter it names (``exc.parameters``,
    written `name` in the library's message) spelled as its flag."""
    message, spelled = str(exc), _flags()
    for parameter in exc.parameters:
        # a parameter no command sets (tests/test_errors.py allows none) keeps its library name
        message = message.replace(f"`{parameter}`", spelled.get(parameter, parameter))
    return message


_SIGNALS = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM", signal.SIGHUP: "SIGHUP"}


def _raise_interrupted(signum: int, frame) -> None:
    # Later signals are ignored so that the clean-up the first one starts can finish.
    for other in _SIGNALS:
        signal.signal(other, signal.SIG_IGN)
    if _dropping(frame):
        # Python drops an exception raised in an import lock's callback or a finaliser ("Exception
        # ignored in ...") and the run would go on to its end (seen in CI: a SIGTERM during a
        # lazy import): raised again just after, once the frame is one that propagates it.
        signal.signal(signal.SIGALRM, lambda _, later: _raise_interrupted(signum, later))
        signal.setitimer(signal.ITIMER_REAL, 0.02)
        return
    raise Interrupted(signum, _SIGNALS[signum])


def _dropping(frame) -> bool:
    """Whether an exception raised in ``frame`` would be dropped by the interpreter."""
    return frame is not None and (frame.f_code.co_filename.startswith("<frozen importlib")
                                  or frame.f_code.co_name == "__del__")


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    previous = {signum: signal.signal(signum, _raise_interrupted) for signum in _SIGNALS}
    previous[signal.SIGALRM] = signal.getsignal(signal.SIGALRM)  # a deferred signal arms it
    try:
        # typer handles usage errors itself (exit 2)
        app(args=argv)
    except MdpTrtError as exc:
        err.print(Text.assemble(("error: ", "bold red"), _flag_message(exc)))
        sys.exit(exc.exit_code)
    except Interrupted as exc:
        err.print(Text.assemble(("interrupted ", "bold red"), f"({exc.name}): nothing "
                                "half-written was left; measured latency cells are kept"))
        sys.exit(exc.exit_code)
    finally:
        if signal.getsignal(signal.SIGALRM) is not previous[signal.SIGALRM]:
            signal.setitimer(signal.ITIMER_REAL, 0)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
