"""Surgery on the golden graphs: every pruned model is checked in ORT against the masked
original (removed channels zeroed at their consumers, removed blocks bypassed)."""

import numpy as np
import pytest
from onnx import numpy_helper

from mdp_trt.errors import InputError
from mdp_trt.graph import initializer_array
from mdp_trt.graph.constants import constant_array
from mdp_trt.passes import analyze, apply_plan, mask_model, verify
from mdp_trt.passes.plan_edits import physical_keep
from tests import onnx_graphs as G

GOLDEN = {
    "conv_bn_relu": G.conv_bn_relu_chain,
    "residual": G.residual_identity,
    "projection": G.projection_skip,
    "flatten_gemm": G.flatten_gemm_head,
    "reshape_gemm": lambda: G.flatten_gemm_head(reshape=True),
    "unsupported": G.unsupported_op,
    "middle_output": G.middle_output,
    "constants_depthwise": G.channel_constants_depthwise,
    "concat": G.concat_graph,
    "dense_concat": G.dense_concat,
    "concat_with_input": G.concat_with_input,
    "split_slice": G.split_slice,
    "channel_last_mlp": G.channel_last_mlp,
    "grouped_se": G.grouped_se_block,
    "gathered_pool": G.gathered_pool_head,
    "matmul_gemm_transposed": G.matmul_head,
    "detect_head": G.detect_head,
    "spatial_softmax": G.spatial_softmax,
    "ghost_module": G.ghost_module,
}


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_pruned_matches_masked_original(tmp_path, name, seed):
    model, path = G.load(GOLDEN[name](), tmp_path)
    analysis = analyze(model, str(path))
    keep, removed = G.random_plan(analysis, seed)
    before = G.proto_bytes(model)
    pruned = apply_plan(model, analysis, keep, removed)
    reference = mask_model(model, analysis, keep, removed)
    assert G.proto_bytes(model) == before, "the input model was modified"
    result = verify(reference, pruned, inputs=2, seed=seed)
    assert result.passed and result.max_rel_diff <= 1e-4
    # Each producer's weight now has exactly the kept channels (grouped convs: padded to equal
    # conv groups).
    for layer in analysis.layers:
        node = next((n for n in pruned.graph if n.name == layer.name), None)
        if node is None or layer.out_group not in keep:
            continue
        weight = constant_array(node.inputs[1])
        out_axis = 1 if layer.op_type == "MatMul" else 0
        group = analysis.groups[layer.out_group]
        physical = physical_keep(keep[layer.out_group], group.channels, group.divisions)
        copies = layer.signature.out_channels // group.channels if group.periodic else 1
        assert weight.shape[out_axis] == copies * len(physical), layer.name
        assert set(keep[layer.out_group]) <= set(physical.tolist())


def test_exact_slices_of_a_chain(tmp_path):
    model, path = G.load(G.conv_bn_relu_chain(), tmp_path)
    analysis = analyze(model, str(path))
    pruned = apply_plan(model, analysis, {0: [1, 4, 6], 1: [0, 5]})
    w1 = initializer_array(model, "conv1.weight")
    np.testing.assert_array_equal(initializer_array(pruned, "conv1.weight"), w1[[1, 4, 6]])
    np.testing.assert_array_equal(initializer_array(pruned, "bn1.running_var"), initializer_array(model, "bn1.running_var")[[1, 4, 6]])
    w2 = initializer_array(model, "conv2.weight")
    np.testing.assert_array_equal(initializer_array(pruned, "conv2.weight"), w2[[0, 5]][:, [1, 4, 6]])
    np.testing.assert_array_equal(initializer_array(pruned, "fc.weight"), initializer_array(model, "fc.weight")[:, [0, 5]])
    np.testing.assert_array_equal(initializer_array(pruned, "conv2.bias"), initializer_array(model, "conv2.bias")[[0, 5]])


