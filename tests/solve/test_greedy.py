"""The HALP-style greedy baseline: feasible plans, blocks kept, honest infeasibility."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mdp_trt.solve.exact import solve_exact
from mdp_trt.solve.generate import chain_instance, random_instance
from mdp_trt.solve.greedy import solve_greedy
from mdp_trt.solve.problem import load_problem
from tests.solve.official import official_path, official_reference


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_feasible_or_honestly_infeasible(seed: int) -> None:
    p = load_problem(random_instance(seed))
    plan = solve_greedy(p)
    ev = p.evaluate(plan.options, plan.blocks)
    active = p.active_blocks()
    assert all(plan.blocks[b] == 1 for b in active)  # channel-only: no block removed
    if plan.status == "feasible":
        assert ev.feasible and plan.objective == ev.objective
        optimum = solve_exact(p)
        assert optimum.status == "optimal" and plan.objective <= optimum.objective
    else:
        assert plan.status == "infeasible"
        narrowest = [p.allowed_options(g).start for g in range(p.num_groups)]
        assert plan.min_latency == p.evaluate(narrowest, plan.blocks).latency
        assert not p.fits(plan.min_latency)


def test_official_instances_are_feasible_and_below_optimum() -> None:
    ref = official_reference()
    for step in ("04", "15", "28"):
        p = load_problem(official_path(step))
        plan = solve_greedy(p)
        assert plan.status == "feasible"
        assert p.evaluate(plan.options, plan.blocks).feasible
        assert plan.objective <= ref[step]["optimum"]["objective"]


def test_uses_most_of_a_loose_budget() -> None:
    p = load_problem(chain_instance(10, 8, seed=3, budget_fraction=0.6))
    plan = solve_greedy(p)
    assert plan.status == "feasible"
    assert plan.latency > 0.8 * p.effective_capacity
