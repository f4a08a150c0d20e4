"""Local vs Ray profiling of ResNet-18's latency tables: the same cells, comparable values.

Exports ResNet-18 (64x64 input, to keep it short), profiles its tables on ``ort-cpu`` once in
this process and once on a local Ray cluster (fresh SQLite caches for both), then prints the
cell counts, wall times, the relative difference per cell (max and median of
``|ray - local| / local``) and the two runs' own spreads for scale, and finally re-runs the Ray
profile to show that a complete cache measures nothing.

    .venv/bin/python benchmarks/ray_profile.py [--group-size 64] [--workers 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from mdp_trt.graph.model import load_model
from mdp_trt.latency.tables.cache import LatencyCache
from mdp_trt.latency.tables.ray_runner import ray_measure_cells
from mdp_trt.latency.backends.registry import get_backend
from mdp_trt.latency.tables import plan_cells, profile_tables, required_cells
from mdp_trt.models.export import ExportOptions, export_architecture
from mdp_trt.passes import analyze


def _cells(cache, fp, cells):
    return {c.key(): cache.get(fp, c.signature, c.out_channels, c.in_channels) for c in cells}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    options = {"threads": args.threads}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = export_architecture("resnet18", tmp / "resnet18.onnx",
                                   ExportOptions(input_shape=(1, 3, 64, 64)))
        analysis = analyze(load_model(path), str(path))
        cells = required_cells(plan_cells(analysis, args.group_size))
        backend = get_backend("ort-cpu", **options)
        fp = backend.fingerprint()
        runs = {}
        for name, measure in (("local", None),
                              ("ray", ray_measure_cells("ort-cpu", options,
                                                        workers=args.workers, expected=fp))):
            with LatencyCache(tmp / f"{name}.sqlite") as cache:
                start = time.perf_counter()
                tables = profile_tables(analysis, group_size=args.group_size, backend=backend,
                                        cache=cache, progress=False, drift=None,
                                        measure_cells=measure)
                runs[name] = (tables, time.perf_counter() - start, _cells(cache, fp, cells))
            if measure is not None:
                with LatencyCache(tmp / f"{name}.sqlite") as cache:
                    again = profile_tables(analysis, group_size=args.group_size, backend=backend,
                                           cache=cache, progress=False, measure_cells=measure)
    local, ray = runs["local"][2], runs["ray"][2]
    assert local.keys() == ray.keys() and None not in ray.values()
    rel = np.array([abs(ray[k].median_ms - local[k].median_ms) / local[k].median_ms
                    for k in local])
    spread = np.array([m.spread for m in local.values()] + [m.spread for m in ray.values()])
    print(f"ResNet-18 64x64, group size {args.group_size}, ort-cpu, {args.threads} thread(s): "
          f"{len(cells)} distinct cells")
    print(f"local: {runs['local'][0].cells_measured} cells in {runs['local'][1]:.1f} s; "
          f"ray ({args.workers} workers): {runs['ray'][0].cells_measured} cells in "
          f"{runs['ray'][1]:.1f} s (Ray start included)")
    print(f"|ray - local| / local per cell: median {np.median(rel):.3f}, "
          f"p90 {np.percentile(rel, 90):.3f}, max {rel.max():.3f}")
    print(f"per-cell spread (p90-p10)/median of the runs themselves: median "
          f"{np.median(spread):.3f}, max {spread.max():.3f}")
    tables_sum = {n: sum(m.median_ms for m in runs[n][2].values()) for n in runs}
    print(f"sum of cells: local {tables_sum['local']:.2f} ms, ray {tables_sum['ray']:.2f} ms")
    print(f"re-run on the Ray cache: {again.cells_measured} cells measured, "
          f"{again.cells_cached} cached")


if __name__ == "__main__":
    main()
