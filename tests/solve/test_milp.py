"""The MILP baseline: exact on tiny instances (brute force) and on official instances."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mdp_trt.solve.generate import random_instance
from mdp_trt.solve.milp import solve_milp
from mdp_trt.solve.problem import load_problem
from tests.solve.brute_force import brute_force
from tests.solve.official import official_path, official_reference


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_matches_brute_force(seed: int) -> None:
    p = load_problem(random_instance(seed))
    best, min_latency = brute_force(p)
    plan = solve_milp(p)
    if best is None:
        assert plan.status == "infeasible"
        assert plan.min_latency == pytest.approx(min_latency, rel=1e-7, abs=1e-7)
    else:
        assert plan.status == "optimal"
        ev = p.evaluate(plan.options, plan.blocks)
        assert ev.feasible and ev.objective == pytest.approx(best, rel=1e-7, abs=1e-7)


@pytest.mark.parametrize("step", ["05", "25"])
def test_official_optimum(step: str) -> None:
    ref = official_reference()
    p = load_problem(official_path(step))
    plan = solve_milp(p)
    assert plan.status == "optimal"
    assert plan.objective == plan.bound == ref[step]["optimum"]["objective"]
    assert p.evaluate(plan.options, plan.blocks).feasible
