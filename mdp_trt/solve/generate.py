"""Seeded generators of `mdp-minlp-instance/1` problems for tests and benchmarks.

* :func:`chain_instance`: a deep plain network, group k feeds group k+1 (the shape of VGG-like
  chains); latency grows with both widths (bilayer model), importance is concave in the width.
* :func:`resnet_instance`: the structure of torchvision's ResNet-18/34/50 (a residual group
  shared by every block of a stage, removable blocks, projection shortcuts in block 0);
* :func:`random_instance`: small instances with random structure (shared residual groups, blocks,
  forced stem, unprunable groups, float or integer data) for brute-force comparisons.

Both return plain dicts (the JSON form), so they also exercise :func:`load_problem`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mdp_trt.solve.problem import FORMAT

__all__ = ["chain_instance", "random_instance", "resnet_instance"]


def _importance(rng: np.random.Generator, n: int, scale: float, integral: bool) -> list[float]:
    """A cumulated, non-increasing score per unit: importance[k] = sum of the top-k scores."""
    scores = np.sort(rng.gamma(2.0, scale, size=n - 1))[::-1]
    imp = np.concatenate([[0.0], np.cumsum(scores)])
    return (np.round(imp).astype(np.int64).tolist() if integral else imp.tolist())


def _latency(rng: np.random.Generator, n_out: int, n_in: int | None, scale: float, integral: bool) -> list[Any]:
    """Bilayer latency, roughly ``c + a*i*j``, with per-cell noise; row/column 0 are 0."""
    i = np.arange(n_out, dtype=np.float64)[:, None] / max(1, n_out - 1)
    j = np.ones((1, 1)) if n_in is None else np.arange(n_in, dtype=np.float64)[None, :] / max(1, n_in - 1)
    base = scale * (0.15 + 0.85 * i * j + 0.1 * i) * rng.uniform(0.9, 1.1, size=(n_out, 1 if n_in is None else n_in))
    base[0, :] = 0
    if n_in is not None:
        base[:, 0] = 0
    lat = np.round(base).astype(np.int64) if integral else base
    return (lat[:, 0] if n_in is None else lat).tolist()


def chain_instance(
    num_groups: int,
    num_options: int,
    seed: int = 0,
    *,
    budget_fraction: float = 0.5,
    block_size: int = 0,
    integral: bool = True,
) -> dict[str, Any]:
    """A chain of ``num_groups`` groups with ``num_options`` options each (option 0 forbidden).

    Layer k has output group k and input group k-1 (layer 0 is the stem, no input group, free
    width). With ``block_size`` b > 0, consecutive runs of b layers after the stem form removable
    blocks (a block removes those layers' latency and importance, as a residual block would).
    The budget is ``budget_fraction`` of the dense latency (every group at its widest).
    """
    rng = np.random.default_rng(seed)
    groups = [{"name": f"g{k}", "layers": [f"conv{k}"], "num_options": num_options} for k in range(num_groups)]
    layers = []
    num_blocks = 1
    for k in range(num_groups):
        block = 0
        if block_size > 0 and k > 0:
            block = 1 + (k - 1) // block_size
            num_blocks = max(num_blocks, block + 1)
        layers.append(
            {
                "name": f"conv{k}",
                "group": k,
                "prev_group": None if k == 0 else k - 1,
                "block": block,
                "latency": _latency(rng, num_options, None if k == 0 else num_options, 1000.0 * rng.uniform(0.5, 2.0), integral),
                "importance": _importance(rng, num_options, 1000.0 * rng.uniform(0.5, 2.0), integral),
                "in_objective": True,
                "latency_times_block": True,
            }
        )
    dense = sum(
        (layer["latency"][-1] if layer["prev_group"] is None else layer["latency"][-1][-1]) for layer in layers
    )
    capacity = budget_fraction * dense
    blocks = [{"id": b, "name": f"block{b}", "num_active_layers": 0} for b in range(num_blocks)]
    for layer in layers:
        blocks[layer["block"]]["num_active_layers"] += 1
    return {
        "format": FORMAT,
        "name": f"chain_{num_groups}x{num_options}_seed{seed}",
        "capacity": int(round(capacity)) if integral else capacity,
        "extra_space": 0,
        "groups": groups,
        "blocks": blocks,
        "layers": layers,
        "constraints": {"one_option_per_group": True, "option_zero_forbidden": True, "block_forced_kept": 0, "stem": None},
    }


def random_instance(
    seed: int,
    *,
    max_groups: int = 4,
    max_options: int = 4,
    max_blocks: int = 3,
    integral: bool | None = None,
    budget_fraction: float | None = None,
) -> dict[str, Any]:
    """A small random instance (few groups/options) that brute force can enumerate.

    Random choices: number of groups (1..max_groups), options per group (2..max_options), which
    group is the stem (forced widest) if any, a few layers with random output/input groups
    (including shared output groups like residual stages, and a stem-like layer without input
    group), blocks with random membership (block 0 forced kept or not), flags
    ``in_objective``/``latency_times_block``, float or integer data, an optional latency offset,
    and a budget anywhere from infeasible to loose.
    """
    rng = np.random.default_rng(seed)
    if integral is None:
        integral = bool(rng.integers(2))
    ng = int(rng.integers(1, max_groups + 1))
    nopts = [int(rng.integers(2, max_options + 1)) for _ in range(ng)]
    nb = int(rng.integers(1, max_blocks + 1))
    layers = []
    nlayers = int(rng.integers(1, 2 * ng + 2))
    for k in range(nlayers):
        g = int(rng.integers(ng)) if k >= ng else k  # every group gets at least one layer
        p: int | None = int(rng.integers(ng))
        if rng.random() < 0.25:
            p = None
        block = int(rng.integers(nb))
        lat = _latency(rng, nopts[g], None if p is None else nopts[p], float(rng.uniform(5, 50)), integral)
        if p == g and p is not None:
            pass  # a layer reading its own group (depthwise-like) is allowed
        layers.append(
            {
                "name": f"l{k}",
                "group": g,
                "prev_group": p,
                "block": block,
                "latency": lat,
                "importance": _importance(rng, nopts[g], float(rng.uniform(1, 20)), integral),
                "in_objective": bool(rng.random() < 0.9),
                "latency_times_block": bool(rng.random() < 0.9),
            }
        )
    stem = None
    if rng.random() < 0.4:
        sg = int(rng.integers(ng))
        stem = {"group": sg, "forced_option": nopts[sg] - 1}
    forced: Any = 0 if rng.random() < 0.6 else None
    offset = float(rng.uniform(0, 20)) if rng.random() < 0.3 else 0.0
    if integral:
        offset = float(round(offset))

    def lat_of(layer: dict[str, Any], full: bool) -> float:
        arr = np.asarray(layer["latency"], dtype=np.float64)
        return float(arr.max() if full else arr[arr > 0].min() if np.any(arr > 0) else 0.0)

    dense = offset + sum(lat_of(layer, True) for layer in layers)
    lo = offset + sum(lat_of(layer, False) for layer in layers if not layer["latency_times_block"])
    frac = float(rng.uniform(-0.1, 1.1)) if budget_fraction is None else budget_fraction
    capacity = lo + frac * (dense - lo)
    return {
        "format": FORMAT,
        "name": f"random_{seed}",
        "capacity": int(round(capacity)) if integral else capacity,
        "extra_space": 0,
        "latency_offset": int(offset) if integral else offset,
        "groups": [{"name": f"g{g}", "layers": [], "num_options": n} for g, n in enumerate(nopts)],
        "blocks": [{"id": b, "name": f"b{b}"} for b in range(nb)],
        "layers": layers,
        "constraints": {"block_forced_kept": forced, "stem": stem},
        "metadata": {"generator": "random_instance", "seed": seed},
    }


_RESNET_STAGES = {18: ((2, 2, 2, 2), False), 34: ((3, 4, 6, 3), False), 50: ((3, 4, 6, 3), True)}


def resnet_instance(
    depth: int = 50,
    group_size: int = 32,
    seed: int = 0,
    *,
    budget_fraction: float = 0.5,
    integral: bool = True,
) -> dict[str, Any]:
    """A problem with the group/block structure of torchvision's ResNet-``depth`` (18, 34, 50).

    Groups: the stem's output (shared with every stage-1 block input and the stage-1 residual when
    there is no projection, i.e. ResNet-18/34), one residual group per stage (all blocks' last
    conv plus the projection conv), and the inner convs of each block. Every residual block is
    removable; projections and the stem sit in block 0 (forced kept). Options per group =
    channels / ``group_size`` + 1. Latency scales with in*out channels and the stage's spatial
    size; the budget is ``budget_fraction`` of the dense latency.
    """
    stages, bottleneck = _RESNET_STAGES[depth]
    rng = np.random.default_rng(seed)
    widths = (64, 128, 256, 512)
    expansion = 4 if bottleneck else 1
    groups: list[dict[str, Any]] = []
    layers: list[dict[str, Any]] = []
    blocks = [{"id": 0, "name": "layer0.0"}]

    def group(name: str, channels: int) -> int:
        groups.append({"name": name, "layers": [], "num_options": channels // group_size + 1,
                       "channels_per_option": group_size})
        return len(groups) - 1

    def layer(name: str, g: int, p: int | None, block: int, scale: float) -> None:
        n_out = groups[g]["num_options"]
        n_in = None if p is None else groups[p]["num_options"]
        groups[g]["layers"].append(name)
        layers.append({"name": name, "group": g, "prev_group": p, "block": block,
                       "latency": _latency(rng, n_out, n_in, scale, integral),
                       "importance": _importance(rng, n_out, 1000.0 * rng.uniform(0.5, 2.0), integral),
                       "in_objective": True, "latency_times_block": True})

    stem = group("conv1", 64)
    layer("conv1", stem, None, 0, 8000.0)
    prev = stem
    for s_idx, (count, width) in enumerate(zip(stages, widths)):
        spatial = 4.0 ** (-s_idx)
        out_channels = width * expansion
        projection = bottleneck or s_idx > 0
        residual = group(f"residual:layer{s_idx + 1}", out_channels) if projection else prev
        if projection:
            layer(f"layer{s_idx + 1}.0.downsample.0", residual, prev, 0, 3000.0 * spatial * out_channels / 256)
        for k in range(count):
            blocks.append({"id": len(blocks), "name": f"layer{s_idx + 1}.{k}"})
            b = len(blocks) - 1
            src = prev if k == 0 else residual
            inner = group(f"layer{s_idx + 1}.{k}.conv1", width)
            layer(f"layer{s_idx + 1}.{k}.conv1", inner, src, b, 3000.0 * spatial * width / 64)
            last = inner
            if bottleneck:
                mid = group(f"layer{s_idx + 1}.{k}.conv2", width)
                layer(f"layer{s_idx + 1}.{k}.conv2", mid, inner, b, 6000.0 * spatial * width / 64)
                last = mid
            layer(f"layer{s_idx + 1}.{k}.conv{3 if bottleneck else 2}", residual, last, b,
                  3000.0 * spatial * width / 64)
        prev = residual
    dense = 0.0
    for item in layers:
        lat = np.asarray(item["latency"], dtype=np.float64)
        dense += float(lat.flat[-1])
    capacity = budget_fraction * dense
    return {
        "format": FORMAT,
        "name": f"resnet{depth}_gs{group_size}_seed{seed}",
        "capacity": int(round(capacity)) if integral else capacity,
        "extra_space": 0,
        "groups": groups,
        "blocks": blocks,
        "layers": layers,
        "constraints": {"block_forced_kept": 0, "stem": None},
    }
