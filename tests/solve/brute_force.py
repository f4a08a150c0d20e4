"""Reference answers by enumerating every assignment (tiny problems only)."""

from __future__ import annotations

import itertools

from mdp_trt.solve.problem import Problem

__all__ = ["brute_force"]


def brute_force(problem: Problem) -> tuple[int | float | None, int | float]:
    """(best feasible objective or None, smallest latency over all valid assignments)."""
    best = None
    min_latency = None
    options = [list(problem.allowed_options(g)) for g in range(problem.num_groups)]
    flags = [[1] if b in problem.forced_blocks else [0, 1] for b in range(problem.num_blocks)]
    for opts in itertools.product(*options):
        for blocks in itertools.product(*flags):
            ev = problem.evaluate(opts, blocks)
            min_latency = ev.latency if min_latency is None else min(min_latency, ev.latency)
            if ev.feasible and (best is None or ev.objective > best):
                best = ev.objective
    assert min_latency is not None
    return best, min_latency
