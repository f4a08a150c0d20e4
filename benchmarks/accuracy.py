"""Accuracy at equal measured latency, with seeds and intervals: MDP against its baselines and
Torch-Pruning on residual digit classifiers trained here (``mdp_trt.bench.study``).

    .venv/bin/python benchmarks/accuracy.py [--datasets mnist digits] [--budgets 0.2 0.4 0.6 0.8]
        [--methods mdp mdp-channels halp uniform torch-pruning] [--seeds 0 1 2 3 4] [--epochs 3]
        [--importance taylor|magnitude] [--out benchmarks/results] [--quick]

Models: ``models/mnist_resnet_deep.onnx`` (the bundled MNIST digits) and
``models/digits_resnet_deep.onnx`` (scikit-learn's 8x8 digits), each with its PyTorch
checkpoint (.pt) for Torch-Pruning; ``models/train_digits.py`` trains them. Each data set's
study runs in ``OUT/runs/accuracy-DATASET/`` (resumable: a finished step is never redone) and
writes ``OUT/accuracy.md`` (tables), ``OUT/accuracy.json`` (every run) and
``OUT/accuracy_pareto.png`` (fine-tuned test accuracy against the common re-timed latency, mean
and standard deviation over seeds). ``--quick`` (CI): the 8x8 digits, one budget, three methods,
two seeds, two epochs, group size 16, looser timing (``QUICK_TIMING``), into a temporary folder
unless --out is given.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

from mdp_trt.bench.statistics import paired_difference, spread
from mdp_trt.bench.study import (MATCH, STUDY_METHODS, StudyConfig, StudyRuns, is_study_method,
                                 off_reference, references, run_key, run_study)
from mdp_trt.bench.study_sets import STUDY_EPOCHS, STUDY_MODELS
from mdp_trt.errors import MdpTrtError
from mdp_trt.importance.methods import IMPORTANCE_METHODS
from mdp_trt.outputs import write_text

ROOT = Path(__file__).resolve().parent.parent
MDP = "mdp"
# MDP itself without blocks, or scored by another importance (METHOD@IMPORTANCE): not baselines
# to compare MDP with; MDP's paired difference to the latter is given beside the verdict.
ABLATIONS = {"mdp-channels"}
# --quick checks that every step runs and resumes, not that rows agree: one confirmation window,
# a looser landing, paired timings of at most 5 s and no re-prunes for equal latency (matching
# has its own tests) keep it to a few minutes on a 2-core CI host (9 of CI's 37 with the full
# study's timing; 6 with all but the 5 s limit).
QUICK_TIMING = {"confirm_windows": 1, "tolerance": 0.05, "match_rounds": 0, "compare_seconds": 5.0}


def _ablation(method: str) -> bool:
    return method in ABLATIONS or "@" in method


def _study_method(name: str) -> str:
    if not is_study_method(name):
        raise argparse.ArgumentTypeError(
            f"{name!r}: choose from {', '.join(STUDY_METHODS)} or METHOD@IMPORTANCE (mdp@magnitude; "
            f"importances: {', '.join(IMPORTANCE_METHODS)})")
    return name


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", choices=sorted(STUDY_MODELS), default=["mnist", "digits"])
    parser.add_argument("--budgets", nargs="+", type=float, default=[0.2, 0.4, 0.6, 0.8])
    parser.add_argument("--methods", nargs="+", type=_study_method, default=list(STUDY_METHODS),
                        help=f"{', '.join(STUDY_METHODS)}, or an mdp-trt method scored by another "
                             "importance than --importance: METHOD@IMPORTANCE (mdp@magnitude)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--epochs", type=int, default=None,
                        help=f"fine-tuning epochs per run (default per data set: {STUDY_EPOCHS})")
    parser.add_argument("--importance", choices=["magnitude", "taylor"], default="taylor")
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache", type=Path, default=None,
                        help="latency cache shared by every run (default: the user cache)")
    parser.add_argument("--retime-seconds", type=float, default=None,
                        help="longest common re-timing (default: StudyConfig's; --quick: 15)")
    parser.add_argument("--out", type=Path, default=None, help="default: benchmarks/results")
    parser.add_argument("--quick", action="store_true", help="the small variant CI runs")
    args = parser.parse_args()
    if args.quick:
        args.datasets, args.budgets, args.seeds, args.epochs = ["digits"], [0.5], [0, 1], 2
        args.group_size = 16  # a quarter of the cells of group size 8
        args.methods = [MDP, "uniform", "torch-pruning"]
        args.importance = "magnitude"
        args.retime_seconds = 15.0 if args.retime_seconds is None else args.retime_seconds
    return args


def main() -> int:
    args = _arguments()
    try:
        return _study(args)
    except MdpTrtError as exc:  # bad settings or data: the message, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


def _study(args: argparse.Namespace) -> int:
    out = args.out or (Path(tempfile.mkdtemp(prefix="accuracy-quick-")) if args.quick
                       else ROOT / "benchmarks" / "results")
    studies = {}
    for dataset in args.datasets:
        model = STUDY_MODELS[dataset]
        config = StudyConfig(
            dataset=dataset, model=model, module=model.with_suffix(".pt"),
            budgets=tuple(args.budgets), methods=tuple(args.methods), seeds=tuple(args.seeds),
            folder=out / "runs" / f"accuracy-{dataset}", epochs=args.epochs or STUDY_EPOCHS[dataset],
            importance=args.importance, group_size=args.group_size, threads=args.threads,
            cache=args.cache, retime_seconds=(StudyConfig.retime_seconds if args.retime_seconds is None
                                              else args.retime_seconds),
            **(QUICK_TIMING if args.quick else {}))
        print(f"== {dataset}: {model.name}, {len(args.budgets)} budgets x {len(args.methods)} "
              f"methods x {len(args.seeds)} seeds ==", flush=True)
        runs = run_study(config, progress=sys.stderr.isatty())
        studies[dataset] = {"config": config, "runs": runs, "rows": rows_of(config, runs)}
    studies = kept_studies(out / "accuracy.json", studies) | studies
    text = markdown(studies, " ".join(sys.argv[1:]))
    print(text)
    write_text(out / "accuracy.md", text)
    write_text(out / "accuracy.json", json.dumps(
        {d: {"settings": s["config"].settings(), "baseline": s["runs"].baseline,
             "retime": s["runs"].retime, "pruned": s["runs"].pruned,
             "finetuned": s["runs"].finetuned, "rows": s["rows"]} for d, s in studies.items()},
        indent=1, default=str))
    plot(studies, out / "accuracy_pareto.png")
    print(f"wrote {out}/accuracy.md, accuracy.json, accuracy_pareto.png")
    return 0


def kept_studies(path: Path, run: dict) -> dict:
    """The data sets of an earlier ``accuracy.json`` that this command did not run, as studies
    to render again: a study whose run folder is gone (a fresh clone) survives re-running another
    data set. One whose settings differ from today's (another model file) is dropped, with a
    warning."""
    if not path.is_file():
        return {}
    kept = {}
    for dataset, stored in json.loads(path.read_text()).items():
        if dataset in run or dataset not in STUDY_MODELS:
            continue
        rows, settings = stored["rows"], stored["settings"]
        config = StudyConfig(
            dataset=dataset, model=STUDY_MODELS[dataset], module=None,
            budgets=tuple(dict.fromkeys(r["budget"] for r in rows)),
            methods=tuple(dict.fromkeys(r["method"] for r in rows)),
            seeds=tuple(sorted({int(s) for seeds in stored["finetuned"].values() for s in seeds})),
            folder=path.parent / "runs" / f"accuracy-{dataset}", epochs=settings["epochs"],
            importance=settings["importance"], group_size=settings["group_size"],
            threads=settings["threads"])
        if config.settings() != settings:
            print(f"warning: {path}: its {dataset} study has other settings than today's "
                  f"(model file, split): dropped; re-run it with --datasets {dataset}",
                  file=sys.stderr)
            continue
        runs = StudyRuns(baseline=stored["baseline"], pruned=stored["pruned"],
                         retime=stored["retime"], finetuned=stored["finetuned"])
        kept[dataset] = {"config": config, "runs": runs, "rows": rows, "kept": True}
    return kept


def rows_of(config: StudyConfig, runs) -> list[dict]:
    """One row per (budget, method): the common re-timed ratio and the seeds' accuracies; a row
    further than MATCH / 2 from its budget's reference ratio is ``marked`` (not at equal latency)."""
    rows = []
    reference = references(runs.retime["ratios"], config)
    for budget in config.budgets:
        for method in config.methods:
            key = run_key(method, budget)
            pruned, ratio = runs.pruned[key], runs.retime["ratios"].get(key)
            seeds = [r for r in runs.finetuned[key].values() if "accuracy_test" in r]
            row = {"dataset": config.dataset, "budget": budget, "method": method,
                   "removed_blocks": len(pruned.get("removed_blocks", [])),
                   "infeasible": pruned.get("infeasible")}
            if ratio and seeds:
                accuracy = spread([r["accuracy_test"] for r in seeds])
                row.update(ratio=ratio["value"], ratio_low=ratio["low"], ratio_high=ratio["high"],
                           own_ratio=pruned["own_ratio"],
                           accuracy_mean=accuracy.mean, accuracy_sd=accuracy.sd, seeds=accuracy.n,
                           pruned_mean=spread([r["accuracy_pruned_test"] for r in seeds]).mean,
                           by_seed={r["seed"]: r["accuracy_test"] for r in seeds},
                           reference=reference[budget],
                           marked=off_reference(ratio["value"], reference[budget]),
                           reliable=ratio["reliable"],
                           no_plan_nearer=any(t["same_model"] for t in pruned.get("matching", [])),
                           plans=pruned.get("round_ratios"))
            rows.append(row)
    return rows


