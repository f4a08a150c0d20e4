"""The torchvision zoo through the analysis and surgery passes (and optionally the whole pipeline).

For each architecture and exporter: export it (weights=None, seeded, random BN statistics) at
the smallest input it accepts, analyse it, apply a random valid plan and verify the pruned model
against the masked original in ORT. A row gives the layers, channel groups (prunable), the share
of channels in prunable groups, residual blocks found and removable, the max relative difference,
and why groups were kept whole (reasons counted over groups, node names left out). With
``--prune [BUDGET]`` it also runs the real ``prune`` (ORT CPU, default budget 0.6) and reports the
baseline and pruned latency. A failure of any stage is reported in its row, never stops the run.
``--update-md zoo.md`` replaces that table's rows of the architectures run (adding new ones), so
the prune column can be filled a few architectures at a time.

    .venv/bin/python benchmarks/zoo.py [--archs resnet18 densenet121 | --all]
        [--exporters dynamo torchscript] [--resolution 64] [--prune [0.6]] [--group-size 32]
        [--max-options 8] [--json OUT.json [--resume]] [--out DIR] [--update-md zoo.md]
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

from mdp_trt.errors import InputError
from mdp_trt.graph import load_model
from mdp_trt.models.export import ExportOptions, export_architecture, list_architectures
from mdp_trt.passes import analyze, apply_plan, mask_model, verify

# One architecture per family; every pattern of issue 5 appears.
ARCHS = [
    "resnet18", "resnet50", "resnext50_32x4d", "wide_resnet50_2", "vgg11_bn", "alexnet",
    "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0", "mnasnet0_5",
    "regnet_x_400mf", "regnet_y_400mf", "shufflenet_v2_x0_5", "squeezenet1_0", "densenet121",
    "googlenet", "inception_v3", "convnext_tiny", "efficientnet_v2_s", "swin_t",
]
# Inputs below these sides fail in the architecture itself: ViT and MaxViT check a fixed image
# size; Inception v3's stem pools 75 pixels down to nothing below it.
FIXED_RESOLUTION = {"vit_": 224, "maxvit_": 224}
MIN_RESOLUTION = {"inception_v3": 75}
# Where the export fails at the smallest side, the next of these is tried: the TorchScript
# exporter handles adaptive pooling only to an output size that divides the input's
# (AlexNet/VGG pool to 6x6/7x7).
LADDER = (96, 128, 160, 224)
# The fully connected layers that read a 25088-wide flatten profile hundreds of MB per cell.
GROUP_SIZE = {"vgg": 64, "alexnet": 64}

COLUMNS = ("arch", "exporter", "px", "layers", "groups", "prunable groups", "prunable share",
           "blocks", "removable", "rel diff", "budget", "base ms", "pruned ms", "measured/budget",
           "kept whole because (groups)")


def resolution(arch: str, default: int) -> int:
    for prefix, side in FIXED_RESOLUTION.items():
        if arch.startswith(prefix):
            return side
    return max(default, MIN_RESOLUTION.get(arch, 0))


def group_size(arch: str, default: int) -> int:
    return next((size for prefix, size in GROUP_SIZE.items() if arch.startswith(prefix)), default)


def reason_kinds(reason: str) -> list[str]:
    """A group's reasons without node/tensor names or counts, so that equal causes count together."""
    kinds = []
    for part in re.sub(r" \(and \d+ more\)$", "", reason).split("; "):
        part = re.sub(r"\(node '[^']*'\)\s*", "", part)
        part = re.sub(r"'[^']*'", "…", part)
        kinds.append(re.sub(r"\d+", "N", part).strip())
    return kinds


