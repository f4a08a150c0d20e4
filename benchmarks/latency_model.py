"""Latency-model accuracy: predicted vs measured end-to-end latency of pruned ResNets.

On ORT CPU by default; ``--backend torch-cuda`` (with ``--precision``, ``--channels-last`` and
``--batch``) runs the same benchmark on a GPU, where the whole model is timed through
TorchGraph with CUDA events. For each architecture and thread count: export the model, measure it, fill its bilayer tables,
then build pruned models for solver plans (budgets spread over ``--budgets``) and random valid
plans (random widths per group, a few blocks removed), cut them with ``apply_plan``, and time
all of them together with the original on the same backend (``benchmark_models``: in alternating
short blocks on CPU, as ``prune`` times its candidates; ``--unpaired``: each alone), once per
pass. Six predictions per plan:

  bilayer   the plan's table cells, each corrected by its layer's in-model/cell ratio (from
            the backend's per-node profile of the original and a half-width probe), summed and
            mapped by the affine fit through both measured models: ``prune``'s default
            calibration (prediction/calibration.py; ours)
  bilayer-2pt  the same without the per-layer ratios: one scale for all layers
  bilayer-const  the same sum + a constant calibrated on the measured original alone
  out-only  the same with every layer at its full input width (HALP-style output-channel model)
  flops     baseline latency x FLOPs(plan) / FLOPs(original) (proportional, calibrated on the
            original)
  affine    a x FLOPs + b, least-squares fitted on this run's own plans (a reference that sees
            the answers)

Prints mean and max absolute percentage error per (model, threads) and writes a PNG of predicted
vs measured. FLOPs (2 x MACs of Conv/Gemm/MatMul) are counted on the pruned ONNX files.

``--cells adaptive|all`` picks which table cells are timed (default: profile_tables' own, adaptive
on CPU backends); ``--cells both`` profiles the adaptive cells first, then the rest of the full
grid into the same cache, and reports both tables' predictions on the same plans and timings, one
result each (the solver's plans come from the adaptive tables, the harder case for them: the
solver seeks out cells that read fast). Adaptive cells use every cached cell, so ``both`` needs a
cache that does not yet hold the model's full grid: the default fresh one in the output folder.

    .venv/bin/python benchmarks/latency_model.py [--archs resnet18 resnet50 timm:NAME] [--threads 1 2]
        [--plans 12] [--group-size 16] [--resolution 224] [--interpolate K | --cells adaptive|all|both]
        [--weights hot|cold|auto]
        [--backend torch-cuda --precision fp16 --channels-last --batch 32 --threads 1]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx

from mdp_trt.bench.measure import benchmark_model, benchmark_models
from mdp_trt.graph import initializer_bytes, load_model, save_model
from mdp_trt.latency.backends.host import cpu_description
from mdp_trt.latency.tables.cache import LatencyCache
from mdp_trt.latency.tables.drift import DriftPolicy
from mdp_trt.latency.backends.registry import backend_options, cell_weights, get_backend
from mdp_trt.latency.tables import profile_tables
from mdp_trt.latency.tables.adaptive import describe as describe_adaptive
from mdp_trt.latency.backends.timing import CELL_POLICY, MODEL_POLICY
from mdp_trt.importance import score_channels
from mdp_trt.models.export import ExportOptions, export_architecture
from mdp_trt.models.third_party import ThirdPartyModel, export_third_party
from mdp_trt.passes import analyze, apply_plan
from mdp_trt.prediction import calibration_through, probe_model, table_sum
from mdp_trt.solve import load_problem, solve
from mdp_trt.solve.formulate import decode_plan, formulate, removable_blocks

MODELS = ("bilayer", "bilayer-2pt", "bilayer-const", "out-only", "flops", "affine")


def count_flops(path: Path) -> float:
    """2 x multiply-accumulates of every Conv, Gemm and MatMul, from inferred shapes."""
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path), load_external_data=False))
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in (*model.graph.value_info, *model.graph.input, *model.graph.output)}
    shapes.update({init.name: list(init.dims) for init in model.graph.initializer})
    total = 0.0
    for node in model.graph.node:
        if node.op_type == "Conv":
            weight, out = shapes[node.input[1]], shapes[node.output[0]]
            total += 2 * np.prod(out, dtype=np.float64) * np.prod(weight[1:], dtype=np.float64)
        elif node.op_type in ("Gemm", "MatMul"):
            out, a = shapes[node.output[0]], shapes[node.input[0]]
            trans_a = any(at.name == "transA" and at.i for at in node.attribute)
            inner = a[-2] if trans_a else a[-1]
            total += 2 * np.prod(out, dtype=np.float64) * inner
    return total


def plans_for(analysis, importance, tables, offset_ms, baseline_ms, args, rng):
    """(label, options, blocks) of the solver plans then the random valid plans."""
    K = [len(g.options(args.group_size)) - 1 for g in analysis.groups]
    n_blocks = len(removable_blocks(analysis))
    plans = []
    n_solver = args.plans // 2
    for budget in np.linspace(args.budgets[0], args.budgets[1], n_solver):
        instance = formulate(analysis, importance, tables.tables, group_size=args.group_size,
                             budget_ms=budget * baseline_ms, offset_ms=offset_ms, name="bench")
        plan = solve(load_problem(instance), "exact")
        if plan.status == "infeasible" or not plan.options:
            print(f"  solver: budget {budget:.2f} infeasible, skipped", flush=True)
            continue
        plans.append((f"solver@{budget:.2f}", list(plan.options), list(plan.blocks)))
    for k in range(args.plans - len(plans)):
        # A target keep fraction per plan, so random plans spread over light to heavy pruning.
        keep = rng.uniform(0.3, 1.0)
        options = [int(np.clip(round(keep * n + rng.normal(0, 0.15 * n)), 1, n))
                   if g.prunable else n for g, n in zip(analysis.groups, K)]
        blocks = [1] + [int(rng.random() > 0.15) for _ in range(n_blocks)]
        plans.append((f"random{k}", options, blocks))
    return plans


def timing_passes(paths: dict[str, Path], backend, passes: int, paired: bool
                  ) -> tuple[dict[str, list[tuple[float, float]]], dict[str, list[dict]]]:
    """Every model timed once per pass, in an order rotated from pass to pass (paired: after the
    original, which comes first because ratios are to the first model). Paired: the
    models of a pass timed together (``benchmark_models``), per model (its ms, the original's ms
    in that pass) and the pass's ratio to the original with its 95% interval (``Ratio`` JSON);
    unpaired: each alone, (its ms, its ms), no ratios."""
    names = list(paths)
    timings: dict[str, list[tuple[float, float]]] = {k: [] for k in paths}
    ratios: dict[str, list[dict]] = {k: [] for k in paths}
    for index in range(passes):
        shift = index * len(names) // passes
        order = names[shift:] + names[:shift]
        if paired:
            # the original first, so that every other model's ratio is to it
            order = ["original", *(k for k in order if k != "original")]
            results = dict(zip(order, benchmark_models([paths[k] for k in order], backend)))
            for k in order:
                timings[k].append((results[k].latency_ms, results["original"].latency_ms))
                if results[k].ratio is not None:
                    ratios[k].append(results[k].ratio.to_json())
        else:
            for k in order:
                alone = benchmark_model(paths[k], backend, rounds=1).latency_ms
                timings[k].append((alone, alone))
    return timings, ratios


def measured_figures(timings: dict[str, list[tuple[float, float]]], paired: bool
                     ) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Each model's figure and the per-pass values it summarises. Unpaired: its fastest pass
    (interference only adds time). Paired, as ``prune`` measures candidates: the median over
    passes of its time / the original's in the same pass, times the original's median: a slow
    spell of the machine falls on both alike (on this 2-core VM whole passes of one model ran
    15-25% slow)."""
    if not paired:
        return ({k: min(ms for ms, _ in v) for k, v in timings.items()},
                {k: [ms for ms, _ in v] for k, v in timings.items()})
    baseline = float(np.median([ms for ms, _ in timings["original"]]))
    passes = {k: [baseline * ms / original for ms, original in v] for k, v in timings.items()}
    return {k: float(np.median(v)) for k, v in passes.items()}, passes


