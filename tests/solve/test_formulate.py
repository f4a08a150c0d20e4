import pytest

from mdp_trt.analysis import Analysis, Block, ChannelGroup, Layer
from mdp_trt.importance import Importance
from mdp_trt.signature import LayerSignature
from mdp_trt.solve import load_problem, solve
from mdp_trt.solve.formulate import decode_plan, formulate

SIG = LayerSignature(op_type="Conv", out_channels=4, in_channels=4, kernel=(3, 3))


def _analysis():
    """stem -> residual stream (group 0, 4 ch) -> block [c1 (group 1) -> c2 (group 0)] -> head."""
    layers = (
        Layer("stem", "Conv", "w0", out_group=0, in_group=None, block=None, signature=SIG),
        Layer("c1", "Conv", "w1", out_group=1, in_group=0, block=0, signature=SIG),
        Layer("c2", "Conv", "w2", out_group=0, in_group=1, block=0, signature=SIG),
        Layer("fc", "Gemm", "w3", out_group=2, in_group=0, block=None, signature=SIG),
    )
    groups = (
        ChannelGroup(0, "stream", 4, producers=("stem", "c2"), consumers=("c1", "fc")),
        ChannelGroup(1, "inner", 4, producers=("c1",), consumers=("c2",)),
        ChannelGroup(2, "logits", 10, producers=("fc",), consumers=(), prunable=False,
                     reason="reaches graph output 'logits'"),
    )
    blocks = (Block(0, "block0", "add0", "s", ("c1", "c2"), ("c1", "c2", "add0"), removable=True),)
    return Analysis("m.onnx", (1, 3, 8, 8), layers, groups, blocks)


def _importance():
    return Importance("test", {"stem": (4.0, 3.0, 2.0, 1.0), "c1": (1.0, 1.0, 5.0, 1.0),
                               "c2": (0.0, 0.0, 0.0, 0.5), "fc": (1.0,) * 10})


def _tables():
    # options with group size 2: stream/inner [0, 2, 4], logits [0, 10]
    grid = [[0.0, 0.0, 0.0], [0.0, 1.0, 2.0], [0.0, 2.0, 4.0]]
    return {"stem": [[0.0, 0.0], [0.0, 1.5], [0.0, 3.0]], "c1": grid, "c2": grid,
            "fc": [[0.0, 0.0, 0.0], [0.0, 0.25, 0.5]]}


def _instance(budget_ms):
    return formulate(_analysis(), _importance(), _tables(), group_size=2, budget_ms=budget_ms,
                     offset_ms=1.0, name="tiny")


def test_instance_has_the_official_shape():
    inst = _instance(10.0)
    assert inst["format"] == "mdp-minlp-instance/1"
    assert [g["num_options"] for g in inst["groups"]] == [3, 3, 2]
    assert inst["blocks"][0]["name"].startswith("(outside")
    layers = {x["name"]: x for x in inst["layers"]}
    assert layers["stem"]["latency"] == [0, 1500, 3000] and layers["stem"]["prev_group"] is None
    assert layers["c1"]["block"] == 1 and layers["fc"]["block"] == 0
    assert layers["c1"]["latency"][2][1] == 2000
    assert all(x["importance"][0] == 0 for x in inst["layers"])
    assert inst["latency_offset"] == 1000 and inst["capacity"] == 10000
    load_problem(inst)  # the solver package accepts what we write


def test_full_budget_keeps_everything_and_decodes_to_nothing_removed():
    plan = solve(load_problem(_instance(100.0)), "exact")
    assert plan.status == "optimal" and list(plan.options) == [2, 2, 1] and list(plan.blocks) == [1, 1]
    decoded = decode_plan(_analysis(), _importance(), 2, plan.options, plan.blocks)
    assert decoded.keep == {} and decoded.removed_blocks == frozenset()
    assert decoded.kept_channels == {"stream": 4, "inner": 4, "logits": 10}


def test_tight_budget_keeps_top_channels_of_each_group():
    # offset 1 + stem 1.5 + c1 1 + c2 1 + fc .25 = 4.75 ms at the narrowest; dropping the block
    # gives 2.75 ms.
    plan = solve(load_problem(_instance(4.75)), "exact")
    assert plan.status == "optimal"
    # keeping the block at its narrowest (importance 7 + 6 + 0 + 10) beats dropping it for a
    # wide stem (10 + 10): stream ranking by stem+c2 is 0, 1, ...; inner ranking by c1 is 2, 0, ...
    assert list(plan.blocks) == [1, 1] and list(plan.options) == [1, 1, 1]
    decoded = decode_plan(_analysis(), _importance(), 2, plan.options, plan.blocks)
    assert decoded.keep == {0: [0, 1], 1: [0, 2]}


def test_infeasible_budget_reports_the_smallest_latency():
    plan = solve(load_problem(_instance(2.0)), "exact")
    assert plan.status == "infeasible"
    assert plan.min_latency == pytest.approx(2750)


def test_grouped_conv_group_keeps_the_same_count_in_each_conv_group():
    from dataclasses import replace

    analysis = _analysis()
    groups = list(analysis.groups)
    groups[0] = replace(groups[0], divisions=2)
    analysis = replace(analysis, groups=tuple(groups))
    # stream scores (stem + c2): 4, 3, 2, 1.5 -> overall top-2 would be [0, 1], both in block 0
    decoded = decode_plan(analysis, _importance(), 2, [1, 2, 1], [1, 1])
    assert decoded.keep[0] == [0, 2]
