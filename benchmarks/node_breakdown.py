"""Where a model's time goes on ORT CPU: per-node times from ONNX Runtime's profiler, set against
the one-layer table cells of its Conv/Gemm layers.

The latency model predicts ``scale x (sum of the kept layers' cells) + offset``. When it misses
some plans (latency_model.py: ResNet-50's solver plans read 3-7% slow), this says whether the
miss is in the convolutions (a layer costs more inside the model than alone) or in the other
nodes (pooling, Add, Relu, Flatten...) whose cost follows the widths but has no table. For each
model: its layers' cells are measured on the same backend, the model is run ``--runs`` times under
ORT's profiler, and each node's median kernel time is kept. Prints, per model, the cell sum, the
in-model time of the layers' nodes (a fused Conv+Add+Relu counts as its Conv), the time of every
other node by op type, and the end-to-end median; with ``--layers`` each layer's in-model/cell ratio.
Layers pair with nodes as in prune's per-layer calibration (mdp_trt/latency/backends/node_profile.py).

    .venv/bin/python benchmarks/node_breakdown.py ORIGINAL.onnx PRUNED.onnx... [--threads 1]
        [--runs 200] [--layers] [--weights hot|cold] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from mdp_trt.graph import load_model
from mdp_trt.latency.backends.node_profile import match_layers, profile_nodes
from mdp_trt.latency.backends.ort_cpu import OrtCpuBackend, session_options
from mdp_trt.passes import analyze


def breakdown(path: Path, backend: OrtCpuBackend, threads: int, runs: int) -> dict:
    """The model's layers (cell, in-model ms), the other nodes' time by op, and the run."""
    layers = analyze(load_model(path), str(path)).layers
    cells = {layer.name: backend.measure_layer(layer.signature, layer.signature.out_channels,
                                               layer.signature.in_channels).median_ms
             for layer in layers}
    nodes, run_ms = profile_nodes(path, session_options(threads), ["CPUExecutionProvider"],
                                  budget_s=0.0, min_runs=runs, max_runs=runs)
    matched = match_layers(path, layers, nodes)
    taken = {node.name for node in matched.values()}
    other: dict[str, float] = defaultdict(float)
    for node in nodes:
        if node.name not in taken:
            other[node.op] += node.ms
    return {"model": str(path), "run_ms": run_ms, "cells_ms": sum(cells.values()),
            "layers_in_model_ms": sum(node.ms for node in matched.values()),
            "other_ms": dict(other), "unmatched_layers": sorted(set(cells) - set(matched)),
            "layers": {k: [c, matched[k].ms if k in matched else None] for k, c in cells.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--layers", action="store_true", help="per-layer in-model/cell ratios")
    parser.add_argument("--weights", choices=["hot", "cold"], default="hot",
                        help="cells with weights in cache (hot) or rotated copies (cold)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    rows = []
    with OrtCpuBackend(threads=args.threads, weights=args.weights) as backend:
        for path in args.models:
            row = breakdown(path, backend, args.threads, args.runs)
            rows.append(row)
            other = sum(row["other_ms"].values())
            print(f"{path.name}: run {row['run_ms']:.2f} ms = layers {row['layers_in_model_ms']:.2f}"
                  f" (cells {row['cells_ms']:.2f}, in-model/cell "
                  f"{row['layers_in_model_ms'] / row['cells_ms']:.3f}) + other nodes {other:.2f} "
                  f"({', '.join(f'{k} {v:.2f}' for k, v in sorted(row['other_ms'].items(), key=lambda kv: -kv[1]))})"
                  f" + between nodes {row['run_ms'] - row['layers_in_model_ms'] - other:.2f}",
                  flush=True)
            if row["unmatched_layers"]:
                print(f"  layers without a profiled node: {row['unmatched_layers'][:5]}")
            if args.layers:
                for name, (cell, inside) in row["layers"].items():
                    ratio = "-" if inside is None else f"{inside / cell:.2f}"
                    print(f"  {name}: cell {cell:.3f} ms, in model {inside or 0:.3f} ms, x{ratio}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
