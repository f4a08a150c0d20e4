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
    assert trace.groups[conv.id].tensors[flat] == Layout(1, 16, width=8)
    fc1_cut = next(s for s in trace.groups[conv.id].slices if s.consumer)
    assert (fc1_cut.node.name, fc1_cut.axis, fc1_cut.stride) == ("fc1", 1, 16)
    assert _group_of(a, "fc1").prunable and a.layer("fc1").in_group == conv.id
    assert (a.layer("fc1").in_groups, a.layer("fc1").in_stride) == ((conv.id,), 16)


def test_unsupported_op_pins_its_group_with_a_reason(tmp_path):
    a = _analyze(G.unsupported_op(), tmp_path)
    conv1 = _group_of(a, "conv1")
    assert not conv1.prunable
    assert conv1.reason == "Softmax (node 'softmax') normalises over the channel axis"
    assert a.layer("conv2").in_group is None  # its input is not a group's tensor
    assert _group_of(a, "conv2").prunable
    assert any("Softmax (node 'softmax')" in note for note in a.notes)


def test_graph_output_in_the_middle_pins_the_group(tmp_path):
    a = _analyze(G.middle_output(), tmp_path)
    conv1 = _group_of(a, "conv1")
    assert not conv1.prunable and conv1.reason == "reaches graph output 'relu1_out'"
    assert _group_of(a, "conv2").prunable


def test_concat_places_groups_side_by_side(tmp_path):
    model, path = G.load(G.concat_graph(), tmp_path)
    a = analyze(model, str(path))
    conv1, conv2 = _group_of(a, "conv1"), _group_of(a, "conv2")
    assert conv1.prunable and conv2.prunable and conv1.consumers == conv2.consumers == ("conv3",)
    conv3 = a.layer("conv3")
    # Several groups feed conv3: no single in_group, its width is the sum of both.
    assert conv3.in_group is None and conv3.in_groups == (conv1.id, conv2.id) and conv3.in_fixed == 0
    trace = trace_groups(model.graph)
    cuts = {(s.node.name, s.layout.offset) for g in (conv1, conv2) for s in trace.groups[g.id].slices if s.consumer}
    assert cuts == {("conv3", 0), ("conv3", 4)}


def test_dense_concatenations_cut_every_segment(tmp_path):
    model, path = G.load(G.dense_concat(), tmp_path)
    a = analyze(model, str(path))
    stem, c1, c2 = (_group_of(a, n) for n in ("stem", "conv1", "conv2"))
    assert stem.prunable and c1.prunable and c2.prunable
    assert a.layer("conv2").in_groups == (stem.id, c1.id)
    assert a.layer("fc").in_groups == (stem.id, c1.id, c2.id)
    trace = trace_groups(model.graph)
    bn3 = {s.layout.offset for g in (stem, c1, c2) for s in trace.groups[g.id].slices if s.node.name == "bn3" and s.index == 1}
    assert bn3 == {0, 4, 7}


def test_concatenated_graph_input_is_fixed(tmp_path):
    a = _analyze(G.concat_with_input(), tmp_path)
    conv1 = _group_of(a, "conv1")
    assert conv1.prunable
    conv2 = a.layer("conv2")
    assert conv2.in_group is None and conv2.in_groups == (conv1.id,) and conv2.in_fixed == 3


def test_split_and_slice_take_parts_of_a_group(tmp_path):
    model, path = G.load(G.split_slice(), tmp_path)
    a = analyze(model, str(path))
    conv1 = _group_of(a, "conv1")
    assert conv1.prunable and set(conv1.consumers) == {"conv_a", "conv_b", "conv_c"}
    # A part of a group does not follow its options: counted as fixed input channels.
    assert (a.layer("conv_b").in_group, a.layer("conv_b").in_groups, a.layer("conv_b").in_fixed) == (None, (), 5)
    trace = trace_groups(model.graph)
    fixes = {(f.node.name, f.index, f.entry, f.low, f.high) for f in trace.groups[conv1.id].counts}
    assert fixes == {("split", 1, 0, 0, 3), ("split", 1, 1, 3, 8), ("slice", 1, 0, 0, 2), ("slice", 2, 0, 0, 6)}


