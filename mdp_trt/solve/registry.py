"""Solvers by name, and :func:`solve`, the entry point the CLI and the pipeline call.

Every solver has the signature ``(problem, time_limit_seconds_or_None) -> Plan`` and reports an
infeasible budget as a plan with status "infeasible" (and ``min_latency`` where it knows it)
instead of raising; only unusable input or a missing backend raises.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Literal, get_args

from mdp_trt.errors import BackendUnavailable, InputError
from mdp_trt.solve.exact import solve_exact
from mdp_trt.solve.greedy import solve_greedy
from mdp_trt.solve.milp import solve_milp
from mdp_trt.solve.mindtpy import mindtpy_unavailable_reason, solve_mindtpy
from mdp_trt.solve.plan import Plan
from mdp_trt.solve.problem import Problem

__all__ = ["SolverName", "SOLVERS", "check_solver", "solve"]

logger = logging.getLogger(__name__)

SolverName = Literal["exact", "milp", "mindtpy", "greedy"]

SOLVERS: dict[str, Callable[[Problem, float | None], Plan]] = {
    "exact": solve_exact,  # provably optimal, Pareto DP over a tree decomposition (default)
    "milp": solve_milp,  # exact transportation-form MILP in HiGHS
    "mindtpy": solve_mindtpy,  # the paper's MINLP call (MindtPy OA + GLPK + Ipopt), heuristic
    "greedy": solve_greedy,  # HALP-style channel-only greedy knapsack, heuristic
}
assert set(SOLVERS) == set(get_args(SolverName))


def check_solver(solver: str, time_limit: float | None) -> None:
    """Raise InputError for an unknown solver name or a time limit that is not a positive,
    finite number of seconds, BackendUnavailable when the solver cannot run here (checked before
    any work, so a typo or a missing package costs no measuring)."""
    if solver not in SOLVERS:
        raise InputError(f"`solver` {solver!r} is unknown; choose one of: {', '.join(SOLVERS)}",
                         parameters=("solver",))
    if time_limit is not None and not (math.isfinite(time_limit) and time_limit > 0):
        raise InputError(f"`time_limit` {time_limit!r} must be a positive number of seconds",
                         parameters=("time_limit",))
    if solver == "mindtpy" and (reason := mindtpy_unavailable_reason()) is not None:
        raise BackendUnavailable(reason)


def solve(problem: Problem, solver: str = "exact", time_limit: float | None = None) -> Plan:
    """Solve ``problem`` with the named solver; ``time_limit`` in seconds (None: no limit).

    Raises InputError for an unknown solver name or a non-positive time limit, BackendUnavailable
    when the solver's dependencies are missing. An infeasible budget is not an error here: the
    plan has status "infeasible" and ``min_latency``.
    """
    check_solver(solver, time_limit)
    plan = SOLVERS[solver](problem, time_limit)
    logger.info("%s: %s, objective %s, latency %s, %.3f s", plan.solver, plan.status, plan.objective, plan.latency, plan.solve_seconds)
    return plan