def out_only_sum(analysis, tables, options, removed) -> float:
    """Table sum with each layer at its full input width (the last column)."""
    total = 0.0
    for layer in analysis.layers:
        if layer.block is not None and layer.block in removed:
            continue
        total += tables.tables[layer.name][options[layer.out_group]][-1]
    return total


def profile_variants(analysis, backend, cache, args) -> list[tuple[str | None, bool, tuple]]:
    """(cells, call overhead kept, (tables, seconds)) of each ``--cells`` choice: adaptive
    first, so that its cells are chosen before the rest of the grid is in the cache; the full
    grid's seconds include the adaptive run's (together they time every cell). Under
    ``--call-overhead both`` each again with the overhead kept in its cells (nothing more to
    time: the same cells)."""
    variants = []
    spent = 0.0
    kept = {"taken-out": (False,), "kept": (True,), "both": (False, True)}[args.call_overhead]
    for cells in (("adaptive", "all") if args.cells == "both" else (args.cells,)):
        for keep in kept:
            start = time.perf_counter()
            tables = profile_tables(analysis, group_size=args.group_size, backend=backend,
                                    cache=cache, progress=False, cells=cells,
                                    interpolate=args.interpolate,
                                    drift=None if args.no_drift else DriftPolicy(),
                                    surface=False if args.measured_cells else None,
                                    call_overhead=False if keep else None)
            spent += time.perf_counter() - start
            variants.append((cells, keep, (tables, spent)))
    return variants


