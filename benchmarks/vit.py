"""Vision transformers pruned as in the paper's DeiT results: attention heads, MLP width and
whole blocks under one measured latency budget (issue 18).

For each model and exporter: build it offline (timm: pretrained=False; torchvision: weights=None),
export it (timm's models by torch.onnx.export, "native" = TorchScript or "dynamo"; torchvision's
with mdp-trt export), and run `mdp-trt prune --budget B` for each budget as a user would (a
subprocess, one latency cache per model). A row gives the exit code, measured / budget, the
latency model's prediction error, the heads, MLP channels and blocks kept, the verification and
what profiling cost. Rows go to ``--json`` after each run (``--resume`` skips finished ones),
and a table to ``--md``.

    .venv/bin/python benchmarks/vit.py [--models deit_tiny_patch16_224 vit_b_16 ...]
        [--exporters native dynamo] [--budgets 0.5 0.6 0.7 0.8] [--group-size 32]
        --json results/vit.json --md results/vit.md
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from third_party import markdown_table, run_prune

from mdp_trt.graph import load_model
from mdp_trt.models.export import ExportOptions, export_architecture
from mdp_trt.models.third_party import ThirdPartyModel, export_third_party
from mdp_trt.passes import analyze

TIMM = ["deit_tiny_patch16_224", "deit_small_patch16_224", "vit_small_patch16_224"]
TORCHVISION = ["vit_b_16"]
SIDE = 224
COLUMNS = ("model", "exporter", "budget", "exit", "base ms", "measured/budget", "prediction error",
           "heads kept", "MLP kept", "blocks removed", "verification", "cells", "profile s", "prune s")


def export(name: str, exporter: str, path: Path) -> Path:
    if path.exists():
        return path
    if name in TORCHVISION:
        torch_exporter = "torchscript" if exporter == "native" else exporter
        return export_architecture(name, path, ExportOptions(input_shape=(1, 3, SIDE, SIDE),
                                                             exporter=torch_exporter))
    return export_third_party(ThirdPartyModel("timm", name, SIDE, exporter), path)


def row_of(report: dict, heads: dict[str, int], mlps: list[str]) -> dict:
    """The figures of a prune report; ``heads``: each head group's head width; ``mlps``: the
    other prunable groups (the MLPs' hidden channels)."""
    kept = report["kept_channels"]
    mlp = [kept[name] for name in mlps]
    return {
        "base ms": round(report["baseline_latency_ms"], 2),
        "measured/budget": round(report["measured_latency_ms"] / report["budget_ms"], 3),
        "prediction error": f"{report['predicted_latency_ms'] / report['measured_latency_ms'] - 1:+.1%}",
        "heads kept": f"{sum(kept[n][0] // w for n, w in heads.items())}/"
                      f"{sum(kept[n][1] // w for n, w in heads.items())}",
        "MLP kept": f"{sum(k for k, _ in mlp)}/{sum(t for _, t in mlp)}" if mlp else "",
        "blocks removed": len(report["removed_blocks"]),
        "verification": float(f"{report['verification']['max_rel_diff']:.1e}"),
        "cells": f"{report['profile']['cells_measured']} measured, {report['profile']['cells_cached']} cached",
        "profile s": round(report["profile"]["seconds"], 1),
    }


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
    args = parser.parse_args()
    root = args.out or Path(tempfile.mkdtemp(prefix="mdp-vit-"))
    root.mkdir(parents=True, exist_ok=True)
    rows = json.loads(args.json.read_text()) if args.resume and args.json and args.json.exists() else []
    done = {(r["model"], r["exporter"], r["budget"]) for r in rows}
    for name in args.models:
        for exporter in args.exporters:
            path = export(name, exporter, root / f"{name}-{exporter}.onnx")
            analysis = analyze(load_model(path, (1, 3, SIDE, SIDE)), str(path))
            heads = {g.name: g.bundle for g in analysis.groups if g.bundle > 1}
            mlps = [g.name for g in analysis.groups if g.prunable and g.bundle == 1]
            for budget in args.budgets:
                if (name, exporter, budget) in done:
                    continue
                row, report = run_prune(path, SIDE, budget, root / f"{name}-{exporter}-{budget}",
                                        root / f"{name}.cache.sqlite", args.group_size)
                row = {"model": name, "exporter": exporter, **row, **(row_of(report, heads, mlps) if report else {})}
                rows.append(row)
                print(json.dumps(row), flush=True)
                if args.json:
                    args.json.write_text(json.dumps(rows, indent=1))
    if args.md:
        args.md.write_text(markdown_table(rows, COLUMNS, "measured/budget"))


if __name__ == "__main__":
    main()
