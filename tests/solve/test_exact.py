"""The exact solver against brute force, the official proven optima, and its limits."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mdp_trt.solve import exact as exact_module
from mdp_trt.solve.exact import solve_exact
from mdp_trt.solve.generate import chain_instance, random_instance, resnet_instance
from mdp_trt.solve.factor_graph import build_factor_graph
from mdp_trt.solve.junction_tree import TreeTooWide, build_junction_tree
from mdp_trt.solve.milp import solve_milp
from mdp_trt.solve.problem import load_problem
from tests.solve.brute_force import brute_force
from tests.solve.official import official_path, official_reference


def _check_against_brute_force(problem) -> None:
    best, min_latency = brute_force(problem)
    plan = solve_exact(problem)
    if best is None:
        assert plan.status == "infeasible"
        assert plan.min_latency == pytest.approx(min_latency, rel=1e-9, abs=1e-9)
        assert problem.evaluate(plan.options, plan.blocks).latency == plan.min_latency
        return
    assert plan.status == "optimal"
    ev = problem.evaluate(plan.options, plan.blocks)
    assert ev.feasible
    assert ev.objective == pytest.approx(best, rel=1e-9, abs=1e-9)
    assert (plan.objective, plan.latency, plan.bound) == (ev.objective, ev.latency, ev.objective)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), integral=st.booleans())
def test_matches_brute_force(seed: int, integral: bool) -> None:
    _check_against_brute_force(load_problem(random_instance(seed, integral=integral)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), frac=st.floats(0.3, 0.9))
def test_matches_brute_force_larger(seed: int, frac: float) -> None:
    d = random_instance(seed, max_groups=5, max_options=5, max_blocks=4, budget_fraction=frac)
    _check_against_brute_force(load_problem(d))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_infeasible_budget_reports_min_latency(seed: int) -> None:
    _check_against_brute_force(load_problem(random_instance(seed, budget_fraction=-0.5)))


def test_all_official_optima() -> None:
    ref = official_reference()
    for step, record in sorted(ref.items()):
        p = load_problem(official_path(step))
        plan = solve_exact(p)
        ev = p.evaluate(plan.options, plan.blocks)
        assert plan.status == "optimal", step
        assert ev.feasible, step
        assert ev.objective == record["optimum"]["objective"], step
        assert plan.objective == plan.bound == ev.objective


def test_chain_matches_milp() -> None:
    p = load_problem(chain_instance(12, 8, seed=4, block_size=3))
    a, b = solve_exact(p), solve_milp(p)
    assert a.status == b.status == "optimal"
    assert a.objective == b.objective


def test_time_limit_returns_incumbent_and_valid_bound() -> None:
    p = load_problem(chain_instance(60, 32, seed=2))
    full = solve_exact(p)
    limited = solve_exact(p, time_limit=1e-4)
    assert limited.status in ("time_limit", "optimal")
    ev = p.evaluate(limited.options, limited.blocks)
    assert ev.feasible and limited.objective == ev.objective
    assert limited.objective <= full.objective <= limited.bound


def test_wide_decomposition_falls_back_to_milp(monkeypatch) -> None:
    monkeypatch.setattr(exact_module, "MAX_CLIQUE_SIZE", 1)
    p = load_problem(chain_instance(6, 4, seed=0))
    plan = solve_exact(p)
    assert plan.solver == "exact(milp fallback)"
    assert any("too wide" in n for n in plan.notes)
    monkeypatch.undo()
    assert plan.status == "optimal" and plan.objective == solve_exact(p).objective


def test_problem_without_free_variables() -> None:
    d = random_instance(5)
    for g in d["groups"]:
        g["num_options"] = 2
    for layer in d["layers"]:
        layer["latency"] = [0, 1] if layer["prev_group"] is None else [[0, 0], [0, 1]]
        layer["importance"] = [0, 1]
    d["blocks"] = [{"id": 0, "name": "b0"}]
    for layer in d["layers"]:
        layer["block"] = 0
    d["constraints"] = {"block_forced_kept": 0}
    d["capacity"] = 1000
    d["latency_offset"] = 0
    _check_against_brute_force(load_problem(d))


def test_dense_interaction_graph_is_refused_before_building_tables() -> None:
    """22 groups all coupled pairwise: no narrow decomposition (2**22 > limit), caught up front."""
    n = 22
    layers = [
        {"name": f"l{i}_{j}", "group": i, "prev_group": j, "block": 0,
         "latency": [[0, 0, 0], [0, 1 + (i * j) % 3, 2 + i % 2], [0, 3, 4 + j % 3]],
         "importance": [0, 5 + i, 9 + i + j % 4]}
        for i in range(n) for j in range(n) if i != j
    ]
    d = {"format": "mdp-minlp-instance/1", "name": "dense", "capacity": 1800,
         "groups": [{"name": f"g{i}", "num_options": 3} for i in range(n)],
         "blocks": [{"id": 0, "name": "b0"}], "layers": layers, "constraints": {}}
    graph = build_factor_graph(load_problem(d))
    with pytest.raises(TreeTooWide) as info:
        build_junction_tree(graph, exact_module.MAX_CLIQUE_SIZE)
    assert info.value.size > exact_module.MAX_CLIQUE_SIZE


@pytest.mark.parametrize(("depth", "group_size", "frac"), [(18, 64, 0.4), (50, 64, 0.5)])
def test_resnet_structure_matches_milp(depth: int, group_size: int, frac: float) -> None:
    p = load_problem(resnet_instance(depth, group_size, seed=3, budget_fraction=frac))
    a, b = solve_exact(p), solve_milp(p)
    assert a.status == b.status == "optimal"
    assert a.objective == b.objective
    assert 0 in a.blocks  # the budget is tight enough to remove blocks
