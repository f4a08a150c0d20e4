"""How a pruned model's ratio to its original moves with the machine's state.

Times the original with each pruned model (mdp-trt's interleaved comparison, as `prune` does)
in ``--windows`` windows of at most ``--window-seconds`` each, ``--gap`` seconds apart, and
prints one row per window: the time, each model's median ms and each ratio with its 95%
interval. On a shared VM the original's own time is the state indicator: the question is whether
the ratio follows it (then one window cannot stand for a later re-timing; prune._confirmed).

    .venv/bin/python benchmarks/ratio_drift.py ORIGINAL.onnx PRUNED.onnx [MORE.onnx ...]
        [--windows 15] [--window-seconds 8] [--gap 4] [--md OUT.md] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from mdp_trt.latency.backends.ort_cpu import OrtCpuBackend
from mdp_trt.latency.backends.timing import MODEL_POLICY


def windows(paths: list[Path], *, count: int, seconds: float, gap: float) -> list[dict]:
    # a halfwidth nobody reaches: every window runs its full length
    policy = replace(MODEL_POLICY, compare_s=seconds, ratio_halfwidth=1e-6)
    backend = OrtCpuBackend(threads=1, model_policy=policy)
    rows = []
    with backend:
        for index in range(count):
            if index:
                time.sleep(gap)
            compared = backend.measure_models(paths)
            rows.append({"time": time.strftime("%H:%M:%S"),
                         "ms": [m.median_ms for m in compared.measurements],
                         "ratios": [r.to_json() for r in compared.ratios]})
            print(_row(rows[-1]), flush=True)
    return rows


def _row(row: dict) -> str:
    ratios = " | ".join(f"{r['value']:.4f} [{r['low']:.4f}, {r['high']:.4f}]"
                        for r in row["ratios"])
    return f"| {row['time']} | {' | '.join(f'{ms:.3f}' for ms in row['ms'])} | {ratios} |"


def correlation(rows: list[dict], model: int) -> float:
    """Pearson correlation of the original's ms with pruned model ``model``'s ratio."""
    original = np.array([r["ms"][0] for r in rows])
    ratio = np.array([r["ratios"][model]["value"] for r in rows])
    return float(np.corrcoef(original, ratio)[0, 1])


def markdown(paths: list[Path], rows: list[dict], command: str) -> str:
    names = [p.parent.name if p.name == "pruned.onnx" else p.stem for p in paths]
    lines = [f"# Ratio drift: {names[0]}", "",
             f"{time.strftime('%Y-%m-%d')}, {platform.node()} ({platform.machine()}), ORT CPU "
             f"1 thread. Command: `{command}`", "",
             "| time | " + " | ".join(f"{n} ms" for n in names) + " | "
             + " | ".join(f"ratio {n}" for n in names[1:]) + " |",
             "|---" * (2 * len(names)) + "|",
             *(_row(r) for r in rows), ""]
    for k, name in enumerate(names[1:]):
        values = [r["ratios"][k]["value"] for r in rows]
        lines.append(f"- {name}: ratio {min(values):.4f} to {max(values):.4f} over "
                     f"{len(rows)} windows; correlation with the original's ms "
                     f"{correlation(rows, k):+.2f}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path, help="the original, then pruned models")
    parser.add_argument("--windows", type=int, default=15)
    parser.add_argument("--window-seconds", type=float, default=8.0)
    parser.add_argument("--gap", type=float, default=4.0)
    parser.add_argument("--md", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if len(args.models) < 2:
        parser.error("give the original and at least one pruned model")
    rows = windows(args.models, count=args.windows, seconds=args.window_seconds, gap=args.gap)
    command = "python benchmarks/ratio_drift.py " + shlex.join(sys.argv[1:])
    text = markdown(args.models, rows, command)
    print(text.split("\n\n")[-1])
    if args.md:
        args.md.write_text(text)
    if args.json:
        args.json.write_text(json.dumps({"command": command, "models": list(map(str, args.models)),
                                         "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
