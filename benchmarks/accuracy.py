"""Accuracy at equal measured latency: MDP against its baselines on the bundled MNIST ResNet.

For each budget and method, ``models/mnist_resnet.onnx`` is pruned by the same pipeline (the
closed loop re-solves until the MEASURED latency meets the budget), then fine-tuned for the same
number of epochs on the training split with the original model as the distillation teacher.
Accuracy is measured on the held-out test split (1000 digits) before and after fine-tuning.
Every method prunes to the same absolute budget in ms (a fraction of one measurement of the
original), and all runs share one latency cache, so the methods differ only in their choices.

Writes into ``--out`` (default benchmarks/results/): ``accuracy.md`` (the table),
``accuracy.json`` (the rows), ``accuracy_pareto.png`` (measured latency against fine-tuned
accuracy, one line per method) and the pruned/fine-tuned models under ``runs/``.

    .venv/bin/python benchmarks/accuracy.py [--budgets 0.3 0.4 0.5 0.6 0.7 0.8]
        [--methods mdp mdp-channels halp uniform] [--epochs 3] [--importance magnitude|taylor]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from mdp_trt.bench.accuracy import evaluate_accuracy
from mdp_trt.bench.measure import benchmark_model
from mdp_trt.data.mnist import mnist_splits, save_mnist_splits
from mdp_trt.errors import InfeasibleBudget
from mdp_trt.finetune import FinetuneOptions, finetune
from mdp_trt.latency.backends.registry import get_backend
from mdp_trt.prune import PruneOptions, prune
from mdp_trt.solve.methods import METHODS

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = ("method", "budget", "budget ms", "measured ms", "measured/budget", "removed blocks",
           "acc pruned", "acc fine-tuned", "seconds")


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "mnist_resnet.onnx")
    parser.add_argument("--budgets", nargs="+", type=float, default=[0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs per run")
    parser.add_argument("--importance", choices=["magnitude", "taylor"], default="magnitude")
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0, help="data split and fine-tuning seed")
    parser.add_argument("--cache", type=Path, default=None,
                        help="latency cache shared by every run (default: the user cache)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    return parser.parse_args()


def main() -> None:
    args = _arguments()
    args.out.mkdir(parents=True, exist_ok=True)
    train, test = mnist_splits(args.seed)
    train_npz, _ = save_mnist_splits(args.out / "data", args.seed)
    with get_backend("ort-cpu", threads=args.threads) as backend:
        baseline = benchmark_model(args.model, backend)
    baseline_ms, accuracy_original = baseline.latency_ms, evaluate_accuracy(args.model, test)
    print(f"original: {baseline_ms:.3f} ms (batch {baseline.batch}, {args.threads} thread), "
          f"test accuracy {accuracy_original:.2%}\n")
    print("| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS), flush=True)
    rows = []
    for budget in args.budgets:
        for method in args.methods:
            rows.append(_run(args, method, budget, baseline_ms, train, test, train_npz))
            print(_markdown_row(rows[-1]), flush=True)
    meta = {"model": str(args.model), "baseline_ms": baseline_ms, "batch": baseline.batch,
            "threads": args.threads, "accuracy_original": accuracy_original, "epochs": args.epochs,
            "importance": args.importance, "group_size": args.group_size, "seed": args.seed}
    (args.out / "accuracy.json").write_text(json.dumps({**meta, "rows": rows}, indent=1))
    (args.out / "accuracy.md").write_text(_markdown(meta, rows))
    _plot(meta, rows, args.out / "accuracy_pareto.png")
    print(f"\nwrote {args.out}/accuracy.md, accuracy.json, accuracy_pareto.png")


def _run(args, method, budget, baseline_ms, train, test, train_npz) -> dict:
    start = time.perf_counter()
    folder = args.out / "runs" / f"{method}-{budget:g}"
    calib = {"calib_data": train_npz} if args.importance == "taylor" else {}
    row = {"method": method, "budget": budget, "budget_ms": budget * baseline_ms}
    try:
        report = prune(args.model, folder, PruneOptions(
            budget_ms=budget * baseline_ms, method=method, importance=args.importance, **calib,
            group_size=args.group_size, threads=args.threads, cache=args.cache, force=True,
            progress=False))
    except InfeasibleBudget as exc:
        return {**row, "infeasible": str(exc), "seconds": time.perf_counter() - start}
    finetune(folder / "pruned.onnx", args.model, train, folder / "finetuned.onnx",
             FinetuneOptions(epochs=args.epochs, seed=args.seed, progress=False))
    return {**row, "measured_ms": report.measured_latency_ms,
            "removed_blocks": report.removed_blocks, "rounds": len(report.rounds),
            "accuracy_pruned": evaluate_accuracy(folder / "pruned.onnx", test),
            "accuracy_finetuned": evaluate_accuracy(folder / "finetuned.onnx", test),
            "seconds": time.perf_counter() - start}


def _markdown_row(row: dict) -> str:
    if "infeasible" in row:
        cells = [row["method"], f"{row['budget']:g}", f"{row['budget_ms']:.3f}",
                 "infeasible", "-", "-", "-", "-", f"{row['seconds']:.0f}"]
    else:
        cells = [row["method"], f"{row['budget']:g}", f"{row['budget_ms']:.3f}",
                 f"{row['measured_ms']:.3f}", f"{row['measured_ms'] / row['budget_ms']:.2f}",
                 str(len(row["removed_blocks"])), f"{row['accuracy_pruned']:.2%}",
                 f"{row['accuracy_finetuned']:.2%}", f"{row['seconds']:.0f}"]
    return "| " + " | ".join(cells) + " |"


def _markdown(meta: dict, rows: list[dict]) -> str:
    head = (f"Original: {meta['baseline_ms']:.3f} ms (ORT CPU, batch {meta['batch']}, "
            f"{meta['threads']} thread), test accuracy {meta['accuracy_original']:.2%}. "
            f"Fine-tuning: {meta['epochs']} epochs, importance {meta['importance']}, "
            f"group size {meta['group_size']}, seed {meta['seed']}.\n\n")
    table = "| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS) + "\n"
    return head + table + "\n".join(_markdown_row(r) for r in rows) + "\n"


def _plot(meta: dict, rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 4.4))
    for method in dict.fromkeys(r["method"] for r in rows):
        points = sorted((r["measured_ms"], r["accuracy_finetuned"]) for r in rows
                        if r["method"] == method and "infeasible" not in r)
        if points:
            axes.plot(*zip(*points), marker="o", label=method)
    axes.plot([meta["baseline_ms"]], [meta["accuracy_original"]], marker="*", markersize=12,
              linestyle="none", color="black", label="original")
    axes.set_xlabel(f"measured latency, ms (ORT CPU, batch {meta['batch']}, {meta['threads']} thread)")
    axes.set_ylabel("test accuracy after fine-tuning")
    axes.set_title(f"MNIST ResNet: {meta['epochs']} fine-tuning epochs, {meta['importance']} importance")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


if __name__ == "__main__":
    main()