def test_channel_last_section(tmp_path):
    a = _analyze(G.channel_last_mlp(), tmp_path)
    hidden = _group_of(a, "fc1")
    assert hidden.prunable and hidden.consumers == ("fc2",)
    stream = _group_of(a, "conv")
    assert not stream.prunable and "LayerNormalization (node 'ln') normalises over the channel axis" in stream.reason


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


@pytest.mark.parametrize("build", [G.projection_skip, G.dense_concat, G.grouped_se_block])
def test_analysis_json_round_trip(tmp_path, build):
    a = _analyze(build(), tmp_path)
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
    # No shape is inferred past the foreign op: conv2 has no latency signature, so no layer.
    assert "Conv (node 'conv2'): its input 'mystery_out' has no static shape" in a.skipped


def test_grouped_conv_is_a_layer_with_blocked_groups(tmp_path):
    a = _analyze(G.grouped_se_block(), tmp_path)
    conv1, conv2 = _group_of(a, "conv1"), _group_of(a, "conv2")
    assert conv1.prunable and conv2.prunable and (conv1.divisions, conv2.divisions) == (3, 3)
    layer = a.layer("conv2")
    assert (layer.in_group, layer.out_group) == (conv1.id, conv2.id)
    assert layer.signature.conv_group == 3 and not layer.signature.depthwise
    # The SE gate multiplies conv2's channels: se_fc2 joins conv2's group.
    assert "se_fc2" in conv2.producers and set(conv2.consumers) == {"se_fc1", "conv3"}
    assert _group_of(a, "stem").divisions == 1 and a.blocks[0].removable


def test_gathers_off_the_channel_axis_carry_the_group(tmp_path):
    model, path = G.load(G.gathered_pool_head(), tmp_path)
    a = analyze(model, str(path))
    conv = _group_of(a, "conv")
    assert conv.prunable and conv.consumers == ("fc1",)
    cut = next(s for s in trace_groups(model.graph).groups[conv.id].slices if s.consumer)
    assert (cut.axis, cut.stride) == (1, 6)


def test_channels_behind_a_rejecting_op_name_that_op(tmp_path):
    # conv -> channel-last Softmax over the channels -> back; the residual stream after it is
    # pinned because of the Softmax, not because of the (supported) Transpose before the Add.
    b = G.GraphBuilder((1, 3, 8, 8))
    x = b.node("Transpose", [b.conv("image", 3, 8, "conv1")], "t1", perm=[0, 2, 3, 1])
    x = b.node("Softmax", [x], "softmax", axis=-1)
    y = b.node("Transpose", [x], "t2", perm=[0, 3, 1, 2])
    x = b.node("Relu", [b.node("Add", [y, b.conv(y, 8, 8, "conv2")], "add")], "relu")
    G.head(b, x, 8)
    a = _analyze(b.model(), tmp_path)
    conv1, conv2 = _group_of(a, "conv1"), _group_of(a, "conv2")
    assert conv1.reason == "Softmax (node 'softmax') normalises over the channel axis"
    assert conv2.reason == ("channels also come from Transpose (node 't2'), after "
                            "Softmax (node 'softmax') normalises over the channel axis")


def _channel_last_norm_stream(axis: int = -1):
    # ConvNeXt's stem: conv -> channel-last LayerNorm -> back, then a residual block.
    import numpy as np

    b = G.GraphBuilder((1, 3, 8, 8))
    x = b.node("Transpose", [b.conv("image", 3, 8, "conv1")], "t1", perm=[0, 2, 3, 1])
    x = b.node("LayerNormalization", [x, b.const("ln.scale", np.ones(8, np.float32))], "ln", axis=axis)
    y = b.node("Transpose", [x], "t2", perm=[0, 3, 1, 2])
    x = b.node("Relu", [b.node("Add", [y, b.conv(y, 8, 8, "conv2")], "add")], "relu")
    G.head(b, x, 8)
    return b.model()


