"""Choosing channels and blocks under a latency budget: the MDP optimisation problem and its solvers.

``load_problem`` reads an `mdp-minlp-instance/1` problem, ``solve`` returns a ``Plan``
(`mdp-plan/1`). The default solver ``exact`` is provably optimal (Pareto dynamic programming over
a tree decomposition of the group-interaction graph); ``milp``, ``mindtpy`` and ``greedy`` are
baselines. See docs/solver.md.
"""

from mdp_trt.solve.plan import PLAN_FORMAT, Plan, PlanStatus
from mdp_trt.solve.problem import FORMAT, Evaluation, Problem, load_problem
from mdp_trt.solve.registry import SOLVERS, SolverName, solve

__all__ = [
    "FORMAT",
    "PLAN_FORMAT",
    "Evaluation",
    "Plan",
    "PlanStatus",
    "Problem",
    "SOLVERS",
    "SolverName",
    "load_problem",
    "solve",
]
