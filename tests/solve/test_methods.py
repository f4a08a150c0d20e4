"""MDP and its baselines as views of one problem: blocks forced kept, output-only latency."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from mdp_trt.errors import InputError
from mdp_trt.solve.generate import chain_instance
from mdp_trt.solve.methods import METHODS, method_problem, solve_method
from mdp_trt.solve.problem import load_problem


def _instance(budget_fraction=0.4, seed=0):
    return chain_instance(7, 6, seed=seed, budget_fraction=budget_fraction, block_size=2)


def _widths(instance):
    return [[8 * k for k in range(g["num_options"])] for g in instance["groups"]]


def _plan(instance, method):
    return solve_method(method_problem(load_problem(instance), method), method,
                        widths=_widths(instance))


def test_mdp_sees_the_problem_unchanged_and_the_input_is_never_modified():
    instance = _instance()
    before = copy.deepcopy(instance)
    problem = load_problem(instance)
    assert method_problem(problem, "mdp").to_json() == load_problem(before).to_json()
    for method in METHODS:
        method_problem(problem, method)
    assert instance == before and problem.to_json() == load_problem(before).to_json()


def test_mdp_channels_removes_no_block_where_mdp_does():
    instance = _instance(0.2, seed=1)
    full, channels = _plan(instance, "mdp"), _plan(instance, "mdp-channels")
    assert 0 in full.blocks, "the budget should be tight enough for MDP to remove a block"
    assert channels.status == "optimal" and set(channels.blocks) == {1}
    assert channels.objective <= full.objective


@pytest.mark.parametrize("method", ["halp", "uniform"])
def test_channel_only_baselines_keep_every_block(method):
    plan = _plan(_instance(0.5, seed=1), method)
    assert plan.status == "feasible" and set(plan.blocks) == {1}


def test_halp_latency_depends_on_the_output_width_only():
    seen = method_problem(load_problem(_instance()), "halp").to_json()
    for layer in seen["layers"]:
        if layer["prev_group"] is not None:
            table = np.array(layer["latency"])
            assert (table == table[:, -1:]).all(), layer["name"]


def test_halp_ignores_input_channel_latency():
    """Making narrow inputs much cheaper changes the MDP plan but not HALP's."""
    instance = _instance(0.5)
    cheaper = copy.deepcopy(instance)
    for layer in cheaper["layers"]:
        if layer["prev_group"] is not None:
            layer["latency"] = [[v // 4 for v in row[:-1]] + [row[-1]] for row in layer["latency"]]
    assert _plan(instance, "halp").options == _plan(cheaper, "halp").options
    assert _plan(instance, "mdp-channels").options != _plan(cheaper, "mdp-channels").options


def test_unknown_method_is_an_input_error():
    with pytest.raises(InputError, match="mdp-channels"):
        method_problem(load_problem(_instance()), "random")
    with pytest.raises(InputError, match="uniform"):
        solve_method(load_problem(_instance()), "random", widths=[])