def random_plan(analysis, seed: int, min_share: float = 0.0):
    """Random channels of each prunable group (at least ``min_share`` of them, rounded up, and
    at least one; its pinned ones too) and random blocks."""
    import numpy as np

    rng = np.random.default_rng(seed)

    def size(channels: int) -> int:
        return int(rng.integers(max(1, math.ceil(min_share * channels)), channels + 1))

    def kept(g) -> set[int]:
        # whole bundles (attention heads) of a bundled group
        bundles = rng.choice(g.channels // g.bundle, size=size(g.channels // g.bundle), replace=False)
        return {int(b) * g.bundle + i for b in bundles for i in range(g.bundle)}

    keep = {g.id: sorted({*kept(g), *(c for start, stop in g.pinned for c in range(start, stop))})  # kept by every plan
            for g in analysis.groups if g.prunable}
    removed = {b.id for b in analysis.blocks if b.removable and rng.random() < 0.5}
    return keep, removed


def export(arch: str, exporter: str, root: Path, size: int) -> tuple[Path, int, list[str]]:
    """The model at the smallest side from ``size`` up the ladder that exports; the failures."""
    failures = []
    for side in [size, *(s for s in LADDER if s > size)]:
        try:
            return export_architecture(arch, root / f"{arch}-{exporter}.onnx",
                                       ExportOptions(input_shape=(1, 3, side, side), exporter=exporter)), side, failures
        except InputError as err:
            failures.append(f"{side} px: {err}")
    raise InputError("; ".join(failures))


def measure(arch: str, exporter: str, root: Path, size: int, budget: float | None,
            units: tuple[int, int | None]) -> dict:
    start = time.perf_counter()
    path, size, failures = export(arch, exporter, root, size)
    row: dict = {"arch": arch, "exporter": exporter, "px": size, "export s": round(time.perf_counter() - start, 1)}
    if failures:
        row["export failures"] = failures
    model = load_model(path)
    analysis = analyze(model, str(path))
    total = sum(g.channels for g in analysis.groups)
    # The classifier's group reaches the graph output in every architecture: not a finding.
    pinned = [g for g in analysis.groups if not g.prunable and "graph output" not in (g.reason or "")]
    reasons = Counter(kind for g in pinned for kind in dict.fromkeys(reason_kinds(g.reason or "")))
    keep, removed = random_plan(analysis, 0)
    check = verify(mask_model(model, analysis, keep, removed), apply_plan(model, analysis, keep, removed), inputs=1)
    row.update({
        "layers": len(analysis.layers),
        "groups": len(analysis.groups),
        "prunable groups": sum(g.prunable for g in analysis.groups),
        "prunable share": round(sum(g.channels for g in analysis.groups if g.prunable) / total, 3),
        "blocks": len(analysis.blocks),
        "removable": sum(b.removable for b in analysis.blocks),
        "rel diff": float(f"{check.max_rel_diff:.1e}"),
        "pinned groups": len(pinned),
        "reasons": dict(reasons.most_common()),
        "kept whole because (groups)": "; ".join(f"{kind} ({n})" for kind, n in reasons.most_common()),
    })
    if budget is not None:
        row.update(_prune(path, root / f"{arch}-{exporter}-pruned", budget, units))
    return row


def _prune(path: Path, out: Path, budget: float, units: tuple[int, int | None]) -> dict:
    """The real pipeline's figures. A budget below what the latency model can reach is retried
    once at the smallest reachable fraction (rounded up), so the row still shows a real cut."""
    from mdp_trt.errors import InfeasibleBudget

    try:
        try:
            return _prune_once(path, out, budget, units)
        except InfeasibleBudget as err:
            baseline = float(re.search(r"measured ([0-9.]+) ms", str(err)).group(1))
            fraction = math.ceil(100 * err.min_latency / baseline) / 100
            # Shown as "0.6->0.8": 0.6 was below the latency model's minimum, 0.8 was run.
            return {**_prune_once(path, out, fraction, units), "budget": f"{budget}->{fraction}"}
    except Exception as err:  # one architecture's failure must not hide the others' rows
        return {"budget": budget, "pruned ms": f"failed: {type(err).__name__}: {str(err)[:160]}"}


def _prune_once(path: Path, out: Path, budget: float, units: tuple[int, int | None]) -> dict:
    from mdp_trt.prune import PruneOptions, prune

    group_size, max_options = units
    report = prune(path, out, PruneOptions(
        budget=budget, group_size=group_size, max_options=max_options, progress=False, force=True,
        measure_seconds=1.0, measure_rounds=2, verify_inputs=1))
    return {"budget": budget, "base ms": round(report.baseline_latency_ms, 2),
            "pruned ms": round(report.measured_latency_ms, 2),
            "measured/budget": round(report.measured_latency_ms / report.budget_ms, 2),
            "prune s": round(sum(report.timings.values()), 1)}


def markdown_row(row: dict) -> str:
    return "| " + " | ".join(str(row.get(c, "")).replace("|", "/") for c in COLUMNS) + " |"


def update_markdown(path: Path, rows: list[dict]) -> None:
    """Replace the table rows of ``path`` whose (arch, exporter) is in ``rows``; add the others,
    keeping the table sorted. Text around the table is left as it is."""
    lines = path.read_text().splitlines()
    fresh = {(r["arch"], r["exporter"]): markdown_row(r) for r in rows}
    body = [i for i, line in enumerate(lines) if line.startswith("| ") and not line.startswith("| arch")]
    table = {tuple(c.strip() for c in lines[i].split("|")[1:3]): lines[i] for i in body}
    table.update(fresh)
    merged = [table[key] for key in sorted(table)]
    start = body[0] if body else len(lines)
    end = body[-1] + 1 if body else len(lines)
    path.write_text("\n".join(lines[:start] + merged + lines[end:]) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--archs", nargs="+", default=ARCHS)
    which.add_argument("--all", action="store_true", help="every torchvision classification model")
    parser.add_argument("--exporters", nargs="+", choices=["dynamo", "torchscript"], default=["dynamo"])
    parser.add_argument("--resolution", type=int, default=64, help="input side where the architecture allows it")
    parser.add_argument("--prune", type=float, nargs="?", const=0.6, default=None, metavar="BUDGET",
                        help="also run prune --budget BUDGET (default 0.6) on ORT CPU (slow: profiles every layer)")
    parser.add_argument("--group-size", type=int, default=32, help="channels per option (VGG/AlexNet: 64)")
    parser.add_argument("--max-options", type=int, default=None,
                        help="prune: at most this many options per group (wide layers in coarser units)")
    parser.add_argument("--update-md", type=Path, default=None,
                        help="replace these architectures' rows in this markdown table")
    parser.add_argument("--out", type=Path, default=None, help="keep exports here")
    parser.add_argument("--json", type=Path, default=None, help="write the rows as JSON (after each row)")
    parser.add_argument("--resume", action="store_true", help="skip the rows already in --json")
    args = parser.parse_args()
    archs = list_architectures() if args.all else args.archs
    root = args.out or Path(tempfile.mkdtemp(prefix="mdp-zoo-"))
    rows = json.loads(args.json.read_text()) if args.resume and args.json and args.json.exists() else []
    done = {(r["arch"], r["exporter"]) for r in rows}
    if args.prune is not None:
        import onnxruntime

        print(f"Latency: ONNX Runtime {onnxruntime.__version__} CPU, 1 thread, batch 1, budget "
              f"{args.prune}; short measurements (2 rounds of 1 s), so expect a few % of noise.\n")
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for row in rows:
        print(markdown_row(row))
    for arch in archs:
        for exporter in args.exporters:
            if (arch, exporter) in done:
                continue
            start = time.perf_counter()
            size = resolution(arch, args.resolution)
            try:
                units = (group_size(arch, args.group_size), args.max_options)
                row = measure(arch, exporter, root, size, args.prune, units)
            except Exception as err:  # a crash is a finding: report it and go on
                row = {"arch": arch, "exporter": exporter, "px": size,
                       "kept whole because (groups)": f"CRASH {type(err).__name__}: {str(err)[:160]}"}
            row["seconds"] = round(time.perf_counter() - start, 1)
            rows.append(row)
            print(markdown_row(row), flush=True)
            if args.json:
                args.json.write_text(json.dumps(rows, indent=1))
            if args.update_md:
                update_markdown(args.update_md, [row])
            if args.out is None:  # the full zoo does not fit a small disk
                for leftover in root.glob(f"{arch}-{exporter}*"):
                    shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
    if args.out is None:
        # TorchScript writes models over 2 GB as one file per tensor, named after the tensors.
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
