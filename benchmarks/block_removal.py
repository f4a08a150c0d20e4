"""What removing one residual block really costs, against what the importance says it costs
(issue 19: is the importance scale what keeps blocks from being removed?).

For every removable block of a study model: the model with only that block removed (every
channel kept, ``apply_plan``), its latency relative to the original (all of them timed in one
interleaved session), its validation accuracy after the study's fine-tuning recipe (mean over
seeds; the test part is not read), and the block's importance as the solver weighs it (the sum
of its layers' channel scores at full width, as a share of all layers' scores). The blocks that
the accuracy study's MDP plans removed are marked per budget.

    .venv/bin/python benchmarks/block_removal.py [--dataset mnist] [--seeds 0 1 2]
        [--importance taylor] [--json benchmarks/results/block_removal.json]
        [--markdown benchmarks/results/block_removal.md]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path


from mdp_trt.bench.accuracy import evaluate_accuracy
from mdp_trt.bench.measure import benchmark_models
from mdp_trt.bench.statistics import spread
from mdp_trt.bench.study_sets import SPLIT_SEED, STUDY_EPOCHS, STUDY_MODELS, STUDY_SETS
from mdp_trt.finetune import FinetuneOptions, finetune
from mdp_trt.graph import save_model
from mdp_trt.graph.model import load_model
from mdp_trt.importance.methods import score_channels
from mdp_trt.latency.backends.registry import get_backend
from mdp_trt.outputs import write_text
from mdp_trt.passes import analyze, apply_plan

ROOT = Path(__file__).resolve().parent.parent


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(STUDY_MODELS), default="mnist")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--importance", choices=["magnitude", "taylor"], default="taylor")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--study", type=Path, default=None,
                        help="the accuracy study's folder (default: benchmarks/results/runs/accuracy-DATASET)")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "block_removal.json")
    parser.add_argument("--markdown", type=Path, default=ROOT / "benchmarks" / "results" / "block_removal.md")
    return parser.parse_args()


def block_importance(model_path: Path, splits, importance: str, work: Path) -> tuple[dict, float, object]:
    """Each removable block's summed layer scores, the total over all layers, and the analysis."""
    model = load_model(model_path)
    analysis = analyze(model, str(model_path))
    calib = None
    if importance == "taylor":
        calib = splits.train.save(work / "train.npz")
    scores = score_channels(model, analysis, importance, calib_data=calib, progress=False)
    total = {name: float(sum(s)) for name, s in scores.layer_scores.items()}
    blocks = {b.name: sum(total[layer] for layer in b.layers)
              for b in analysis.blocks if b.removable}
    return blocks, sum(total.values()), (model, analysis)


def without_block(model, analysis, name: str, path: Path) -> Path:
    block = next(b for b in analysis.blocks if b.name == name)
    save_model(apply_plan(model, analysis, {}, [block.id]), path)
    return path


def removed_by_mdp(study: Path) -> dict[str, list[float]]:
    """Block name -> the budgets at which the study's MDP plan removed it."""
    removed: dict[str, list[float]] = {}
    for record in sorted(study.glob("runs/mdp-*/prune.json")):
        data = json.loads(record.read_text())
        for name in data.get("removed_blocks") or []:
            removed.setdefault(name, []).append(data["budget"])
    return {k: sorted(v) for k, v in removed.items()}


def main() -> None:
    args = _arguments()
    model_path = STUDY_MODELS[args.dataset]
    splits = STUDY_SETS[args.dataset](SPLIT_SEED)
    study = args.study or ROOT / "benchmarks" / "results" / "runs" / f"accuracy-{args.dataset}"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        importance, total, (model, analysis) = block_importance(model_path, splits, args.importance, work)
        names = list(importance)
        paths = [without_block(model, analysis, n, work / f"{n}.onnx") for n in names]
        with get_backend("ort-cpu", threads=args.threads) as backend:
            timed = benchmark_models([model_path, *paths], backend)
        rows = []
        for name, path, result in zip(names, paths, timed[1:]):
            accuracies = []
            for seed in args.seeds:
                out = work / f"{name}-seed{seed}.onnx"
                finetune(path, model_path, splits.train, out,
                         FinetuneOptions(epochs=STUDY_EPOCHS[args.dataset], seed=seed, progress=False))
                accuracies.append(evaluate_accuracy(out, splits.val))
            acc = spread(accuracies)
            rows.append({"block": name, "importance": importance[name],
                         "importance_share": importance[name] / total,
                         "ratio": result.ratio.value, "saved": 1 - result.ratio.value,
                         "val_no_finetune": evaluate_accuracy(path, splits.val),
                         "val_mean": acc.mean, "val_sd": acc.sd, "val": accuracies})
            print(f"{name}: importance share {rows[-1]['importance_share']:.4f}, saves "
                  f"{rows[-1]['saved']:.3f} of the latency, validation {acc.mean:.2%} ± {acc.sd:.2%}",
                  flush=True)
    meta = {"dataset": args.dataset, "model": model_path.name, "split_seed": SPLIT_SEED,
            "importance": args.importance, "seeds": args.seeds, "epochs": STUDY_EPOCHS[args.dataset],
            "val_original": evaluate_accuracy(model_path, splits.val),
            "removed_by_mdp": removed_by_mdp(study),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": platform.node()}
    write_text(args.json, json.dumps({**meta, "rows": rows}, indent=1))
    write_text(args.markdown, markdown(meta, rows))
    print(markdown(meta, rows))


def markdown(meta: dict, rows: list[dict]) -> str:
    from scipy.stats import spearmanr

    drop = [meta["val_original"] - r["val_mean"] for r in rows]
    shares = [r["importance_share"] for r in rows]
    rho = spearmanr(shares, drop)
    rho_raw = spearmanr(shares, [meta["val_original"] - r["val_no_finetune"] for r in rows])
    lines = ["# Removing one block: importance against the accuracy it costs", "",
             f"`.venv/bin/python benchmarks/block_removal.py --dataset {meta['dataset']} --importance "
             f"{meta['importance']} --seeds {' '.join(map(str, meta['seeds']))}`, {meta['date']} on "
             f"{meta['machine']}. Model `models/{meta['model']}`, validation part of split seed "
             f"{meta['split_seed']} (the test part is not read); original validation accuracy "
             f"{meta['val_original']:.2%}. Each row: the model with only that block removed, "
             f"timed with the original and the others in one interleaved session, fine-tuned "
             f"{meta['epochs']} epochs per seed as in the accuracy study.", "",
             "| block | importance share | latency saved | val. acc. before fine-tuning | "
             "val. acc. fine-tuned, mean ± sd | drop | removed by MDP at budgets |",
             "|---|---|---|---|---|---|---|"]
    for row, d in zip(rows, drop):
        budgets = ", ".join(f"{b:g}" for b in meta["removed_by_mdp"].get(row["block"], [])) or "-"
        lines.append(f"| {row['block']} | {row['importance_share']:.4f} | {row['saved']:.3f} | "
                     f"{row['val_no_finetune']:.2%} | {100 * row['val_mean']:.2f} ± "
                     f"{100 * row['val_sd']:.2f} | {100 * d:+.2f} | {budgets} |")
    lines += ["", f"Spearman rank correlation of the importance share with the accuracy drop "
              f"before fine-tuning: {rho_raw.statistic:+.2f} (p = {rho_raw.pvalue:.2f}); after "
              f"fine-tuning: {rho.statistic:+.2f} (p = {rho.pvalue:.2f}); {len(rows)} blocks."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
