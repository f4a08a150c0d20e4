"""Channel groups found by the analysis on the golden graphs (one topology per test)."""

import json

import pytest

from mdp_trt.analysis import Analysis
from mdp_trt.passes import analyze
from mdp_trt.passes.groups import Layout, trace_groups
from tests import onnx_graphs as G


def _analyze(proto, tmp_path) -> Analysis:
    model, path = G.load(proto, tmp_path)
    return analyze(model, str(path))


def _group_of(analysis: Analysis, producer: str):
    return next(g for g in analysis.groups if producer in g.producers)


def test_conv_bn_relu_chain(tmp_path):
    a = _analyze(G.conv_bn_relu_chain(), tmp_path)
    assert [(l.name, l.out_group, l.in_group) for l in a.layers] == [
        ("conv1", 0, None), ("conv2", 1, 0), ("fc", 2, 1),
    ]
    g0, g1, g2 = a.groups
    assert (g0.channels, g0.prunable, g0.consumers) == (8, True, ("conv2",))
    assert (g1.channels, g1.prunable, g1.consumers) == (6, True, ("fc",))
    assert "bn2_out" in g1.tensors and "flatten_out" in g1.tensors
    assert not g2.prunable and g2.reason == "reaches graph output 'logits'"
    assert a.blocks == () and a.notes == ()


def test_classifier_reaching_the_output_is_unprunable(tmp_path):
    a = _analyze(G.conv_bn_relu_chain(), tmp_path)
    fc = _group_of(a, "fc")
    assert not fc.prunable and fc.reason == "reaches graph output 'logits'"


def test_residual_add_merges_groups(tmp_path):
    a = _analyze(G.residual_identity(), tmp_path)
    stem = _group_of(a, "stem")
    assert stem.producers == ("stem", "conv_b") and stem.prunable
    assert set(stem.consumers) == {"conv_a", "fc"}
    assert a.layer("conv_b").out_group == a.layer("stem").out_group == stem.id
    assert a.layer("conv_b").in_group == a.layer("conv_a").out_group


def test_projection_skip_merges_with_the_downsample(tmp_path):
    a = _analyze(G.projection_skip(), tmp_path)
    merged = _group_of(a, "conv_b")
    assert merged.producers == ("conv_b", "downsample") and merged.channels == 16 and merged.prunable
    assert set(_group_of(a, "stem").consumers) == {"conv_a", "downsample"}


@pytest.mark.parametrize("reshape", [False, True])
def test_flatten_before_gemm_couples_channel_major_columns(tmp_path, reshape):
    proto = G.flatten_gemm_head(reshape=reshape)
    model, path = G.load(proto, tmp_path)
    a = analyze(model, str(path))
    conv = _group_of(a, "conv")
    assert conv.prunable and conv.consumers == ("fc1",) and conv.channels == 8
    trace = trace_groups(model.graph)
    flat = next(v for v in trace.groups[conv.id].tensors if v.name in ("flatten_out", "reshape_out"))
    assert trace.groups[conv.id].tensors[flat] == Layout(1, 16)
    fc1_cut = next(s for s in trace.groups[conv.id].slices if s.consumer)
    assert (fc1_cut.node.name, fc1_cut.axis, fc1_cut.stride) == ("fc1", 1, 16)
    assert _group_of(a, "fc1").prunable and a.layer("fc1").in_group == conv.id


def test_unsupported_op_pins_its_group_with_a_reason(tmp_path):
    a = _analyze(G.unsupported_op(), tmp_path)
    conv1 = _group_of(a, "conv1")
    assert not conv1.prunable
    assert conv1.reason == "consumed by unsupported op Softmax (node 'softmax')"
    assert a.layer("conv2").in_group is None  # its input is not a group's tensor
    assert _group_of(a, "conv2").prunable
    assert any("Softmax (node 'softmax')" in note for note in a.notes)


def test_graph_output_in_the_middle_pins_the_group(tmp_path):
    a = _analyze(G.middle_output(), tmp_path)
    conv1 = _group_of(a, "conv1")
    assert not conv1.prunable and conv1.reason == "reaches graph output 'relu1_out'"
    assert _group_of(a, "conv2").prunable


def test_concat_is_rejected_not_guessed(tmp_path):
    a = _analyze(G.concat_graph(), tmp_path)
    for name in ("conv1", "conv2"):
        group = _group_of(a, name)
        assert not group.prunable and "Concat (node 'concat')" in group.reason
    assert _group_of(a, "conv3").prunable


def test_per_channel_constants_and_depthwise_conv_follow_the_group(tmp_path):
    model, path = G.load(G.channel_constants_depthwise(), tmp_path)
    a = analyze(model, str(path))
    conv1 = _group_of(a, "conv1")
    assert conv1.prunable and conv1.consumers == ("conv2",)
    dw = a.layer("dw")
    assert dw.in_group == dw.out_group == conv1.id
    assert dw.signature.conv_group == 8 and dw.signature.depthwise
    cuts = {(s.node.name, s.index) for s in trace_groups(model.graph).groups[conv1.id].slices}
    assert {("mul", 1), ("add_const", 1), ("dw", 1), ("dw", 2), ("conv2", 1)} <= cuts


def test_analysis_json_round_trip(tmp_path):
    a = _analyze(G.projection_skip(), tmp_path)
    again = Analysis.from_json(json.loads(json.dumps(a.to_json())))
    assert again == a


def test_op_of_a_foreign_domain_never_crashes(tmp_path):
    import onnx
    from onnx import helper

    proto = G.conv_bn_relu_chain()
    relu1 = next(n for n in proto.graph.node if n.name == "relu1")
    custom = helper.make_node("Mystery", [relu1.output[0]], ["mystery_out"], name="mystery", domain="example.ops")
    conv2 = next(n for n in proto.graph.node if n.name == "conv2")
    conv2.input[0] = "mystery_out"
    proto.graph.node.insert(list(proto.graph.node).index(conv2), custom)
    proto.opset_import.append(helper.make_opsetid("example.ops", 1))
    path = tmp_path / "custom.onnx"
    onnx.save_model(proto, path)
    from mdp_trt.graph import load_model

    a = analyze(load_model(path), str(path))
    conv1 = _group_of(a, "conv1")
    assert not conv1.prunable and conv1.reason == "consumed by unsupported op Mystery (node 'mystery')"
    assert a.layer("conv2").in_group is None
