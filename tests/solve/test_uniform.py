"""Uniform channel pruning: one keep fraction everywhere, the largest one that fits."""

from __future__ import annotations

import pytest

from mdp_trt.errors import InputError
from mdp_trt.solve.generate import chain_instance
from mdp_trt.solve.problem import load_problem
from mdp_trt.solve.uniform import solve_uniform, uniform_options

CHANNELS = [64, 32, 64, 16, 64, 64]


def _problem(budget_fraction: float, block_size: int = 0):
    return load_problem(chain_instance(6, 9, seed=4, budget_fraction=budget_fraction,
                                       block_size=block_size))


def _widths(channels=CHANNELS):
    """Units of 8 channels capped at the group's width, as ChannelGroup.options lays them out."""
    return [[min(8 * k, c) for k in range(9)] for c in channels]


def test_options_are_the_nearest_width_to_the_same_fraction():
    problem = _problem(0.5)
    widths = _widths([32] * 6)
    assert uniform_options(problem, widths, 0.5) == [2] * 6
    # 0.3 of 32 channels is 9.6: nearer to one unit (8) than to two (16)
    assert uniform_options(problem, widths, 0.3) == [1] * 6
    # never option 0, however small the fraction
    assert uniform_options(problem, widths, 0.01) == [1] * 6


def test_groups_of_different_widths_keep_the_same_fraction():
    widths = _widths()
    options = uniform_options(_problem(0.5), widths, 0.5)
    assert [w[o] / w[-1] for w, o in zip(widths, options)] == [0.5] * 6


@pytest.mark.parametrize("budget_fraction", [0.3, 0.5, 0.8])
def test_plan_is_the_largest_fraction_that_fits_and_keeps_every_block(budget_fraction):
    problem = _problem(budget_fraction, block_size=2)
    widths = _widths()
    plan = solve_uniform(problem, widths)
    assert plan.status == "feasible" and plan.solver == "uniform"
    assert set(plan.blocks) == {1}
    assert problem.evaluate(plan.options, plan.blocks).feasible
    chosen = plan.extra["keep_fraction"]
    assert list(plan.options) == uniform_options(problem, widths, chosen)
    # every larger fraction some group can realise exactly is over the budget
    realisable = {w[k] / w[-1] for w in widths for k in range(1, 9)}
    for fraction in (f for f in realisable if f > chosen):
        options = uniform_options(problem, widths, fraction)
        assert not problem.evaluate(options, plan.blocks).feasible, fraction


def test_an_unreachable_budget_is_infeasible_with_the_narrowest_latency():
    problem = _problem(0.01)
    widths = _widths()
    plan = solve_uniform(problem, widths)
    narrowest = uniform_options(problem, widths, 0.0)
    assert plan.status == "infeasible"
    assert list(plan.options) == narrowest
    assert plan.min_latency == problem.evaluate(narrowest, [1] * problem.num_blocks).latency


def test_widths_must_describe_every_group():
    with pytest.raises(InputError, match="6 groups"):
        solve_uniform(_problem(0.5), _widths()[:5])
