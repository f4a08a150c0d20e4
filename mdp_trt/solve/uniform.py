"""Baseline: uniform channel pruning, the same keep fraction in every prunable group.

Every group keeps the option whose channel count is nearest to ``fraction * channels`` (ties go
to the wider option; never below the group's narrowest allowed option); blocks are never
removed. The fractions tried are every ratio some group can realise exactly, so no distinct
uniform plan is missed; the plan is that of the largest fraction whose latency (the problem's
own latency model, offset included) meets the budget. Importance plays no part in choosing the
widths, only in which channels are kept (decode_plan ranks them as for every method).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from mdp_trt.errors import InputError
from mdp_trt.solve.plan import Plan
from mdp_trt.solve.problem import Problem

__all__ = ["solve_uniform", "uniform_options"]

_NAME = "uniform"


def uniform_options(problem: Problem, widths: Sequence[Sequence[int]], fraction: float) -> list[int]:
    """The option of each group nearest to keeping ``fraction`` of its channels.

    ``widths[g][k]`` is the channel count of option k of group g (``ChannelGroup.options``).
    """
    options = []
    for g, counts in enumerate(widths):
        allowed = problem.allowed_options(g)
        goal = fraction * counts[-1]
        options.append(min(allowed, key=lambda k: (abs(counts[k] - goal), -k)))
    return options


def solve_uniform(problem: Problem, widths: Sequence[Sequence[int]]) -> Plan:
    """The uniform plan of the largest keep fraction that fits the budget (see module doc)."""
    t0 = time.perf_counter()
    if len(widths) != problem.num_groups or any(
            len(w) != g.num_options for w, g in zip(widths, problem.groups)):
        raise InputError(f"uniform pruning: widths describe {len(widths)} groups, problem "
                         f"{problem.name!r} has {problem.num_groups} groups; give one channel "
                         "count per option of every group (ChannelGroup.options)")
    blocks = [1] * problem.num_blocks
    fractions = sorted({counts[k] / counts[-1] for counts in widths for k in range(1, len(counts))},
                       reverse=True)
    narrowest = None
    for fraction in fractions:
        options = uniform_options(problem, widths, fraction)
        evaluation = problem.evaluate(options, blocks)
        if evaluation.feasible:
            return Plan(solver=_NAME, status="feasible", objective=evaluation.objective, bound=None,
                        latency=evaluation.latency, options=tuple(options), blocks=tuple(blocks),
                        solve_seconds=time.perf_counter() - t0, extra={"keep_fraction": fraction})
        narrowest = (options, evaluation.latency)
    options, latency = narrowest
    return Plan.infeasible(_NAME, latency=latency, options=options, blocks=blocks,
                           seconds=time.perf_counter() - t0,
                           note="keeping the narrowest option of every group exceeds the budget")