def _versus_best(rows: list[dict]) -> str:
    """MDP minus the best baseline (by mean) among the rows at the budget's reference latency,
    paired by seed; and any marked baseline that is faster than MDP and more accurate too."""
    mdp = next((r for r in rows if r["method"] == MDP and "by_seed" in r), None)
    others = [r for r in rows if r["method"] != MDP and not _ablation(r["method"]) and "by_seed" in r]
    if mdp is None:
        return "-"
    if mdp["marked"]:
        return "MDP's row is not at the reference latency"
    matched = [r for r in others if not r["marked"]]
    dominating = [r for r in others if r["marked"] and r["ratio"] < mdp["ratio"]
                  and r["accuracy_mean"] > mdp["accuracy_mean"]]
    also = "".join(f"; {r['method']} is faster ({r['ratio']:.3f}) and more accurate "
                   f"({100 * r['accuracy_mean']:.2f})" for r in dominating)
    also += "".join(f"; vs {r['method']}: {_difference(mdp, r)}" for r in rows
                    if "@" in r["method"] and "by_seed" in r and not r["marked"])
    if not matched:
        return ("no baseline reaches this budget" if not others
                else "no baseline at this latency") + also
    best = max(matched, key=lambda r: r["accuracy_mean"])
    return f"vs {best['method']}: {_difference(mdp, best)}" + also


