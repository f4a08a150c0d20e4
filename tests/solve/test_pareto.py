"""The Pareto frontier filter and the frontier search on its own."""

from __future__ import annotations

import numpy as np
import pytest

from mdp_trt.solve.factor_graph import build_factor_graph
from mdp_trt.solve.generate import random_instance
from mdp_trt.solve.junction_tree import build_junction_tree
from mdp_trt.solve.pareto import SearchBounds, SearchTooLarge, _pareto_order, pareto_search
from mdp_trt.solve.problem import load_problem
from tests.solve.brute_force import brute_force


def test_pareto_order_keeps_exactly_the_nondominated_points() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(1, 60))
        seg = rng.integers(0, 4, n)
        lat = rng.integers(0, 10, n).astype(float)
        imp = rng.integers(0, 10, n).astype(float)
        kept = set(_pareto_order(seg, lat, imp).tolist())
        expected_pairs = set()
        for i in range(n):
            dominated = any(
                seg[j] == seg[i] and lat[j] <= lat[i] and imp[j] >= imp[i] and (lat[j], imp[j]) != (lat[i], imp[i])
                for j in range(n)
            )
            if not dominated:
                expected_pairs.add((seg[i], lat[i], imp[i]))
        assert {(seg[i], lat[i], imp[i]) for i in kept} == expected_pairs
        assert len(kept) == len(expected_pairs)  # duplicates collapse to one point


def test_pareto_order_small_and_vectorised_paths_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    from mdp_trt.solve import pareto as pareto_module

    rng = np.random.default_rng(1)
    cases = []
    for _ in range(300):
        n = int(rng.integers(1, 40))
        seg = rng.integers(0, 3, n)
        lat = rng.integers(0, 4, n).astype(float)
        imp = rng.integers(-3, 4, n).astype(float) * rng.choice([1.0, 0.1])
        tie = rng.integers(0, 5, n)
        cases.append((seg, lat, imp, tie))
    small = [(_pareto_order(s, l, i), _pareto_order(s, l, i, t)) for s, l, i, t in cases]
    monkeypatch.setattr(pareto_module, "_SMALL", 0)
    for (s, l, i, t), (a, b) in zip(cases, small):
        assert np.array_equal(a, _pareto_order(s, l, i))
        assert np.array_equal(b, _pareto_order(s, l, i, t))


def test_pareto_order_with_tie_equals_filtering_per_assignment_first() -> None:
    # The search's one-step elimination after the last child: per-separator filtering with ties
    # broken by the assignment keeps what per-assignment then per-separator filtering keeps.
    rng = np.random.default_rng(2)
    for _ in range(300):
        n = int(rng.integers(1, 80))
        a = rng.integers(0, 6, n)
        seg = a // 2
        lat = rng.integers(0, 4, n).astype(float)
        imp = rng.integers(0, 4, n).astype(float)
        first = _pareto_order(a, lat, imp)
        two = first[_pareto_order(seg[first], lat[first], imp[first])]
        one = _pareto_order(seg, lat, imp, a)
        assert np.array_equal(one, two)


@pytest.mark.parametrize("seed", range(30))
def test_search_with_no_incumbent_finds_the_optimum(seed: int) -> None:
    p = load_problem(random_instance(seed, budget_fraction=0.6))
    best, _ = brute_force(p)
    graph = build_factor_graph(p)
    tree = build_junction_tree(graph)
    lag = tree.downward(tree.upward(np.array([[1.0, 0.0], [1.0, 0.5], [1.0, 2.0]])))
    minlat = tree.downward(tree.upward(np.array([[0.0, 1.0]])))
    budget = p.effective_capacity - graph.const_latency + p.latency_tolerance
    result = pareto_search(tree, SearchBounds(tree, lag, minlat), budget, target=-np.inf)
    if best is None:
        assert result.assignment is None
        return
    assert result.assignment is not None
    options, blocks = graph.to_plan_arrays(result.assignment)
    ev = p.evaluate(options, blocks)
    assert ev.feasible and ev.objective == pytest.approx(best, rel=1e-9, abs=1e-9)
    # a target above the optimum leaves nothing
    above = pareto_search(tree, SearchBounds(tree, lag, minlat), budget, target=best - graph.const_importance + 1e-6 * (1 + abs(best)))
    assert above.assignment is None


def test_max_points_aborts() -> None:
    p = load_problem(random_instance(7, max_groups=5, max_options=5, budget_fraction=0.9))
    graph = build_factor_graph(p)
    tree = build_junction_tree(graph)
    lag = tree.downward(tree.upward(np.array([[1.0, 0.0]])))
    minlat = tree.downward(tree.upward(np.array([[0.0, 1.0]])))
    with pytest.raises(SearchTooLarge):
        pareto_search(tree, SearchBounds(tree, lag, minlat), 1e12, -np.inf, max_points=0)
