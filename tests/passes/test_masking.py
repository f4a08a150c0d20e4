"""The masked reference: same architecture, removed channels zeroed at their consumers."""

import numpy as np

from mdp_trt.graph import initializer_array
from mdp_trt.graph.constants import constant_array
from mdp_trt.graph.shapes import static_shape
from mdp_trt.passes import analyze, mask_model
from mdp_trt.passes.plan_edits import set_constant
from tests import onnx_graphs as G

X = np.random.default_rng(3).standard_normal((1, 3, 8, 8)).astype(np.float32)


def test_keeping_everything_changes_nothing(tmp_path):
    model, path = G.load(G.projection_skip(), tmp_path)
    analysis = analyze(model, str(path))
    full = {g.id: list(range(g.channels)) for g in analysis.groups}
    masked = mask_model(model, analysis, full, set())
    np.testing.assert_array_equal(G.run(masked, X)[0], G.run(model, X)[0])


def test_consumer_input_slices_are_zeroed_and_nothing_else(tmp_path):
    model, path = G.load(G.conv_bn_relu_chain(), tmp_path)
    analysis = analyze(model, str(path))
    masked = mask_model(model, analysis, {0: [0, 3]}, set())
    w2 = constant_array(next(n for n in masked.graph if n.name == "conv2").inputs[1])
    original = initializer_array(model, "conv2.weight")
    dropped = [1, 2, 4, 5, 6, 7]
    assert not w2[:, dropped].any()
    np.testing.assert_array_equal(w2[:, [0, 3]], original[:, [0, 3]])
    # The producer is untouched: the architecture (and every shape) is the original's.
    np.testing.assert_array_equal(initializer_array(masked, "conv1.weight"), initializer_array(model, "conv1.weight"))
    out = G.run(masked, X)[0]
    assert out.shape == (1, 5)
    assert not np.allclose(out, G.run(model, X)[0])  # removing channels changes the result


def test_flattened_columns_are_zeroed_per_channel(tmp_path):
    model, path = G.load(G.flatten_gemm_head(), tmp_path)
    analysis = analyze(model, str(path))
    masked = mask_model(model, analysis, {0: [1]}, set())
    fc1 = constant_array(next(n for n in masked.graph if n.name == "fc1").inputs[1])
    assert fc1.shape == (10, 128)
    assert not fc1[:, :16].any() and not fc1[:, 32:].any()
    np.testing.assert_array_equal(fc1[:, 16:32], initializer_array(model, "fc1.weight")[:, 16:32])


def test_removed_block_is_bypassed_and_outputs_keep_their_shape(tmp_path):
    model, path = G.load(G.residual_identity(), tmp_path)
    analysis = analyze(model, str(path))
    masked = mask_model(model, analysis, {}, {0})
    assert "conv_a" not in {n.name for n in masked.graph}
    assert static_shape(masked.graph.outputs[0]) == (1, 5)
    # Bypassing the block equals a branch that outputs zeros (conv_b weight and bias zeroed).
    silenced = model.clone()
    conv_b = next(n for n in silenced.graph if n.name == "conv_b")
    for index in (1, 2):
        set_constant(silenced.graph, conv_b, index, np.zeros_like(constant_array(conv_b.inputs[index])))
    np.testing.assert_allclose(G.run(masked, X)[0], G.run(silenced, X)[0], rtol=1e-6, atol=1e-7)
    assert not np.allclose(G.run(masked, X)[0], G.run(model, X)[0])