def _difference(row: dict, other: dict) -> str:
    """``row`` minus ``other`` in test accuracy points, paired by seed, with its 95% interval."""
    seeds = sorted(set(row["by_seed"]) & set(other["by_seed"]))
    if len(seeds) < 2:
        return "too few seeds"
    d = paired_difference([row["by_seed"][s] for s in seeds], [other["by_seed"][s] for s in seeds])
    return f"{100 * d.mean:+.2f} [{100 * d.low:+.2f}, {100 * d.high:+.2f}] points, {d.verdict}"


def _agreement(rows: list[dict]) -> str:
    """How far apart the unmarked rows of one budget were re-timed: max / min - 1."""
    ratios = [r["ratio"] for r in rows if "ratio" in r and not r["marked"]]
    if len(ratios) < 2:
        return "-"
    return f"{100 * (max(ratios) / min(ratios) - 1):.1f}% ({len(ratios)} rows)"


def markdown(studies: dict, command: str) -> str:
    lines = ["# Accuracy at equal measured latency (seeds, intervals, Torch-Pruning)", "",
             f"`.venv/bin/python benchmarks/accuracy.py {command}`".replace(" `", "`"), "",
             f"Written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.node()} "
             f"({platform.processor() or platform.machine()}); ORT CPU, batch 1."]
    for dataset, study in studies.items():
        config, runs, rows = study["config"], study["runs"], study["rows"]
        base = runs.baseline
        lines += ["", f"## {dataset}: `models/{config.model.name}`", "",
                  f"Original: {base['baseline_ms']:.3f} ms ({config.threads} thread on "
                  f"{base['fingerprint']['device']}, {base['date']}), test accuracy "
                  f"{base['accuracy_test']:.2%} on {base['sizes']['test']} held-out digits "
                  f"(train {base['sizes']['train']}, validation {base['sizes']['val']}; split seed "
                  f"{config.settings()['split_seed']}). Fine-tuning: {config.epochs} epochs of "
                  f"distillation per seed; importance {config.importance}; group size "
                  f"{config.group_size}. Re-timing of every pruned model with the original in one "
                  f"interleaved session: {runs.retime.get('date', '-')}.", "",
                  *(["This data set was not run by the command above: its section is kept from "
                     "the previous accuracy.json (same model file).", ""]
                    if study.get("kept") else []),
                  "| budget | method | re-timed ratio [95% CI] | own ratio | blocks removed | "
                  "acc. pruned | acc. fine-tuned, mean ± sd (n) | MDP vs best baseline |",
                  "|---|---|---|---|---|---|---|---|"]
        for budget in config.budgets:
            at = [r for r in rows if r["budget"] == budget]
            versus = _versus_best(at)
            for row in at:
                lines.append(_row(row, versus if row["method"] == MDP else ""))
        lines += ["", f"Each budget's reference is the median of its rows' re-timed ratios; a row "
                  f"further than {MATCH / 2:.1%} from it was pruned again for it (its own "
                  "measurement's bias corrected, half the tolerance), up to "
                  f"{config.match_rounds} times. Rows marked * are still further: not at equal "
                  "latency, left out of the comparison (** : the method has no plan nearer; its "
                  "closed loop's plans measured the ratios in brackets). Unmarked rows agree "
                  "within (max / min - 1): " + ", ".join(
                      f"{b:g}: {_agreement([r for r in rows if r['budget'] == b])}"
                      for b in config.budgets) + "."]
        lines += _structure(config, runs)
    return "\n".join(lines) + "\n"


