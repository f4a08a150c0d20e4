"""Turn an analysed, scored and profiled model into an ``mdp-minlp-instance/1`` problem, and a
solved plan back into channels to keep and blocks to remove.

Units: latencies are written as integer microseconds (the official instances are integral too,
so solvers can use exact integer arithmetic); importances are scaled to integers summing to
about 1e9, which keeps their ranking to 1e-9 relative precision. ``latency_offset`` holds the
calibrated latency of everything the tables do not cover, so that capacity is the whole budget.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mdp_trt.analysis import Analysis
from mdp_trt.importance import Importance
from mdp_trt.solve.problem import FORMAT

__all__ = ["IMPORTANCE_SCALE_TOTAL", "formulate", "decode_plan", "Decoded"]

IMPORTANCE_SCALE_TOTAL = 1e9
OUTSIDE_BLOCKS = "(outside removable blocks)"


def _us(ms: float) -> int:
    return int(round(ms * 1000.0))


def formulate(
    analysis: Analysis,
    importance: Importance,
    tables: dict[str, list[list[float]]],
    *,
    group_size: int,
    budget_ms: float,
    offset_ms: float,
    name: str,
) -> dict:
    """The problem as a JSON-ready dict. Problem block 0 is the forced-kept pseudo block that
    holds every layer outside a removable block; removable block ``b`` of the analysis becomes
    problem block ``index + 1`` in the order of ``removable_blocks(analysis)``."""
    options = {g.id: g.options(group_size) for g in analysis.groups}
    block_ids = {b.id: i + 1 for i, b in enumerate(removable_blocks(analysis))}
    raw = {layer.name: importance.cumulative(analysis, layer.name, options[layer.out_group])
           for layer in analysis.layers}
    total = sum(v[-1] for v in raw.values()) or 1.0
    scale = IMPORTANCE_SCALE_TOTAL / total
    layers = []
    for layer in analysis.layers:
        matrix = tables[layer.name]
        latency = ([_us(row[1]) for row in matrix] if layer.in_group is None
                   else [[_us(v) for v in row] for row in matrix])
        layers.append({
            "name": layer.name,
            "group": layer.out_group,
            "prev_group": layer.in_group,
            "block": block_ids.get(layer.block, 0) if layer.block is not None else 0,
            "latency": latency,
            "importance": [int(round(v * scale)) for v in raw[layer.name]],
            "in_objective": True,
            "latency_times_block": True,
        })
    blocks = [{"id": 0, "name": OUTSIDE_BLOCKS, "num_active_layers": 0}]
    blocks += [{"id": block_ids[b.id], "name": b.name, "num_active_layers": len(b.layers)}
               for b in removable_blocks(analysis)]
    blocks[0]["num_active_layers"] = sum(1 for x in layers if x["block"] == 0)
    capacity = _us(budget_ms)
    return {
        "format": FORMAT,
        "name": name,
        "capacity": capacity,
        "extra_space": 0,
        "effective_capacity": capacity,
        "latency_offset": _us(offset_ms),
        "groups": [{"name": g.name, "layers": list(g.producers), "num_options": len(options[g.id]),
                    "channels_per_option": g.unit(group_size) if g.prunable else g.channels}
                   for g in analysis.groups],
        "blocks": blocks,
        "layers": layers,
        "inactive_layers": [],
        "constraints": {"one_option_per_group": True, "option_zero_forbidden": True,
                        "block_forced_kept": 0, "stem": None},
        "metadata": {"latency_unit": "us", "importance_scale": scale, "group_size": group_size,
                     "model": analysis.model},
    }


def _top_channels(analysis: Analysis, importance: Importance, group, count: int) -> list[int]:
    """The ``count`` most important channels; for a group in ``divisions`` blocks (a grouped
    conv's, or one whose producers cover parts of it), every pinned block and the same number
    from each other block (anything else cannot shrink the grouped conv, and would leave a
    part's producer wider or narrower than its latency table says)."""
    if group.divisions <= 1:
        return sorted(importance.ranking(analysis, group.id)[:count])
    scores = importance.group_scores(analysis, group.id)
    size = group.channels // group.divisions
    per_block = (count - group.pinned_channels) * size // (group.channels - group.pinned_channels)
    kept: list[int] = []
    for start in range(0, group.channels, size):
        block = np.arange(start, start + size)
        take = size if any(a <= start < b for a, b in group.pinned) else per_block
        kept += [int(c) for c in block[np.argsort(-scores[block], kind="stable")][:take]]
    return sorted(kept)


def removable_blocks(analysis: Analysis):
    return [b for b in analysis.blocks if b.removable]


@dataclass(frozen=True)
class Decoded:
    keep: dict[int, list[int]]  # analysis group id -> kept channel indices (sorted)
    removed_blocks: frozenset[int]  # analysis block ids
    kept_channels: dict[str, int]  # group name -> kept channel count
    removed_block_names: tuple[str, ...]


def decode_plan(analysis: Analysis, importance: Importance, group_size: int,
                options: list[int], blocks: list[int]) -> Decoded:
    """Channels to keep (the top ones of each group's ranking) and blocks to remove."""
    keep: dict[int, list[int]] = {}
    counts: dict[str, int] = {}
    for group in analysis.groups:
        channels = group.options(group_size)[options[group.id]]
        counts[group.name] = channels
        if channels < group.channels:
            keep[group.id] = _top_channels(analysis, importance, group, channels)
    removed = [b for i, b in enumerate(removable_blocks(analysis)) if not blocks[i + 1]]
    return Decoded(keep=keep, removed_blocks=frozenset(b.id for b in removed),
                   kept_channels=counts, removed_block_names=tuple(b.name for b in removed))
