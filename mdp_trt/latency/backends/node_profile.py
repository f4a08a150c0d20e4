"""Where a whole model's time goes, layer by layer: ONNX Runtime's profiler per node.

Inside a model a layer runs faster or slower than alone, by an amount that depends on its width;
``match_layers`` pairs each layer with its node, whose time the calibration
(``mdp_trt.prediction.calibration``) turns into a per-layer correction of the tables
(``layer_times``: a layer timed with an attention core adds the core's nodes). ORT renames what
it fuses: a MatMul+Add becomes ``<MatMul's name>/MatMulAddFusion``, but a Conv+Relu is named
after the Relu's output; so a node is paired with its layer by name where the name survived
(as such or before a fusion's ``/`` suffix), else by (weight shape, input spatial size); layers
sharing such a key have equal tables and pair in execution order. Measurements:
docs/latency-model-notes.md.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mdp_trt.graph import initializer_array, load_model
from mdp_trt.latency.backends.inputs import model_inputs, random_feeds

__all__ = ["NodeTime", "profile_nodes", "match_layers", "layer_times", "LAYER_OPS"]

# What ORT may turn a Conv/Gemm/MatMul layer into (fused with its bias, activation or Add).
LAYER_OPS = frozenset({"Conv", "FusedConv", "NchwcConv", "Gemm", "FusedGemm", "MatMul",
                       "FusedMatMul", "QLinearConv"})


@dataclass(frozen=True)
class NodeTime:
    """One executed node of ORT's optimised graph: its name, op, (weight shape, input spatial
    size) key and median kernel time in ms."""

    name: str
    op: str
    key: tuple
    ms: float


def _spatial(shape: list[int]) -> tuple[int, ...]:
    """The spatial sizes of an activation shape, NCHW or ORT's blocked NCHWc (N, C/8, H, W, 8)."""
    return tuple(shape[2:4]) if len(shape) == 5 else tuple(shape[2:])


def _node_key(shapes: list[list[int]]) -> tuple:
    # the weight is the second input (a fused Conv's residual comes later)
    return (tuple(shapes[1]) if len(shapes) > 1 else (), _spatial(shapes[0]) if shapes else ())


def profile_nodes(path: str | Path, options, providers: list[str], *, budget_s: float = 3.0,
                  min_runs: int = 5, max_runs: int = 200) -> tuple[list[NodeTime], float]:
    """Every node ORT executes for the model at ``path`` (in execution order) with its median
    kernel time, and the median run (ms), under ``options`` (a SessionOptions: profiling is
    switched on for this session only) for ``budget_s`` seconds of runs within [``min_runs``,
    ``max_runs``]."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="mdp-profile-") as scratch:
        options.enable_profiling = True
        # the profile goes to a scratch folder, not to the working directory
        options.profile_file_prefix = str(Path(scratch) / "profile")
        try:
            session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        finally:
            options.enable_profiling = False
        feeds = random_feeds(model_inputs(path), seed=0)
        session.run(None, feeds)  # warm-up
        start, runs = time.perf_counter(), 0
        while runs < max_runs and (runs < min_runs or time.perf_counter() - start < budget_s):
            session.run(None, feeds)
            runs += 1
        events = json.loads(Path(session.end_profiling()).read_text())
    durations: dict[str, list[float]] = defaultdict(list)
    meta: dict[str, tuple[str, tuple]] = {}
    totals = []
    for event in sorted(events, key=lambda e: e.get("ts", 0)):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            name, args = event["name"][: -len("_kernel_time")], event["args"]
            shapes = [next(iter(x.values())) for x in args.get("input_type_shape", [])]
            meta.setdefault(name, (args["op_name"], _node_key(shapes)))
            durations[name].append(event["dur"] / 1000)
        elif event.get("cat") == "Session" and event["name"] == "model_run":
            totals.append(event["dur"] / 1000)
    # the warm-up run is left out of each node's median by taking only the last ``runs``
    nodes = [NodeTime(name, op, key, float(np.median(durations[name][-runs:])))
             for name, (op, key) in meta.items()]
    return nodes, float(np.median(totals[-runs:]))


# ORT's NCHWc convs pad both channel counts of their weight up to a multiple of the block
# (8 with AVX2, 16 with AVX-512): a 12-channel layer runs with a 16-channel weight.
NCHWC_BLOCKS = (8, 16)


def _padded(have: int, got: int) -> bool:
    return got == have or any(got == -(-have // block) * block for block in NCHWC_BLOCKS)


def _fits(node_key: tuple, layer_key: tuple, exact: bool) -> bool:
    """Whether a node with ``node_key`` runs a layer with ``layer_key``: the same input size
    and weight shape, or (not ``exact``) with channel counts padded to an NCHWc block."""
    (node_weight, node_hw), (layer_weight, layer_hw) = node_key, layer_key
    node_weight, layer_weight = tuple(node_weight), tuple(layer_weight)
    if node_hw != layer_hw or len(node_weight) != len(layer_weight):
        return False
    if node_weight == layer_weight:
        return True
    return (not exact and node_weight[2:] == layer_weight[2:]
            and all(_padded(have, got) for have, got in zip(layer_weight[:2], node_weight[:2])))


def graph_node(profiled: str, names) -> str | None:
    """The name among ``names`` of the graph node that ORT's node ``profiled`` runs: the same
    name, or the longest one that a fusion suffixed with ``/...``."""
    if profiled in names:
        return profiled
    cuts = [i for i, char in enumerate(profiled) if char == "/" and i > 0]
    return next((profiled[:i] for i in reversed(cuts) if profiled[:i] in names), None)


def layer_times(path: str | Path, layers, nodes: list[NodeTime]) -> dict[str, float]:
    """Each layer's in-model time (ms) among ``nodes`` profiled on the model at ``path``: its
    node's (``match_layers``), plus, for a layer timed with an attention core
    (``Layer.core_nodes``), the nodes ORT runs for the core. Such a layer is left out when none
    of its core's nodes is found (ORT fused the core into one op of another name): its node
    alone would stand for a cell that also times the core."""
    times = {name: node.ms for name, node in match_layers(path, layers, nodes).items()}
    for layer in layers:
        if not layer.core_nodes or layer.name not in times:
            continue
        core = set(layer.core_nodes)
        inside = [n.ms for n in nodes if graph_node(n.name, core) is not None]
        if inside:
            times[layer.name] += sum(inside)
        else:
            del times[layer.name]
    return times


def match_layers(path: str | Path, layers, nodes: list[NodeTime]) -> dict[str, NodeTime]:
    """Each layer's node among ``nodes`` profiled on the model at ``path``; ``layers`` are that
    model's analysed layers (mdp_trt.analysis.Layer). A node whose name is a layer's is that
    layer; each other layer-like node, in execution order, is the first unmatched layer (graph
    order) of the same key, and then of the same key up to NCHWc padding. Layers with no
    matching node (ORT folded them away, or did not list a prepacked weight's shape) are left
    out."""
    model = load_model(path)
    keys = {layer.name: (initializer_array(model, layer.weight).shape,
                         tuple(layer.signature.input_hw)) for layer in layers}
    candidates = [n for n in nodes if n.op in LAYER_OPS]
    found = {}
    for node in candidates:
        name = graph_node(node.name, keys)
        if name is not None and name not in found:
            found[name] = node
    matched = {node.name for node in found.values()}
    for exact in (True, False):
        for node in candidates:
            if node.name in matched:
                continue
            name = next((k for k in keys if k not in found and _fits(node.key, keys[k], exact)),
                        None)
            if name is not None:
                found[name] = node
                matched.add(node.name)
    return found
