"""Baseline: HALP-style greedy knapsack (channel pruning only, output-channel latency model).

HALP (NVlabs) ranks channel groups by importance per unit of latency and keeps them greedily
until the budget is spent. As in HALP, blocks are never removed and the latency of a layer is
attributed to its output channels only: the cost of keeping k units of group g is
``sum_{l: group(l)=g} latency_l[k][widest input]``, blind to the input group's own pruning (the
blind spot MDP's bilayer model fixes). Every group starts at its narrowest allowed option; the
next unit of the group with the best importance-per-latency ratio is added while the estimate
fits. The plan is then re-evaluated with the real (bilayer) model and, if that overshoots, the
last additions are undone until it fits. Status "feasible" (no optimality claim), or
"infeasible" when even the narrowest channel-only plan does not fit (note: removing blocks might
still make the budget reachable; ``min_latency`` is that narrowest plan's latency).
"""

from __future__ import annotations

import heapq
import time

import numpy as np

from mdp_trt.solve.plan import Plan
from mdp_trt.solve.problem import Problem

__all__ = ["solve_greedy"]

_NAME = "greedy"


def solve_greedy(problem: Problem, time_limit: float | None = None) -> Plan:
    """The HALP-style greedy plan (see the module docstring); ``time_limit`` is not needed."""
    t0 = time.perf_counter()
    active = problem.active_blocks()
    blocks = [1 if (b in active or b in problem.forced_blocks) else 0 for b in range(problem.num_blocks)]
    cost = [np.zeros(g.num_options) for g in problem.groups]
    value = [np.zeros(g.num_options) for g in problem.groups]
    for layer in problem.layers:
        if layer.prev_group is None:
            cost[layer.group] += layer.latency
        else:
            cost[layer.group] += layer.latency[:, -1]
        if layer.in_objective:
            value[layer.group] += layer.importance
    options = [problem.allowed_options(g).start for g in range(problem.num_groups)]
    estimate = problem.latency_offset + sum(float(cost[g][o]) for g, o in enumerate(options))
    budget = problem.effective_capacity + problem.latency_tolerance

    def push(heap: list[tuple[float, int, int]], g: int) -> None:
        nxt = options[g] + 1
        if nxt in problem.allowed_options(g):
            d_cost = float(cost[g][nxt] - cost[g][nxt - 1])
            d_value = float(value[g][nxt] - value[g][nxt - 1])
            ratio = d_value / d_cost if d_cost > 0 else np.inf
            heapq.heappush(heap, (-ratio, g, nxt))

    heap: list[tuple[float, int, int]] = []
    for g in range(problem.num_groups):
        push(heap, g)
    added: list[int] = []
    while heap:
        _, g, nxt = heapq.heappop(heap)
        d_cost = float(cost[g][nxt] - cost[g][nxt - 1])
        if estimate + d_cost > budget:
            continue  # this group stops growing; others may still fit
        estimate += d_cost
        options[g] = nxt
        added.append(g)
        push(heap, g)
    ev = problem.evaluate(options, blocks)
    while not ev.feasible and added:
        options[added.pop()] -= 1
        ev = problem.evaluate(options, blocks)
    if not ev.feasible:
        return Plan.infeasible(
            _NAME, latency=ev.latency, options=options, blocks=blocks,
            seconds=time.perf_counter() - t0,
            note="the narrowest channel-only plan (all blocks kept) exceeds the budget",
        )
    return Plan(
        solver=_NAME,
        status="feasible",
        objective=ev.objective,
        bound=None,
        latency=ev.latency,
        options=tuple(options),
        blocks=tuple(blocks),
        solve_seconds=time.perf_counter() - t0,
    )
