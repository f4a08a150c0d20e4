"""Residual block detection on the golden graphs."""

import onnx_ir as ir

from mdp_trt.graph import infer_shapes
from mdp_trt.passes import analyze
from mdp_trt.passes.blocks import find_blocks
from tests import onnx_graphs as G


def test_identity_skip_is_a_removable_block(tmp_path):
    model, path = G.load(G.residual_identity(), tmp_path)
    a = analyze(model, str(path))
    (block,) = a.blocks
    assert block.removable and block.reason is None
    # load_model folds the Identity on the skip path away.
    assert block.add_node == "add" and block.skip_input == "stem_relu_out"
    assert block.layers == ("conv_a", "conv_b")
    assert block.nodes == ("conv_a", "relu_a", "conv_b")
    assert [l.block for l in a.layers] == [None, 0, 0, None]  # stem, conv_a, conv_b, fc


def test_projection_skip_is_a_block_that_cannot_be_removed(tmp_path):
    model, path = G.load(G.projection_skip(), tmp_path)
    a = analyze(model, str(path))
    (block,) = a.blocks
    assert not block.removable and block.reason == "projection skip (node 'downsample')"
    assert block.layers == ("conv_a", "conv_b") and block.skip_input == "bn_d_out"
    assert all(l.block is None for l in a.layers)


def test_no_blocks_without_residual_adds(tmp_path):
    for proto in (G.conv_bn_relu_chain(), G.channel_constants_depthwise(), G.concat_graph()):
        model, path = G.load(proto, tmp_path)
        assert analyze(model, str(path)).blocks == ()


def test_identity_nodes_on_the_skip_do_not_make_a_path():
    # Straight from the proto (no load_model normalisation): the skip goes through Identity.
    model = infer_shapes(ir.from_proto(G.residual_identity()))
    (block,) = find_blocks(model.graph)
    assert block.removable and block.skip_input.name == "skip_identity_out"
    assert [n.name for n in block.branch] == ["conv_a", "relu_a", "conv_b"]