def test_gemm_after_flatten_keeps_whole_channel_column_blocks(tmp_path):
    model, path = G.load(G.flatten_gemm_head(reshape=True), tmp_path)
    analysis = analyze(model, str(path))
    pruned = apply_plan(model, analysis, {0: [2, 7]})
    fc1 = initializer_array(model, "fc1.weight")
    expected = np.concatenate([fc1[:, 32:48], fc1[:, 112:128]], axis=1)
    np.testing.assert_array_equal(initializer_array(pruned, "fc1.weight"), expected)
    # The Reshape target spelled out 8 * 16 columns; it now says 2 * 16.
    np.testing.assert_array_equal(initializer_array(pruned, "flat_shape"), [1, 32])


def test_removed_block_disappears(tmp_path):
    model, path = G.load(G.residual_identity(), tmp_path)
    analysis = analyze(model, str(path))
    pruned = apply_plan(model, analysis, {}, {0})
    names = {n.name for n in pruned.graph}
    assert not names & {"conv_a", "relu_a", "conv_b", "add"}
    assert "conv_a.weight" not in pruned.graph.initializers
    np.testing.assert_allclose(
        G.run(pruned, np.ones((1, 3, 8, 8), np.float32))[0],
        G.run(mask_model(model, analysis, {}, {0}), np.ones((1, 3, 8, 8), np.float32))[0],
        rtol=1e-6,
    )


def test_depthwise_group_attribute_follows_the_width(tmp_path):
    model, path = G.load(G.channel_constants_depthwise(), tmp_path)
    analysis = analyze(model, str(path))
    pruned = apply_plan(model, analysis, {0: [0, 3, 5]})
    dw = next(n for n in pruned.graph if n.name == "dw")
    assert dw.attributes["group"].value == 3
    assert constant_array(dw.inputs[1]).shape == (3, 1, 3, 3)
    assert constant_array(next(n for n in pruned.graph if n.name == "mul").inputs[1]).shape == (1, 3, 1, 1)


def test_shared_initializer_is_sliced_per_use(tmp_path):
    # Two BNs reading the same parameter tensors (the TorchScript exporter deduplicates
    # identical initializers): pruning one group must not change the other BN's parameters.
    rng = np.random.default_rng(5)
    proto = G.conv_bn_relu_chain()
    for node in proto.graph.node:
        if node.name == "bn2":
            node.input[1:] = ["bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var"]
    widened = {  # conv2 gets 8 outputs so that both BNs have 8 channels
        "conv2.weight": rng.standard_normal((8, 8, 3, 3)),
        "conv2.bias": np.zeros(8),
        "fc.weight": rng.standard_normal((5, 8)),
    }
    for tensor in list(proto.graph.initializer):
        if tensor.name in widened:
            proto.graph.initializer.remove(tensor)
            proto.graph.initializer.append(numpy_helper.from_array(widened[tensor.name].astype(np.float32), tensor.name))
    model, path = G.load(proto, tmp_path)
    analysis = analyze(model, str(path))
    keep = {0: [0, 2], 1: [1, 3, 4, 7]}
    pruned = apply_plan(model, analysis, keep)
    verify(mask_model(model, analysis, keep, set()), pruned)
    gammas = {n.name: constant_array(n.inputs[1]) for n in pruned.graph if n.op_type == "BatchNormalization"}
    gamma = initializer_array(model, "bn1.weight")
    np.testing.assert_array_equal(gammas["bn1"], gamma[[0, 2]])
    np.testing.assert_array_equal(gammas["bn2"], gamma[[1, 3, 4, 7]])


@pytest.mark.parametrize(
    "keep, removed, message",
    [
        ({2: [0]}, set(), "group 2 .* not prunable"),
        ({0: []}, set(), "at least one channel"),
        ({0: [8]}, set(), "at least one channel"),
        ({9: [0]}, set(), "does not have"),
        ({}, {3}, "block 3, which does not exist"),
    ],
)
def test_invalid_plans_are_refused(tmp_path, keep, removed, message):
    model, path = G.load(G.conv_bn_relu_chain(), tmp_path)
    analysis = analyze(model, str(path))
    with pytest.raises(InputError, match=message):
        apply_plan(model, analysis, keep, removed)
    with pytest.raises(InputError, match=message):
        mask_model(model, analysis, keep, removed)


def test_projection_block_cannot_be_removed(tmp_path):
    model, path = G.load(G.projection_skip(), tmp_path)
    analysis = analyze(model, str(path))
    with pytest.raises(InputError, match="not removable \\(projection skip"):
        apply_plan(model, analysis, {}, {0})