def test_a_layernorm_over_the_channels_is_followed_and_cut_only_when_asked(tmp_path):
    model, path = G.load(_channel_last_norm_stream(), tmp_path)
    stream = _group_of(analyze(model, str(path)), "conv1")
    assert stream.producers == ("conv1", "conv2") and stream.norms == ("ln",)
    assert not stream.prunable and stream.reason == (
        "LayerNormalization (node 'ln') normalises over the channel axis; the prune-embedding "
        "option cuts these channels too")
    cut = _group_of(analyze(model, str(path), prune_normalised=True), "conv1")
    assert cut.prunable and cut.norms == ("ln",) and cut.reason is None
    # its scale is cut with the channels
    slices = trace_groups(model.graph).groups[cut.id].slices
    assert any(s.node.name == "ln" and s.index == 1 and s.axis == 0 for s in slices)


def test_a_layernorm_over_the_channels_and_other_axes_keeps_them(tmp_path):
    model, path = G.load(_channel_last_norm_stream(axis=1), tmp_path)
    stream = _group_of(analyze(model, str(path), prune_normalised=True), "conv1")
    assert not stream.prunable and stream.reason == (
        "LayerNormalization (node 'ln') normalises over the channel axis and others")


def test_layout_with_a_step_places_every_gth_channel():
    # Channels 2..4 of a group, every 4th position from 1 (after a shuffle of 4 blocks).
    layout = Layout(1, offset=1, first=2, width=3, step=4)
    assert layout.elements([0, 2, 3, 4, 5]).tolist() == [1, 5, 9]
    assert not layout.whole(3) and Layout(1, width=3).whole(3)
    assert Layout(1, stride=2, offset=1, width=2, step=2).elements([0, 1]).tolist() == [2, 3, 6, 7]


def test_a_detection_heads_outputs_stay_whole_and_its_inputs_are_prunable(tmp_path):
    a = _analyze(G.detect_head(), tmp_path)
    box, cls = _group_of(a, "p3.box"), _group_of(a, "p3.cls")
    # Joined over positions: each scale's head conv carries the same channels.
    assert box.producers == ("p3.box", "p4.box") and cls.producers == ("p3.cls", "p4.cls")
    assert not box.prunable and "Reshape (node 'dfl_view') splits the channel axis into 2 x 4" in box.reason
    assert not cls.prunable and "reaches graph output 'detections_out'" in cls.reason
    for hidden in ("stem", "down", "p3.hidden", "p4.hidden"):
        assert _group_of(a, hidden).prunable, hidden
    assert not any("unsupported" in note for note in a.notes)


def test_a_softmax_over_positions_and_spatial_reshapes_keep_channels_prunable(tmp_path):
    a = _analyze(G.spatial_softmax(), tmp_path)
    conv1 = _group_of(a, "conv1")
    assert conv1.prunable and conv1.consumers == ("conv2",)
    assert a.notes == ()


def test_a_ghost_module_makes_the_stream_one_periodic_group(tmp_path):
    a = _analyze(G.ghost_module(), tmp_path)
    stream = _group_of(a, "stem")
    # The stem, the primary conv and the gate's expand conv all produce the stream's 4 channels
    # (the stem and the expand conv twice each); the depthwise copy reads and writes them once.
    assert stream.prunable and stream.periodic and stream.channels == 4
    assert set(stream.producers) == {"stem", "primary", "expand"}
    assert {l.name: l.signature.out_channels for l in a.layers if l.out_group == stream.id} == {
        "stem": 8, "primary": 4, "expand": 8, "cheap": 4}
    assert a.layer("conv2").in_group is None and a.layer("conv2").in_groups == (stream.id, stream.id)
