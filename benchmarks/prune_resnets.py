"""End-to-end figures of `prune` on ONNX Runtime CPU: ResNet-18 and ResNet-50 at 224x224.

For each architecture: export it, then for each budget prune it with a cold latency cache (a
fresh SQLite file per architecture, so the first budget pays the profiling) and once more with the
warm cache. Prints one row per run: baseline, budget, predicted and measured latency, FPS,
verification error, cells measured and profiling time.

    .venv/bin/python benchmarks/prune_resnets.py [--archs resnet18 resnet50] [--budgets 0.7 0.5]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from mdp_trt.models.export import ExportOptions, export_architecture
from mdp_trt.prune import PruneOptions, prune

COLUMNS = ("arch", "budget", "cache", "base ms", "budget ms", "pred ms", "meas ms", "meas/budget",
           "fps before", "fps after", "max rel diff", "removed blocks", "cells meas", "cells cached",
           "profile s", "total s", "rounds")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["resnet18", "resnet50"])
    parser.add_argument("--budgets", nargs="+", type=float, default=[0.7, 0.5])
    parser.add_argument("--group-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--out", type=Path, default=None, help="keep outputs here")
    parser.add_argument("--json", type=Path, default=None, help="write the rows as JSON")
    args = parser.parse_args()
    root = args.out or Path(tempfile.mkdtemp(prefix="mdp-bench-"))
    rows = []
    print(" | ".join(COLUMNS))
    for arch in args.archs:
        model = export_architecture(arch, root / f"{arch}.onnx",
                                    ExportOptions(input_shape=(1, 3, args.resolution, args.resolution)))
        cache = root / f"{arch}-cache.sqlite"
        cache.unlink(missing_ok=True)
        for budget in args.budgets:
            for label in ("cold", "warm") if budget == args.budgets[0] else ("warm",):
                start = time.perf_counter()
                report = prune(model, root / f"{arch}-{budget}-{label}", PruneOptions(
                    budget=budget, group_size=args.group_size, threads=args.threads, cache=cache,
                    force=True, progress=False))
                row = (arch, budget, label, report.baseline_latency_ms, report.budget_ms,
                       report.predicted_latency_ms, report.measured_latency_ms,
                       report.measured_latency_ms / report.budget_ms, report.fps_before,
                       report.fps_after, report.verification.max_rel_diff,
                       len(report.removed_blocks), report.profile.cells_measured,
                       report.profile.cells_cached, report.profile.seconds,
                       time.perf_counter() - start, len(report.rounds))
                rows.append(dict(zip(COLUMNS, row)))
                print(" | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
