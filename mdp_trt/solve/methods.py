"""Pruning methods: MDP and the baselines it is compared with, on one problem and one pipeline.

A method is (1) the view of the problem it optimises and (2) how it picks a plan in that view;
everything else (importance, tables, surgery, verification, the measured closed loop) is shared,
so methods compare at equal *measured* latency.

- ``mdp``: the full problem (channels and blocks, bilayer latency), the configured solver.
- ``mdp-channels``: the same solver with every block forced kept (the "no blocks" ablation).
- ``halp``: HALP's view: channels only, and a layer's latency depends on its output width only
  (each table row is its widest-input entry, so pruning a layer's input earns nothing); the
  greedy importance-per-latency knapsack (``solve/greedy.py``).
- ``uniform``: channels only, one keep fraction everywhere (``solve/uniform.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

from mdp_trt.errors import InputError
from mdp_trt.solve.plan import Plan
from mdp_trt.solve.problem import Problem
from mdp_trt.solve.registry import solve
from mdp_trt.solve.uniform import solve_uniform

__all__ = ["Method", "METHODS", "method_problem", "removes_blocks", "solve_method"]

Method = Literal["mdp", "mdp-channels", "halp", "uniform"]
METHODS: tuple[str, ...] = get_args(Method)


def removes_blocks(method: str) -> bool:
    """Whether ``method``'s plans may remove residual blocks (the baselines keep them all)."""
    return method == "mdp"


def method_problem(problem: Problem, method: str) -> Problem:
    """``problem`` as ``method`` sees it (the baselines' views name the method in metadata)."""
    if method not in METHODS:
        raise InputError(f"unknown pruning method {method!r}; choose one of: {', '.join(METHODS)}")
    if removes_blocks(method):
        return problem
    view = problem.with_blocks_kept()
    if method == "halp":
        view = view.with_output_only_latency()
    return view.with_metadata(method=method)


def solve_method(problem: Problem, method: str, *, widths: Sequence[Sequence[int]],
                 solver: str = "exact", time_limit: float | None = None) -> Plan:
    """A plan for ``problem`` (already in the method's view, see :func:`method_problem`).

    ``widths[g]`` lists the channel count of each option of group g (used by ``uniform``);
    ``solver`` and ``time_limit`` apply to the MDP methods (HALP is greedy by definition).
    """
    if method in ("mdp", "mdp-channels"):
        return solve(problem, solver, time_limit)
    if method == "halp":
        return solve(problem, "greedy")
    if method == "uniform":
        return solve_uniform(problem, widths)
    raise InputError(f"unknown pruning method {method!r}; choose one of: {', '.join(METHODS)}")
