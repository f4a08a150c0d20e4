"""Models as ultralytics and timm users build and export them, through `analyze` and `prune`.

For each model and exporter: build it offline (random weights made to look trained, see
mdp_trt/models/third_party.py), export it with the library's own exporter ("native": ultralytics
``model.export(format="onnx", opset=17, simplify=True)``, timm ``onnx_export``) or with
torch.onnx.export ("torchscript", "dynamo"), run `mdp-trt analyze`, and cut a random plan and
verify it against the masked original. With ``--budgets``, run `mdp-trt prune --budget B` for
each budget as a user would (a subprocess; its exit code is in the row), one latency cache per
model (shared by its exporters: the cells are the same layers) so later runs reuse the cells
("cache": cold for the run that measured them), and for ultralytics models load the pruned file
with ``YOLO("pruned.onnx")`` and predict on the image ultralytics ships.

Rows go to ``--json`` after each run (``--resume`` skips the finished ones) and to a markdown
table (``--md``). ultralytics, onnxslim and timm are optional: pip install -c constraints.txt
'.[bench]'.

    .venv/bin/python benchmarks/third_party.py [--models yolov8n-320 cspresnet50 ...]
        [--exporters native torchscript] [--budgets 0.7 0.5] [--timm-resolution 160]
        [--group-size 16] --json results/third_party.json --md results/third_party.md
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from zoo import random_plan, reason_kinds

from mdp_trt.graph import load_model
from mdp_trt.models.third_party import ThirdPartyModel, export_third_party
from mdp_trt.passes import analyze, apply_plan, mask_model, verify

# name -> (library, the library's name, resolution; None: --timm-resolution)
YOLO = {
    "yolov8n-320": ("yolov8n.yaml", 320), "yolo11n-320": ("yolo11n.yaml", 320),
    "yolov8n-640": ("yolov8n.yaml", 640), "yolo11n-640": ("yolo11n.yaml", 640),
    "yolov8n-cls-224": ("yolov8n-cls.yaml", 224), "yolo11n-cls-224": ("yolo11n-cls.yaml", 224),
}
# A dozen timm CNN families: CSP, Ghost, ResNet variants, RegNet, EfficientNet, MobileNetV3,
# ConvNeXt, RepVGG, DLA, HRNet, DenseNet, and a hybrid (MobileViT).
TIMM = ["cspresnet50", "ghostnet_100", "resnet26t", "resnet50d", "regnety_008", "efficientnet_b0",
        "mobilenetv3_large_100", "convnext_atto", "repvgg_a0", "dla34", "hrnet_w18_small",
        "densenet121", "mobilevit_xxs"]
EXPORTERS = {"ultralytics": ("native", "torchscript"), "timm": ("native", "dynamo")}

ANALYSIS_COLUMNS = ("model", "exporter", "px", "layers", "groups", "prunable share", "blocks",
                    "random plan rel diff", "input sensitivity", "kept whole because (groups)")
PRUNE_COLUMNS = ("model", "exporter", "px", "prunable share", "budget", "exit", "base ms", "pruned ms",
                 "measured/budget", "verification", "removed blocks", "cache", "prune s", "YOLO() predict")


def spec_of(name: str, exporter: str, timm_resolution: int) -> ThirdPartyModel:
    if name in YOLO:
        config, px = YOLO[name]
        return ThirdPartyModel("ultralytics", config, px, exporter)
    return ThirdPartyModel("timm", name, timm_resolution, exporter)


def analysis_row(spec: ThirdPartyModel, path: Path) -> dict:
    model = load_model(path, (1, 3, spec.resolution, spec.resolution))
    analysis = analyze(model, str(path))
    total = sum(g.channels for g in analysis.groups)
    whole = [g for g in analysis.groups if not g.prunable]
    reasons = Counter(kind for g in whole for kind in dict.fromkeys(reason_kinds(g.reason or "")))
    # At least half of each group: fewer can leave outputs that hardly depend on the input,
    # a check without teeth.
    keep, removed = random_plan(analysis, 0, min_share=0.5)
    check = verify(mask_model(model, analysis, keep, removed), apply_plan(model, analysis, keep, removed))
    return {
        "layers": len(analysis.layers),
        "groups": f"{len(analysis.groups)} ({sum(g.prunable for g in analysis.groups)} prunable)",
        "prunable share": round(sum(g.channels for g in analysis.groups if g.prunable) / total, 3),
        "blocks": f"{len(analysis.blocks)} ({sum(b.removable for b in analysis.blocks)} removable)",
        "random plan rel diff": float(f"{check.max_rel_diff:.1e}"),
        "input sensitivity": float(f"{check.input_sensitivity:.1e}"),
        "kept whole": {g.name: g.reason for g in whole},
        "kept whole because (groups)": "; ".join(f"{kind} ({n})" for kind, n in reasons.most_common()),
    }


def run_prune(path: Path, side: int, budget: float, out: Path, cache: Path,
              group_size: int, extra: tuple[str, ...] = ()) -> tuple[dict, dict | None]:
    """`mdp-trt prune` as a user runs it (a subprocess, with the ``extra`` flags): the exit
    code, whether the cache was cold, the seconds, and the report (None, with the error in the
    row, when none was written)."""
    command = [sys.executable, "-m", "mdp_trt", "prune", str(path), "-o", str(out), "--budget", str(budget),
               "--cache", str(cache), "--group-size", str(group_size), "--input-shape", f"1x3x{side}x{side}",
               "--force", *extra]
    cold = not cache.exists()
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    row: dict = {"budget": budget, "exit": done.returncode, "cache": "cold" if cold else "warm",
                 "prune s": round(time.perf_counter() - start)}
    report_path = out / "report.json"
    if done.returncode not in (0, 5) or not report_path.exists():
        row["error"] = (done.stderr.strip().splitlines() or ["?"])[-1][:300]
        return row, None
    return row, json.loads(report_path.read_text())


def prune_row(spec: ThirdPartyModel, path: Path, budget: float, out: Path, cache: Path,
              group_size: int) -> dict:
    """`mdp-trt prune` as a user runs it; the exit code and the report's figures."""
    side = spec.resolution
    row, report = run_prune(path, side, budget, out, cache, group_size)
    if report is None:
        return row
    row.update({
        "base ms": round(report["baseline_latency_ms"], 2),
        "pruned ms": round(report["measured_latency_ms"], 2),
        "measured/budget": round(report["measured_latency_ms"] / report["budget_ms"], 3),
        "verification": float(f"{report['verification']['max_rel_diff']:.1e}"),
        "removed blocks": len(report["removed_blocks"]),
        "warnings": report.get("warnings", []),
    })
    if spec.library == "ultralytics" and spec.exporter == "native":  # the file YOLO() loads
        row["YOLO() predict"] = predict_check(path, out / "pruned.onnx", side)
    return row


