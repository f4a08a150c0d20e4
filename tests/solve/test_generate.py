"""The seeded instance generators."""

from __future__ import annotations

import numpy as np

from mdp_trt.solve.generate import chain_instance, random_instance, resnet_instance
from mdp_trt.solve.problem import load_problem


def test_chain_is_seeded_and_valid() -> None:
    assert chain_instance(20, 8, seed=3) == chain_instance(20, 8, seed=3)
    assert chain_instance(20, 8, seed=3) != chain_instance(20, 8, seed=4)
    p = load_problem(chain_instance(20, 8, seed=3, block_size=4))
    assert p.num_groups == 20 and all(g.num_options == 8 for g in p.groups)
    assert [layer.prev_group for layer in p.layers] == [None] + list(range(19))
    assert p.num_blocks == 1 + 19 // 4 + 1
    dense = p.evaluate([7] * 20, [1] * p.num_blocks).latency
    assert abs(p.effective_capacity - 0.5 * dense) <= 1
    for layer in p.layers:
        assert np.all(np.diff(layer.importance) >= 0)


def test_random_instances_are_valid_and_varied() -> None:
    kinds = set()
    for seed in range(50):
        p = load_problem(random_instance(seed))
        kinds.add((p.integral, p.stem is not None, bool(p.forced_blocks)))
    assert len(kinds) >= 6


def test_resnet_structure() -> None:
    p = load_problem(resnet_instance(50, 32, seed=0))
    assert p.num_blocks == 1 + 16
    residual = [g for g, grp in enumerate(p.groups) if grp.name.startswith("residual:")]
    assert len(residual) == 4
    # the stage-4 residual group is the output of its 3 blocks' last convs and the projection
    last = residual[-1]
    members = [layer for layer in p.layers if layer.group == last]
    assert len(members) == 4 and sum(layer.block == 0 for layer in members) == 1
    assert p.groups[last].num_options == 2048 // 32 + 1
    p18 = load_problem(resnet_instance(18, 64, seed=0))
    assert sum(g.name.startswith("residual:") for g in p18.groups) == 3  # stage 1 shares the stem's group
