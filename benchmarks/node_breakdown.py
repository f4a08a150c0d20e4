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

    .venv/bin/python benchmarks/node_breakdown.py ORIGINAL.onnx PRUNED.onnx... [--threads 1]
        [--runs 200] [--layers] [--weights hot|cold] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from mdp_trt.graph import initializer_array, load_model
from mdp_trt.latency.inputs import model_inputs, random_feeds
from mdp_trt.latency.ort_cpu import OrtCpuBackend, session_options
from mdp_trt.passes import analyze


LAYER_OPS = {"Conv", "FusedConv", "Gemm", "FusedGemm", "MatMul", "FusedMatMul"}


def _spatial(shape: list[int]) -> tuple[int, ...]:
    """The spatial sizes of an activation shape, NCHW or ORT's blocked NCHWc (N, C/8, H, W, 8)."""
    return tuple(shape[2:4]) if len(shape) == 5 else tuple(shape[2:])


def _node_key(shapes: list[list[int]]) -> tuple:
    """A profiled node's (weight shape, input spatial size); the weight is its second input
    (a fused Conv's residual comes later)."""
    return tuple(shapes[1]) if len(shapes) > 1 else (), _spatial(shapes[0])


def layer_cells(path: Path, backend: OrtCpuBackend) -> dict[str, tuple[tuple, float]]:
    """Each layer's key (weight shape, input spatial size) and its one-layer cell (ms) at the
    widths it has in this model."""
    model = load_model(path)
    cells = {}
    for layer in analyze(model, str(path)).layers:
        sig = layer.signature
        key = (initializer_array(model, layer.weight).shape, tuple(sig.input_hw))
        cells[layer.name] = (key, backend.measure_layer(sig, sig.out_channels,
                                                        sig.in_channels).median_ms)
    return cells


def node_times(path: Path, threads: int, runs: int) -> tuple[list[dict], float]:
    """Every executed node (ORT's name, op, key as in ``layer_cells``, median kernel ms), in
    execution order, and the median run (ms)."""
    import onnxruntime as ort

    options = session_options(threads)
    options.enable_profiling = True
    session = ort.InferenceSession(str(path), sess_options=options,
                                   providers=["CPUExecutionProvider"])
    feeds = random_feeds(model_inputs(path), seed=0)
    # Medians over many runs: the first (cold) runs do not move them.
    for _ in range(runs):
        session.run(None, feeds)
    profile = Path(session.end_profiling())
    events = json.loads(profile.read_text())
    profile.unlink()
    nodes: dict[str, dict] = {}
    totals = []
    for event in sorted(events, key=lambda e: e.get("ts", 0)):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            args = event["args"]
            node = nodes.setdefault(event["name"][: -len("_kernel_time")], {
                "op": args["op_name"], "durations": [],
                "key": _node_key([next(iter(x.values())) for x in args["input_type_shape"]])})
            node["durations"].append(event["dur"] / 1000)
        elif event.get("cat") == "Session" and event["name"] == "model_run":
            totals.append(event["dur"] / 1000)
    for node in nodes.values():
        node["ms"] = float(np.median(node.pop("durations")))
    return [{"name": k, **v} for k, v in nodes.items()], float(np.median(totals))


def breakdown(path: Path, backend: OrtCpuBackend, threads: int, runs: int) -> dict:
    cells = layer_cells(path, backend)
    nodes, run_ms = node_times(path, threads, runs)
    # ORT renames what it fuses (a Conv+Relu is named after the Relu's output), so a renamed
    # layer is found by its weight shape and input size; equal layers pair in execution order.
    waiting: dict[tuple, list[str]] = defaultdict(list)
    for name, (key, _) in cells.items():
        waiting[key].append(name)
    in_model: dict[str, float] = {}
    other: dict[str, float] = defaultdict(float)
    for node in nodes:
        names = waiting.get(node["key"]) if node["op"] in LAYER_OPS else None
        if node["name"] in cells:  # not renamed (ORT may not list a prepacked weight's shape)
            in_model[node["name"]] = node["ms"]
        elif names:
            in_model[names.pop(0)] = node["ms"]
        else:
            other[node["op"]] += node["ms"]
    return {"model": str(path), "run_ms": run_ms, "cells_ms": sum(c for _, c in cells.values()),
            "layers_in_model_ms": sum(in_model.values()), "other_ms": dict(other),
            "unmatched_layers": sorted(set(cells) - set(in_model)),
            "layers": {k: [c, in_model.get(k)] for k, (_, c) in cells.items()}}


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