def export(arch: str, args, root: Path) -> Path:
    """A torchvision architecture, ``timm:NAME`` built and exported as timm does it
    (``models/third_party.py``; batch 1), or an ONNX file as it is (``models/*.onnx``)."""
    if arch.endswith(".onnx"):
        if not Path(arch).is_file():
            raise SystemExit(f"--archs {arch}: no such ONNX file")
        return Path(arch)
    library, _, name = arch.rpartition(":")
    if library == "timm":
        return export_third_party(ThirdPartyModel("timm", name, args.resolution),
                                  root / f"{name}.onnx")
    if library:
        raise SystemExit(f"--archs {arch}: a torchvision name or timm:NAME")
    shape = (args.batch, 3, args.resolution, args.resolution)
    return export_architecture(arch, root / f"{arch}.onnx", ExportOptions(input_shape=shape))


def run_one(arch, threads, args, root, rng) -> list[dict]:
    """One result per ``--cells`` variant, on the same plans and timings."""
    onnx_path = export(arch, args, root)
    # timm's exporter leaves the batch dynamic: fixed here as the torchvision export fixes it
    shape = None if arch.endswith(".onnx") else (args.batch, 3, args.resolution, args.resolution)
    arch = onnx_path.stem
    model = load_model(onnx_path, input_shape=shape)
    analysis = analyze(model, str(onnx_path))
    importance = score_channels(model, analysis, progress=False)
    original = save_model(model, root / f"{arch}-original.onnx")
    weights = cell_weights(args.weights, args.backend, initializer_bytes(model))
    options = backend_options(args.backend, threads=threads, precision=args.precision,
                              channels_last=args.channels_last, weights=weights)
    backend = get_backend(args.backend, **options,
                          cell_policy=replace(CELL_POLICY, budget_s=args.cell_seconds),
                          model_policy=replace(MODEL_POLICY, budget_s=args.model_seconds))
    with backend, LatencyCache(args.cache or root / "cache.sqlite") as cache:
        variants = profile_variants(analysis, backend, cache, args)
        tables = variants[0][2][0]  # the plans' (adaptive under --cells both)
        full = [len(g.options(args.group_size)) - 1 for g in analysis.groups]
        probe, probe_widths = probe_model(model, analysis, importance, args.group_size)
        widths = {"original": full, "probe": probe_widths}
        paths = {"original": original, "probe": save_model(probe, root / f"{arch}-probe.onnx")}
        # A first timing of the two calibration models places the solver's budgets; the figures
        # below come from the timing passes over every model.
        first = {k: benchmark_model(p, backend).latency_ms for k, p in paths.items()}
        offset0 = first["original"] - table_sum(analysis, tables, full)
        plans = {}
        for label, options, blocks in plans_for(analysis, importance, tables, offset0,
                                                first["original"], args, rng):
            decoded = decode_plan(analysis, importance, args.group_size, options, blocks)
            removed = decoded.removed_blocks
            paths[label] = save_model(apply_plan(model, analysis, decoded.keep, removed),
                                      root / f"{arch}-{threads}t-{label}.onnx")
            plans[label] = (options, blocks, removed)
        timings, ratios = timing_passes(paths, backend, args.passes, paired=not args.unpaired)
        shares = {k: backend.layer_shares(paths[k], analysis.layers) for k in widths}
        device = backend.fingerprint().device
    measured_of, timings = measured_figures(timings, paired=not args.unpaired)
    flops = {k: count_flops(path) for k, path in paths.items() if k != "probe"}
    common = {"arch": arch, "threads": threads, "resolution": analysis.input_shape[-1],
              "backend": backend.name, "device": device, "batch": args.batch,
              "precision": args.precision, "group_size": args.group_size, "weights": weights,
              "calibration_timings_ms": {k: timings[k] for k in ("original", "probe")},
              # How far apart the passes put the same model: no prediction can be trusted below
              # this.
              "repeatability": float(np.median([max(v) / min(v) - 1 for v in timings.values()]))}
    results = []
    for cells, kept, (tables, seconds) in variants:
        if len(variants) > 1:
            print(f"  predicted from the tables of {cells or 'default'} cells, call overhead "
                  f"{'kept' if kept else 'taken out'}:")
        results.append({
            **common, "cells": cells, "call_overhead_kept": kept,
            "call_overhead_ms": tables.call_overhead_ms,
            **predictions(analysis, tables, widths, plans, measured_of, timings, ratios, shares,
                          flops),
            "profile_s": seconds, "cells_measured": tables.cells_measured,
            "cells_cached": tables.cells_cached, "cells_needed": tables.cells_needed,
            "adaptive": tables.adaptive, "interpolation": tables.interpolation,
            "surface": tables.surface, "drift": tables.drift})
    return results


