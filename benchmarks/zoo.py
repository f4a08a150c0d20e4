"""The torchvision zoo through the analysis and surgery passes (and optionally the whole pipeline).

For each architecture: export it (weights=None, seeded, random BN statistics), analyse it, and
print the layers, channel groups, share of channels in prunable groups, residual blocks found and
removable, the groups kept whole (with their first reason), then apply a random valid plan and
verify the pruned model against the masked original in ORT (max relative difference). With
``--prune BUDGET`` it also runs the real ``prune`` (ORT CPU) and reports the baseline and pruned
latency; an architecture whose pipeline fails says why in the row instead of stopping the run.

    .venv/bin/python benchmarks/zoo.py [--archs resnet18 densenet121] [--resolution 64]
        [--exporter dynamo|torchscript] [--prune 0.6] [--group-size 16] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from mdp_trt.graph import load_model
from mdp_trt.models.export import ExportOptions, export_architecture
from mdp_trt.passes import analyze, apply_plan, mask_model, verify

# At least 15 classification architectures; every pattern of issue 5 appears.
ARCHS = [
    "resnet18", "resnet50", "resnext50_32x4d", "wide_resnet50_2", "vgg11_bn", "alexnet",
    "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0", "mnasnet0_5",
    "regnet_x_400mf", "regnet_y_400mf", "shufflenet_v2_x0_5", "squeezenet1_0", "densenet121",
    "googlenet", "inception_v3", "convnext_tiny", "efficientnet_v2_s", "swin_t",
]
# Architectures that need a larger input than the default (their pooling stack shrinks it to 0).
MIN_RESOLUTION = {"inception_v3": 96}

COLUMNS = ("arch", "layers", "groups", "prunable groups", "prunable share", "blocks", "removable",
           "verified rel diff", "base ms", "pruned ms", "kept whole because")


def _random_plan(analysis, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    keep = {g.id: sorted(rng.choice(g.channels, size=int(rng.integers(1, g.channels + 1)), replace=False).tolist())
            for g in analysis.groups if g.prunable}
    removed = {b.id for b in analysis.blocks if b.removable and rng.random() < 0.5}
    return keep, removed


def measure(arch: str, root: Path, resolution: int, exporter: str, budget: float | None,
            group_size: int) -> dict:
    size = max(resolution, MIN_RESOLUTION.get(arch, 0))
    path = export_architecture(arch, root / f"{arch}.onnx",
                               ExportOptions(input_shape=(1, 3, size, size), exporter=exporter))
    model = load_model(path)
    analysis = analyze(model, str(path))
    total = sum(g.channels for g in analysis.groups)
    pinned = [g for g in analysis.groups if not g.prunable and "graph output" not in (g.reason or "")]
    keep, removed = _random_plan(analysis, 0)
    check = verify(mask_model(model, analysis, keep, removed), apply_plan(model, analysis, keep, removed), inputs=1)
    row = {
        "arch": arch,
        "resolution": size,
        "layers": len(analysis.layers),
        "groups": len(analysis.groups),
        "prunable groups": sum(g.prunable for g in analysis.groups),
        "prunable share": round(sum(g.channels for g in analysis.groups if g.prunable) / total, 3),
        "blocks": len(analysis.blocks),
        "removable": sum(b.removable for b in analysis.blocks),
        "verified rel diff": float(f"{check.max_rel_diff:.2e}"),
        "kept whole because": (pinned[0].reason or "")[:90] if pinned else "",
        "pinned groups": len(pinned),
    }
    if budget is not None:
        from mdp_trt.prune import PruneOptions, prune

        try:
            report = prune(path, root / f"{arch}-pruned", PruneOptions(
                budget=budget, group_size=group_size, progress=False, force=True))
            row["base ms"] = round(report.baseline_latency_ms, 3)
            row["pruned ms"] = round(report.measured_latency_ms, 3)
        except Exception as err:  # one architecture's failure must not hide the others' rows
            row["pruned ms"] = f"failed: {type(err).__name__}: {str(err)[:80]}"
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=ARCHS)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--exporter", choices=["dynamo", "torchscript"], default="dynamo")
    parser.add_argument("--prune", type=float, default=None, metavar="BUDGET",
                        help="also run prune --budget BUDGET on ORT CPU (slow: profiles every layer)")
    parser.add_argument("--group-size", type=int, default=16)
    parser.add_argument("--out", type=Path, default=None, help="keep exports here")
    parser.add_argument("--json", type=Path, default=None, help="write the rows as JSON")
    args = parser.parse_args()
    root = args.out or Path(tempfile.mkdtemp(prefix="mdp-zoo-"))
    rows = []
    print(" | ".join(COLUMNS))
    for arch in args.archs:
        start = time.perf_counter()
        try:
            row = measure(arch, root, args.resolution, args.exporter, args.prune, args.group_size)
        except Exception as err:  # a crash is a finding: report it and go on
            row = {"arch": arch, "kept whole because": f"CRASH {type(err).__name__}: {str(err)[:120]}"}
        row["seconds"] = round(time.perf_counter() - start, 1)
        rows.append(row)
        print(" | ".join(str(row.get(c, "")) for c in COLUMNS), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