def test_analysis_of_another_model_is_refused(tmp_path):
    model, path = G.load(G.conv_bn_relu_chain(), tmp_path)
    other, other_path = G.load(G.residual_identity(), tmp_path, "other.onnx")
    with pytest.raises(InputError, match="does not describe this model"):
        apply_plan(model, analyze(other, str(other_path)), {})


def test_matmul_and_untransposed_gemm_are_cut_on_the_right_axes(tmp_path):
    model, path = G.load(G.matmul_head(), tmp_path)
    analysis = analyze(model, str(path))
    assert [(l.name, l.op_type) for l in analysis.layers] == [("conv", "Conv"), ("mm", "MatMul"), ("fc", "Gemm")]
    mm_group = analysis.layer("mm").out_group
    pruned = apply_plan(model, analysis, {0: [1, 2, 5], mm_group: [0, 9]})
    mm = initializer_array(model, "mm.weight")
    np.testing.assert_array_equal(initializer_array(pruned, "mm.weight"), mm[[1, 2, 5]][:, [0, 9]])
    np.testing.assert_array_equal(initializer_array(pruned, "mm.bias"), initializer_array(model, "mm.bias")[[0, 9]])
    np.testing.assert_array_equal(initializer_array(pruned, "fc.weight"), initializer_array(model, "fc.weight")[[0, 9]])
    verify(mask_model(model, analysis, {0: [1, 2, 5], mm_group: [0, 9]}), pruned)


def test_split_sizes_and_slice_bounds_follow_the_kept_channels(tmp_path):
    model, path = G.load(G.split_slice(), tmp_path)
    analysis = analyze(model, str(path))
    keep = {0: [0, 2, 3, 6]}  # split parts [0, 3) and [3, 8) keep 2 and 2; slice [2, 6) keeps 2, 3
    pruned = apply_plan(model, analysis, keep)
    split = next(n for n in pruned.graph if n.name == "split")
    sliced = next(n for n in pruned.graph if n.name == "slice")
    np.testing.assert_array_equal(constant_array(split.inputs[1]), [2, 2])
    np.testing.assert_array_equal(constant_array(sliced.inputs[1]), [1])
    np.testing.assert_array_equal(constant_array(sliced.inputs[2]), [3])
    conv_c = initializer_array(model, "conv_c.weight")
    np.testing.assert_array_equal(initializer_array(pruned, "conv_c.weight"), conv_c[:, [0, 1]])
    verify(mask_model(model, analysis, keep), pruned)


def test_concat_consumer_is_cut_at_each_offset(tmp_path):
    model, path = G.load(G.concat_graph(), tmp_path)
    analysis = analyze(model, str(path))
    keep = {0: [1, 3], 1: [0]}
    pruned = apply_plan(model, analysis, keep)
    conv3 = initializer_array(model, "conv3.weight")
    np.testing.assert_array_equal(initializer_array(pruned, "conv3.weight"), conv3[:, [1, 3, 4]])
    verify(mask_model(model, analysis, keep), pruned)


def test_grouped_conv_is_cut_per_conv_group(tmp_path):
    model, path = G.load(G.grouped_se_block(), tmp_path)
    analysis = analyze(model, str(path))
    conv1 = analysis.layer("conv1").out_group
    # Blocks of 4 channels: keeps 2, 2 and 1 -> the last block is padded with channel 8.
    keep = {conv1: [0, 3, 5, 6, 11]}
    pruned = apply_plan(model, analysis, keep)
    w = initializer_array(model, "conv2.weight")  # [12, 4, 3, 3], rows 4 per conv group
    expected = np.concatenate([w[0:4][:, [0, 3]], w[4:8][:, [1, 2]], w[8:12][:, [0, 3]]])
    expected[8:12, 0] = 0  # the padded channel 8 is zeroed at its consumer
    np.testing.assert_array_equal(initializer_array(pruned, "conv2.weight"), expected)
    np.testing.assert_array_equal(initializer_array(pruned, "conv1.weight"), initializer_array(model, "conv1.weight")[[0, 3, 5, 6, 8, 11]])
    verify(mask_model(model, analysis, keep), pruned)