def predictions(analysis, tables, widths, plans, measured_of, timings, ratios, shares,
                flops) -> dict:
    """Every plan's six predictions from ``tables`` against its measured figure, the errors
    per latency model, and the calibration they came from."""
    baseline_ms = measured_of["original"]
    sums = {k: table_sum(analysis, tables, widths[k]) for k in widths}
    offset_ms = baseline_ms - sums["original"]
    global_fit = calibration_through(analysis, tables,
                                     [(widths[k], measured_of[k], None) for k in widths])
    calibration = calibration_through(analysis, tables,
                                      [(widths[k], measured_of[k], shares[k]) for k in widths])
    calibrated = calibration.apply(tables)
    out_offset_ms = baseline_ms - out_only_sum(analysis, tables, widths["original"], frozenset())
    rows = []
    for label, (options, blocks, removed) in plans.items():
        table_ms = table_sum(analysis, tables, options, removed)
        rows.append({
            "plan": label, "measured_ms": measured_of[label], "timings_ms": timings[label],
            "flops": flops[label],
            "bilayer": table_sum(analysis, calibrated, options, removed) + calibration.offset_ms,
            "bilayer-2pt": global_fit.predict(table_ms), "bilayer-const": table_ms + offset_ms,
            "out-only": out_only_sum(analysis, tables, options, removed) + out_offset_ms,
            "flops_prop": baseline_ms * flops[label] / flops["original"],
            "options": options, "blocks": blocks,
            # per pass: the measured ratio to the original and its 95% interval; a plan whose
            # intervals are all within RATIO_HALFWIDTH is "reliable", as prune would call it
            "ratios": ratios[label],
            "reliable": bool(ratios[label]) and all(r["reliable"] for r in ratios[label]),
        })
        r = rows[-1]
        print(f"  {label}: measured {r['measured_ms']:.2f} ms (passes "
              f"{', '.join(f'{t:.2f}' for t in r['timings_ms'])}), bilayer {r['bilayer']:.2f} "
              f"(2pt {r['bilayer-2pt']:.2f}, const {r['bilayer-const']:.2f}), out-only {r['out-only']:.2f}, flops "
              f"{r['flops_prop']:.2f}", flush=True)
    measured = np.array([r["measured_ms"] for r in rows])
    fit = np.linalg.lstsq(np.stack([[r["flops"] for r in rows], np.ones(len(rows))], axis=1),
                          measured, rcond=None)[0]
    for r in rows:
        r["affine"] = float(fit[0] * r["flops"] + fit[1])
    keys = {"bilayer": "bilayer", "bilayer-2pt": "bilayer-2pt", "bilayer-const": "bilayer-const",
            "out-only": "out-only", "flops": "flops_prop", "affine": "affine"}
    errors = {}
    for name, key in keys.items():
        ape = np.abs(np.array([r[key] for r in rows]) - measured) / measured
        errors[name] = {"mean_ape": float(ape.mean()), "max_ape": float(ape.max())}
    return {"baseline_ms": baseline_ms, "offset_ms": offset_ms,
            "calibration": calibration.to_json(), "errors": errors, "plans": rows}


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 5), squeeze=False)
    for ax, res in zip(axes[0], results):
        measured = [r["measured_ms"] for r in res["plans"]]
        for name, key, marker in (("bilayer", "bilayer", "o"), ("bilayer-2pt", "bilayer-2pt", "v"),
                                  ("bilayer-const", "bilayer-const", "D"),
                                  ("out-only", "out-only", "s"),
                                  ("flops", "flops_prop", "^"), ("affine", "affine", "x")):
            if name not in res["errors"]:
                continue  # a run saved before this model was benchmarked
            ax.scatter(measured, [r[key] for r in res["plans"]], marker=marker, label=(
                f"{name} ({100 * res['errors'][name]['mean_ape']:.1f}% mean)"))
        lo, hi = min(measured) * 0.9, max(measured) * 1.1
        ax.plot([lo, hi], [lo, hi], "k--", linewidth=0.8)
        ax.set(xlabel="measured ms", ylabel="predicted ms",
               title=f"{_label(res)}, {res['backend']}, "
                     + (f"{res['threads']} thread(s)" if res["backend"].endswith("cpu") else
                        f"batch {res['batch']} {res['precision']}"))
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["resnet18", "resnet50"])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--plans", type=int, default=12, help="plans per (arch, threads); half "
                        "from the solver, the rest random")
    parser.add_argument("--budgets", nargs=2, type=float, default=[0.3, 0.9])
    parser.add_argument("--group-size", type=int, default=16)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--interpolate", type=int, default=None, metavar="K",
                        help="coarse tables: every K-th width, the rest interpolated")
    parser.add_argument("--cells", choices=["adaptive", "all", "both"], default=None,
                        help="table cells timed: adaptive, all, or both (adaptive first, then the "
                        "rest of the grid; both tables' errors on the same plans); default: "
                        "profile_tables' (adaptive on CPU backends)")
    parser.add_argument("--call-overhead", choices=["taken-out", "kept", "both"],
                        default="taken-out", help="a cell's per-call overhead taken out of the "
                        "tables (profile_tables' default), kept in them (as before 2026-12-08), or "
                        "both, each predicting the same plans")
    parser.add_argument("--measured-cells", action="store_true",
                        help="tables are the measured cells (made monotone on CPU backends), "
                             "not the fitted surface they use by default (results rows 2, 5-23; "
                             "rows 1, 3, 4 used the raw cells, which no flag gives now)")
    parser.add_argument("--weights", choices=["hot", "cold", "auto"], default="hot",
                        help="ort-cpu cells: weights in cache (hot), streamed from memory "
                        "(cold), or cold when the model's weights exceed the last-level cache")
    parser.add_argument("--backend", default="ort-cpu",
                        choices=["ort-cpu", "ort-cuda", "torch-cpu", "torch-cuda"])
    parser.add_argument("--precision", choices=["fp32", "fp16"], default="fp32",
                        help="torch backends only")
    parser.add_argument("--channels-last", action="store_true", help="torch backends only")
    parser.add_argument("--batch", type=int, default=1, help="batch size of the exported models")
    parser.add_argument("--no-drift", action="store_true", help="no reference-cell guard")
    parser.add_argument("--passes", type=int, default=3, help="timing passes over all models "
                        "(all timed together, interleaved; the median ratio to the original "
                        "counts; their spread is printed)")
    parser.add_argument("--unpaired", action="store_true", help="time each model alone, its "
                        "fastest pass counting (the protocol of results rows 1-9, 11, 12)")
    parser.add_argument("--model-seconds", type=float, default=MODEL_POLICY.budget_s,
                        help="timed seconds per whole model and pass")
    parser.add_argument("--cell-seconds", type=float, default=CELL_POLICY.budget_s,
                        help="timed seconds per table cell (GPU cells are steady: 0.02 will do)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=None, help="latency cache (default: a "
                        "fresh one in the output directory)")
    parser.add_argument("--out", type=Path, default=None, help="keep models and results here")
    parser.add_argument("--png", type=Path, default=Path("latency_model.png"))
    parser.add_argument("--md", type=Path, default=None, help="write the error table as markdown")
    parser.add_argument("--render", type=Path, nargs="+", default=None, metavar="JSON",
                        help="no run: draw --png and write --md from saved latency_model.json "
                        "files (runs of several invocations side by side)")
    args = parser.parse_args()
    if args.cells is not None and args.interpolate is not None:
        parser.error("--interpolate K is a cell design of its own: give it or --cells")
    if args.render:
        results = [r for path in args.render for r in json.loads(path.read_text())]
        plot(results, args.png)
        if args.md:
            args.md.write_text(markdown(results))
        return
    root = args.out or Path(tempfile.mkdtemp(prefix="mdp-latency-model-"))
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    results = []
    for arch in args.archs:
        for threads in args.threads:
            size = "" if arch.endswith(".onnx") else f" {args.resolution}px batch {args.batch}"
            print(f"{arch}{size} on {args.backend}, {threads} "
                  "thread(s):", flush=True)
            variants = run_one(arch, threads, args, root, rng)
            results += variants
            for res in variants:
                print(f"  {_variant(res)}: baseline {res['baseline_ms']:.2f} "
                      f"ms, offset {res['offset_ms']:.2f} ms, {res['cells_measured']} cells "
                      f"measured in {res['profile_s']:.0f} s ({res['cells_cached']} cached, "
                      f"{res['cells_needed']} in the full grid); "
                      f"{describe_adaptive(res['adaptive']) or 'not adaptive'}; interpolation "
                      f"{res['interpolation']}; reference drift "
                      f"{res['drift'] and round(res['drift']['max_drift'], 3)}; calibration scale "
                      f"{res['calibration']['scale']:.3f}; the same model's timings differ by "
                      f"{100 * res['repeatability']:.1f}% between passes (median)")
            print("  model (mean / max APE)" + "".join(f"{_variant(res):>18s}"
                                                     for res in variants))
            for name in MODELS:
                print(f"  {name:22s}" + "".join(
                    f"{100 * res['errors'][name]['mean_ape']:8.2f}% /"
                    f"{100 * res['errors'][name]['max_ape']:7.2f}%" for res in variants),
                      flush=True)
    (root / "latency_model.json").write_text(json.dumps(results, indent=1))
    plot(results, args.png)
    if args.md:
        args.md.write_text(markdown(results))
    print(f"results: {root / 'latency_model.json'}, plot: {args.png}")


def _label(result: dict) -> str:
    """The model, and which cells its tables were timed on where ``--cells`` chose them."""
    cells = f", {result['cells']} cells" if result.get("cells") else ""
    kept = ", call overhead kept" if result.get("call_overhead_kept") else ""
    return f"{result['arch']} {result['resolution']}px{cells}{kept}"


def _variant(result: dict) -> str:
    """Which tables predicted: the cells timed, and whether a call's overhead stayed in them."""
    return f"{result['cells'] or 'default'} cells" + (", call kept" if result.get("call_overhead_kept")
                                                      else "")


def _reliable(plans: list[dict]) -> str:
    """How many plans' ratios settled within the interval prune trusts ("-": a run saved before
    ratios were recorded)."""
    if not any("ratios" in p for p in plans):
        return "-"
    return f"{sum(p['reliable'] for p in plans)}/{len(plans)}"


def markdown(results: list[dict]) -> str:
    """One row per (model, threads): error of each latency model, calibration and noise; under
    a line naming the command, the date and the machine."""
    stamp = (f"`.venv/bin/python benchmarks/latency_model.py {' '.join(sys.argv[1:])}`: "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.node()}, "
             f"{cpu_description()}.")
    head = ("| arch | backend | threads/batch | plans | " + " | ".join(
        f"{m} mean / max" for m in MODELS) + " | scale | pass-to-pass spread | reliable plans | cells "
        "| profile s |")
    lines = [stamp, "", head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        where = (f"{r['threads']} thread(s)" if r["backend"].endswith("cpu")
                 else f"batch {r['batch']} {r['precision']}")
        errors = " | ".join(f"{100 * r['errors'][m]['mean_ape']:.1f}% / "
                            f"{100 * r['errors'][m]['max_ape']:.1f}%" if m in r["errors"] else "-"
                            for m in MODELS)
        lines.append(f"| {_label(r)} | {r['backend']} | {where} | "
                     f"{len(r['plans'])} | {errors} | {r['calibration']['scale']:.3f} | "
                     f"{100 * r['repeatability']:.1f}% | {_reliable(r['plans'])} | "
                     f"{r['cells_measured'] + r['cells_cached']}"
                     f" | {r['profile_s']:.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