def _structure(config: StudyConfig, runs) -> list[str]:
    """For a transformer: the heads, MLP channels and blocks each row's model kept."""
    from mdp_trt.analysis import kept_structure
    from mdp_trt.graph import load_model
    from mdp_trt.passes import analyze

    analysis = analyze(load_model(config.model), str(config.model))
    if not any(g.bundle > 1 for g in analysis.groups):
        return []
    lines = ["", "What each model kept (attention heads, MLP channels; none of a removed block) and "
             "removed (blocks: a transformer block's attention and its MLP count one each):", "",
             "| budget | method | heads kept | MLP channels kept | blocks removed |", "|---|---|---|---|---|"]
    for budget in config.budgets:
        for method in config.methods:
            pruned = runs.pruned[run_key(method, budget)]
            if "kept_channels" in pruned:
                kept = kept_structure(analysis, pruned["kept_channels"], pruned["removed_blocks"])
                lines.append(f"| {budget:g} | {method} | {kept['heads kept']} | {kept['MLP kept']} | "
                             f"{len(pruned['removed_blocks'])} |")
    return lines


def _row(row: dict, versus: str) -> str:
    if "ratio" not in row:
        return (f"| {row['budget']:g} | {row['method']} | {row['infeasible'] or 'not run'} "
                "| - | - | - | - | - |")
    mark = ("**" if row["no_plan_nearer"] else "*") if row["marked"] else ""
    mark += "" if row["reliable"] else " (unreliable)"
    if row["marked"] and row["no_plan_nearer"] and row["plans"]:
        mark += " (" + ", ".join(f"{p:.2f}" for p in row["plans"]) + ")"
    return (f"| {row['budget']:g} | {row['method']} | {row['ratio']:.3f}{mark} "
            f"[{row['ratio_low']:.3f}, {row['ratio_high']:.3f}] | {row['own_ratio']:.3f} | "
            f"{row['removed_blocks']} | {row['pruned_mean']:.2%} | {100 * row['accuracy_mean']:.2f} "
            f"± {100 * row['accuracy_sd']:.2f} ({row['seeds']}) | {versus} |")


def plot(studies: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(studies), figsize=(6.4 * len(studies), 4.6), squeeze=False)
    for axis, (dataset, study) in zip(axes[0], studies.items()):
        for method in study["config"].methods:
            points = sorted((r["ratio"], 100 * r["accuracy_mean"], 100 * r["accuracy_sd"])
                            for r in study["rows"] if r["method"] == method and "ratio" in r)
            if points:
                x, y, sd = zip(*points)
                axis.errorbar(x, y, yerr=sd, marker="o", capsize=3, label=method)
        axis.plot([1.0], [100 * study["runs"].baseline["accuracy_test"]], marker="*",
                  markersize=12, linestyle="none", color="black", label="original")
        axis.set_xlabel("latency / original (re-timed together, ORT CPU)")
        axis.set_ylabel("test accuracy after fine-tuning, % (mean ± sd over seeds)")
        axis.set_title(f"{dataset}: {study['config'].model.name}")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    partial = path.with_name(path.name + ".partial.png")
    figure.savefig(partial, dpi=120)
    plt.close(figure)
    partial.replace(path)


if __name__ == "__main__":
    sys.exit(main())
