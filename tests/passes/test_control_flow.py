"""Control flow (If/Loop subgraphs): tensors read inside a subgraph keep their channels, layers
inside one are never pruned, and surgery around them matches the masked original in ORT."""

import pytest

from mdp_trt.analysis import nothing_to_prune
from mdp_trt.cli import main
from mdp_trt.passes import analyze, apply_plan, mask_model, verify
from mdp_trt.passes.subgraphs import outer_reads, subgraph_owners
from tests import onnx_graphs as G


def _groups(analysis):
    return {g.name: g for g in analysis.groups}


def _node(model, name):
    return next(n for n in model.graph if n.name == name)


def test_subgraphs_map_to_their_top_level_node_and_list_the_outer_tensors_they_read(tmp_path):
    model, _ = G.load(G.if_in_loop_reads_outer(), tmp_path)
    loop = _node(model, "loop")
    owners = subgraph_owners(model.graph)
    # The Loop body and the branches of the If nested in it all belong to the Loop.
    assert len(owners) == 3 and {owner for owner, _ in owners.values()} == {loop}
    assert {attribute for _, attribute in owners.values()} == {"body"}
    assert [v.name for v in outer_reads(loop)] == ["cond_out", "relu1_out"]
    assert outer_reads(_node(model, "conv1")) == []


def test_a_tensor_read_inside_an_if_branch_keeps_its_group_whole(tmp_path):
    model, path = G.load(G.if_reads_outer(), tmp_path)
    analysis = analyze(model, str(path))
    groups = _groups(analysis)
    assert not groups["conv1"].prunable
    assert "read inside the 'else_branch' of If (node 'branch')" in groups["conv1"].reason
    assert "read inside the 'then_branch' of If (node 'branch')" in groups["conv1"].reason
    assert groups["conv2"].prunable and groups["conv3"].prunable
    assert any("If (node 'branch')" in note for note in analysis.notes)


@pytest.mark.parametrize("seed", [0, 1])
def test_pruning_around_an_if_leaves_its_branches_alone(tmp_path, seed):
    model, path = G.load(G.if_reads_outer(), tmp_path)
    analysis = analyze(model, str(path))
    keep, _ = G.random_plan(analysis, seed)
    keep[_groups(analysis)["conv2"].id] = [0, 2, 5]  # the scale the else branch reads is cut
    pruned = apply_plan(model, analysis, keep)
    # Both branches run (the condition is the sign of the input's sum).
    assert verify(mask_model(model, analysis, keep), pruned, inputs=6, seed=seed).passed
    branch = _node(pruned, "branch")
    gain = next(n for n in branch.attributes["else_branch"].value if n.name == "else_gain")
    assert gain.inputs[0].const_value.shape == (1, 6, 1, 1)
    assert _node(pruned, "scale_mul").inputs[1].const_value.shape == (1, 3, 1, 1)


def test_layers_in_a_loop_body_or_after_a_loop_are_not_layers(tmp_path):
    """Was "Conv layer signature has no input_hw" when profiling: conv2's input (the Loop's
    output) has no static shape, so it has no latency signature."""
    model, path = G.load(G.loop_body_conv(), tmp_path)
    analysis = analyze(model, str(path))
    assert [layer.name for layer in analysis.layers] == ["conv1"]
    assert analysis.skipped == (
        "Conv (node 'body_conv'): it is inside the 'body' of Loop (node 'loop'); control flow "
        "is not pruned",
        "Conv (node 'conv2'): its input 'loop_out' has no static shape",
        "Gemm (node 'fc'): its input 'flatten_out' has no static shape",
    )
    [group] = analysis.groups
    assert group.reason == "consumed by unsupported op Loop (node 'loop')"
    why = nothing_to_prune(analysis)
    assert "conv1: consumed by unsupported op Loop (node 'loop')" in why
    assert "its input 'loop_out' has no static shape" in why


def test_a_tensor_read_two_subgraphs_down_names_the_top_level_node(tmp_path):
    model, path = G.load(G.if_in_loop_reads_outer(), tmp_path)
    analysis = analyze(model, str(path))
    groups = _groups(analysis)
    assert groups["conv1"].reason == "read inside the 'body' of Loop (node 'loop')"
    assert groups["conv0"].prunable
    keep = {groups["conv0"].id: [0, 3, 5]}
    pruned = apply_plan(model, analysis, keep)
    assert verify(mask_model(model, analysis, keep), pruned, inputs=4).passed


def test_a_residual_branch_through_an_if_is_one_block(tmp_path):
    model, path = G.load(G.residual_with_if(), tmp_path)
    analysis = analyze(model, str(path))
    [block] = analysis.blocks
    # conv_a feeds the If only by name, inside its branches: it is still part of the block.
    assert block.layers == ("conv_a", "conv_b") and block.removable
    assert "branch" in block.nodes
    groups = _groups(analysis)
    assert "read inside the 'then_branch' of If (node 'branch')" in groups["conv_a"].reason
    pruned = apply_plan(model, analysis, {}, {block.id})
    assert not any(n.name in ("conv_a", "branch") for n in pruned.graph)
    assert verify(mask_model(model, analysis, {}, {block.id}), pruned, inputs=2).passed


def _run(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    captured = capsys.readouterr()
    return exc.value.code, captured.out + captured.err


def test_prune_cli_stops_with_the_reason_when_control_flow_pins_every_group(tmp_path, capsys):
    _, path = G.load(G.loop_body_conv(), tmp_path)
    out = tmp_path / "out"
    code, text = _run(["prune", str(path), "--budget", "0.5", "-o", str(out),
                       "--cache", str(tmp_path / "c.sqlite")], capsys)
    assert code == 2 and "Traceback" not in text
    assert "nothing to prune" in text and "Loop (node 'loop')" in text
    assert not out.exists()
