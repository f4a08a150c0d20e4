"""Local vs Ray profiling of a model's latency tables: time, and whether the cells agree.

Exports the architecture, then profiles its tables on ``ort-cpu`` from a fresh cache in this
process, then on a local Ray cluster with each ``--workers`` count (a fresh cache each, the
drift guard on as in ``mdp-trt profile``, adaptive cells by default: several rounds, one cluster
for all of them). Prints and writes (``--out``) each run's cells, rounds and wall time (Ray's
start included) and how far each Ray run's cells are from the local ones (``|ray - local| /
local`` over the cells both timed, beside the local cells' own spread), then re-runs the last
Ray profile on its cache to show that a complete cache measures nothing.

    .venv/bin/python benchmarks/ray_profile.py [--arch resnet18] [--size 224] [--group-size 32]
        [--workers 1 2] [--threads 1] [--cells adaptive|all] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mdp_trt.graph.model import load_model
from mdp_trt.latency.backends.host import cpu_description
from mdp_trt.latency.backends.registry import get_backend
from mdp_trt.latency.tables import plan_cells, profile_tables, required_cells
from mdp_trt.latency.tables.cache import LatencyCache
from mdp_trt.latency.tables.ray_runner import ray_measure_cells
from mdp_trt.models.export import ExportOptions, export_architecture
from mdp_trt.outputs import write_text
from mdp_trt.passes import analyze


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--size", type=int, default=224, help="input height and width")
    parser.add_argument("--group-size", type=int, default=32)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cells", choices=["adaptive", "all"], default="adaptive")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    return parser.parse_args()


def _profile(analysis, args, backend, cache_path: Path, measure) -> tuple[object, float, dict]:
    with LatencyCache(cache_path) as cache:
        start = time.perf_counter()
        tables = profile_tables(analysis, group_size=args.group_size, backend=backend,
                                cache=cache, progress=sys.stderr.isatty(), cells=args.cells,
                                measure_cells=measure)
        seconds = time.perf_counter() - start
        fp = backend.fingerprint()
        timed = {c.key(): m for c in required_cells(plan_cells(analysis, args.group_size))
                 if (m := cache.get(fp, c.signature, c.out_channels, c.in_channels)) is not None}
    return tables, seconds, timed


def main() -> int:
    args = _arguments()
    options = {"threads": args.threads}
    lines = [f"# Local vs Ray profiling: {args.arch} {args.size}x{args.size}, group size "
             f"{args.group_size}, {args.cells} cells, ort-cpu {args.threads} thread(s)", "",
             f"`.venv/bin/python benchmarks/ray_profile.py {' '.join(sys.argv[1:])}`", "",
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.node()}, "
             f"{cpu_description()}. Each run from a fresh cache; Ray's start is included.", "",
             "| run | cells timed | rounds | seconds | vs local: median / p90 / max diff "
             "(common cells) |", "|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = export_architecture(args.arch, tmp / f"{args.arch}.onnx",
                                   ExportOptions(input_shape=(1, 3, args.size, args.size)))
        analysis = analyze(load_model(path), str(path))
        backend = get_backend("ort-cpu", **options)
        local, seconds, local_cells = _profile(analysis, args, backend, tmp / "local.sqlite", None)
        spread = np.median([m.spread for m in local_cells.values()])
        lines.append(f"| local | {local.cells_measured} | {_rounds(local)} | {seconds:.1f} | "
                     f"- (the cells' own spread: median {spread:.3f}) |")
        print(lines[-1], flush=True)
        for workers in args.workers:
            measure = ray_measure_cells("ort-cpu", options, workers=workers,
                                        expected=backend.fingerprint())
            cache = tmp / f"ray{workers}.sqlite"
            tables, seconds, cells = _profile(analysis, args, backend, cache, measure)
            common = sorted(set(cells) & set(local_cells))
            diff = np.array([abs(cells[k].median_ms / local_cells[k].median_ms - 1) for k in common])
            lines.append(f"| Ray, {workers} worker(s) | {tables.cells_measured} | {_rounds(tables)} "
                         f"| {seconds:.1f} | {np.median(diff):.3f} / {np.percentile(diff, 90):.3f} "
                         f"/ {diff.max():.3f} ({len(common)}) |")
            print(lines[-1], flush=True)
        again, seconds, _ = _profile(analysis, args, backend, cache, measure)
        lines += ["", f"The last Ray profile again on its cache: {again.cells_measured} cells "
                  f"timed, {again.cells_cached} cached, {seconds:.1f} s."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        write_text(args.out, text)
    return 0


def _rounds(tables) -> str:
    adaptive = tables.adaptive or {}
    return str(adaptive.get("rounds", 1))


if __name__ == "__main__":
    sys.exit(main())