def predict_check(original: Path, pruned: Path, side: int) -> str:
    """ultralytics' own ONNX inference on both files: what it returns, and whether it matches."""
    import ultralytics
    from ultralytics import YOLO

    image = Path(ultralytics.__file__).parent / "assets" / "bus.jpg"
    shapes = []
    for path in (original, pruned):
        result = YOLO(str(path)).predict(str(image), imgsz=side, verbose=False)[0]
        data = result.boxes.data if result.boxes is not None else result.probs.data
        shapes.append((type(result).__name__, tuple(data.shape[1:])))
    return f"ok {shapes[1][1]}" if shapes[0] == shapes[1] else f"differs: {shapes[0]} vs {shapes[1]}"


def markdown(rows: list[dict]) -> str:
    """Two tables: the prune runs, then each model and exporter's analysis (once)."""
    pruned = [r for r in rows if r.get("budget") is not None]
    analysed = list({(r["model"], r["exporter"]): r for r in rows}.values())
    return "\n".join([markdown_table(pruned, PRUNE_COLUMNS, "pruned ms"), markdown_table(analysed, ANALYSIS_COLUMNS, "groups")])


def markdown_table(rows: list[dict], columns: tuple[str, ...], error_column: str) -> str:
    """``columns`` of ``rows``; a row's error replaces its ``error_column`` cell."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [str(row.get(c, "")) for c in columns]
        if "error" in row:
            cells[columns.index(error_column)] = f"error: {row['error']}"
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=[*YOLO, *TIMM])
    parser.add_argument("--exporters", nargs="+", choices=["native", "torchscript", "dynamo"], default=None,
                        help="default: native and torch.onnx.export (TorchScript for ultralytics, dynamo for timm)")
    parser.add_argument("--budgets", nargs="*", type=float, default=[], help="also prune at these budgets")
    parser.add_argument("--timm-resolution", type=int, default=160)
    parser.add_argument("--group-size", type=int, default=16)
    parser.add_argument("--out", type=Path, default=None, help="keep exports and pruned models here")
    parser.add_argument("--json", type=Path, default=None, help="write the rows as JSON (after each row)")
    parser.add_argument("--resume", action="store_true", help="skip the rows already in --json")
    parser.add_argument("--md", type=Path, default=None, help="write the markdown table here")
    args = parser.parse_args()
    root = args.out or Path(tempfile.mkdtemp(prefix="mdp-third-party-"))
    rows = json.loads(args.json.read_text()) if args.resume and args.json and args.json.exists() else []
    done = {(r["model"], r["exporter"], r.get("budget")) for r in rows}
    for name in args.models:
        library = "ultralytics" if name in YOLO else "timm"
        for exporter in args.exporters or EXPORTERS[library]:
            spec = spec_of(name, exporter, args.timm_resolution)
            wanted = [b for b in [None, *args.budgets] if (name, exporter, b) not in done]
            if not wanted:
                continue
            base = {"model": name, "exporter": exporter, "px": spec.resolution}
            path = root / f"{spec.label}.onnx"
            try:
                if not path.exists():
                    export_third_party(spec, path)
                analysis = analysis_row(spec, path)
            except Exception as err:  # one model's failure must not hide the others' rows
                rows.append({**base, "budget": None, "error": f"{type(err).__name__}: {str(err)[:300]}"})
                print(rows[-1], flush=True)
                continue
            for budget in wanted:
                row = {**base, **analysis}
                if budget is not None:
                    row.update(prune_row(spec, path, budget, root / f"{spec.label}-{budget}",
                                         root / f"{name}.cache.sqlite", args.group_size))
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "kept whole"}), flush=True)
                if args.json:
                    args.json.write_text(json.dumps(rows, indent=1))
    if args.md:
        args.md.write_text(markdown(rows))


if __name__ == "__main__":
    main()
