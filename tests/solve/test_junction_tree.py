"""Tree decomposition and scalar max-sum passes against enumeration."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from mdp_trt.solve.factor_graph import build_factor_graph
from mdp_trt.solve.generate import random_instance
from mdp_trt.solve.junction_tree import build_junction_tree
from mdp_trt.solve.problem import load_problem


def _all_assignments(graph):
    return itertools.product(*[range(v.size) for v in graph.variables])


@pytest.mark.parametrize("seed", range(25))
def test_passes_match_enumeration(seed: int) -> None:
    p = load_problem(random_instance(seed, max_groups=5, max_options=4, max_blocks=3))
    graph = build_factor_graph(p)
    tree = build_junction_tree(graph)
    # every factor lies inside one clique, and each variable's cliques form a connected subtree
    for f in graph.factors:
        assert any(set(f.scope) <= set(c.scope) for c in tree.cliques)
    for v in range(len(graph.variables)):
        holders = [c for c, cl in enumerate(tree.cliques) if v in cl.scope]
        tops = [c for c in holders if tree.cliques[c].parent not in holders]
        assert len(tops) == 1
    weights = np.array([[1.0, 0.0], [1.0, 0.7], [0.0, 1.0]])
    msgs = tree.downward(tree.upward(weights))
    values = []
    for a in _all_assignments(graph):
        lat, imp = graph.totals(np.array(a, dtype=np.int64))
        lat -= graph.const_latency
        imp -= graph.const_importance
        values.append(weights[:, 0] * imp - weights[:, 1] * lat)
    best = np.max(np.array(values), axis=0) if values else np.zeros(3)
    np.testing.assert_allclose(msgs.total, best, rtol=1e-9, atol=1e-9)
    decoded = tree.decode(msgs)
    for row in range(3):
        lat, imp = graph.totals(decoded[row])
        value = weights[row, 0] * (imp - graph.const_importance) - weights[row, 1] * (lat - graph.const_latency)
        assert value == pytest.approx(best[row], rel=1e-9, abs=1e-9)
    # outside + inside at any clique equals the global optimum for the best separator value
    for c, clique in enumerate(tree.cliques[:-1]):
        combined = msgs.up[c] + msgs.out[c]
        np.testing.assert_allclose(combined.reshape(3, -1).max(axis=1), best, rtol=1e-9, atol=1e-9)


def test_factor_graph_totals_equal_evaluation() -> None:
    for seed in range(20):
        p = load_problem(random_instance(seed))
        graph = build_factor_graph(p)
        for a in itertools.islice(_all_assignments(graph), 50):
            a = np.array(a, dtype=np.int64)
            options, blocks = graph.to_plan_arrays(a)
            ev = p.evaluate(options, blocks)
            lat, imp = graph.totals(a)
            assert lat == pytest.approx(ev.latency, rel=1e-12, abs=1e-9)
            assert imp == pytest.approx(ev.objective, rel=1e-12, abs=1e-9)
            assert np.array_equal(graph.from_plan_arrays(options, blocks), a)


def test_chunked_passes_equal_unchunked(monkeypatch) -> None:
    from mdp_trt.solve import junction_tree as jt

    p = load_problem(random_instance(11, max_groups=5, max_options=5, max_blocks=3))
    tree = build_junction_tree(build_factor_graph(p))
    weights = np.array([[1.0, lam] for lam in (0.0, 0.3, 1.0, 3.0, 10.0)] + [[0.0, 1.0]])
    whole = tree.downward(tree.upward(weights))
    monkeypatch.setattr(jt, "_MAX_CELLS", 1)  # one weighting per chunk
    parts = tree.downward(tree.upward(weights))
    for a, b in zip(whole.up + whole.out, parts.up + parts.out):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(tree.decode(whole), tree.decode(parts))
