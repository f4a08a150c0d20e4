"""solve(): solver choice, argument checks, infeasible budgets as plans."""

from __future__ import annotations

import pytest

from mdp_trt.errors import InputError
from mdp_trt.solve import SOLVERS, load_problem, solve
from mdp_trt.solve.generate import chain_instance


def test_unknown_solver_lists_choices() -> None:
    p = load_problem(chain_instance(3, 3))
    with pytest.raises(InputError, match="exact, milp, mindtpy, greedy"):
        solve(p, "cplex")


@pytest.mark.parametrize("limit", [0, -1, float("nan"), float("inf")])
def test_bad_time_limit(limit) -> None:
    p = load_problem(chain_instance(3, 3))
    with pytest.raises(InputError, match="`time_limit`"):
        solve(p, "exact", time_limit=limit)


@pytest.mark.parametrize("name", ["exact", "milp", "greedy"])
def test_infeasible_budget_is_a_plan(name: str) -> None:
    p = load_problem(chain_instance(4, 3, seed=1, budget_fraction=0.01))
    plan = solve(p, name)
    assert plan.status == "infeasible" and plan.objective is None
    assert plan.min_latency is not None and not p.fits(plan.min_latency)


def test_solvers_agree_on_a_chain() -> None:
    p = load_problem(chain_instance(8, 6, seed=5, block_size=2))
    exact, milp, greedy = (solve(p, n) for n in ("exact", "milp", "greedy"))
    assert exact.objective == milp.objective
    assert greedy.objective <= exact.objective
    assert set(SOLVERS) == {"exact", "milp", "mindtpy", "greedy"}
