"""Attention heads: recognised in both exporters' graphs, pruned as whole heads, verified."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mdp_trt.analysis import layer_out_widths
from mdp_trt.errors import VerificationFailed
from mdp_trt.graph import load_model
from mdp_trt.importance import Importance
from mdp_trt.passes import analyze, apply_plan, mask_model, verify
from mdp_trt.passes.groups import layer_weight_axes
from mdp_trt.solve.formulate import decode_plan, removable_blocks
from tests import onnx_graphs as G

pytest.importorskip("torch")
from tests.transformers import Shape, tiny_vit, torchvision_vit  # noqa: E402

EXPORTERS = {"torchscript": False, "dynamo": True}


def _exported(shape: Shape, folder, exporter: str, seed: int = 0, module=None, batch: int = 1,
              embedding: bool = False):
    path = G.export_module(module or tiny_vit(shape, seed), folder / f"vit-{exporter}.onnx",
                           input_shape=(batch, 3, shape.image, shape.image), dynamo=EXPORTERS[exporter])
    model = load_model(path)
    return model, analyze(model, str(path), prune_normalised=embedding)


def _head_groups(analysis):
    return [g for g in analysis.groups if g.bundle > 1]


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("fused, sdpa, torchvision", [
    (True, False, False), (False, False, False), (True, True, False), (False, True, False),
    (True, False, True),  # nn.MultiheadAttention: copies split first, then heads
])
def test_heads_are_bundles_that_prune_like_the_masked_original(tmp_path, exporter, fused, sdpa,
                                                                torchvision):
    shape = Shape(heads=3, head_dim=4, fused=fused, sdpa=sdpa)
    module = torchvision_vit(heads=3, head_dim=4) if torchvision else None
    model, analysis = _exported(shape, tmp_path, exporter, module=module)
    heads = _head_groups(analysis)
    assert len(heads) == shape.depth
    for group in heads:
        assert (group.channels, group.bundle, group.prunable, group.periodic) == (12, 4, True, fused)
        assert len(group.producers) == (1 if fused else 3) and len(group.consumers) == 1
        assert group.options(1) == [0, 4, 8, 12]  # whole heads only
    for group in heads:  # the first producer's latency cell times the attention core with it
        timed = [analysis.layer(name).signature.attention for name in group.producers]
        assert timed[0] == (17, 4, 3 if fused else 1) and not any(timed[1:])
    # block 0 keeps its head 1, block 1 its heads 0 and 2
    keep = {heads[0].id: list(range(4, 8)), heads[1].id: [0, 1, 2, 3, 8, 9, 10, 11]}
    pruned = apply_plan(model, analysis, keep)
    check = verify(mask_model(model, analysis, keep), pruned, inputs=2)
    assert check.passed and check.max_rel_diff <= 1e-5 and not check.weak
    with pytest.raises(VerificationFailed):  # the heads did matter
        verify(model, pruned, inputs=2)
    for group, kept in zip(heads, (4, 8)):
        for name, width in ((*group.consumers, kept), *((p, kept * (3 if fused else 1)) for p in group.producers)):
            node = next(n for n in pruned.graph if n.name == name)
            out_axis, in_axis = layer_weight_axes(node)
            shape = node.inputs[1].const_value.shape
            assert shape[in_axis if name in group.consumers else out_axis] == width, name


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("sdpa", [False, True])
def test_a_bias_added_to_the_scores_per_head_loses_the_removed_heads(tmp_path, exporter, sdpa):
    # Swin's relative position bias: a constant (1, heads, N, N) added to the scores
    shape = Shape(heads=3, head_dim=4, score_bias=True, sdpa=sdpa)
    model, analysis = _exported(shape, tmp_path, exporter)
    heads = _head_groups(analysis)
    assert len(heads) == shape.depth and all(g.prunable for g in heads)
    keep = {heads[0].id: list(range(4, 8)), heads[1].id: [0, 1, 2, 3, 8, 9, 10, 11]}
    pruned = apply_plan(model, analysis, keep)
    check = verify(mask_model(model, analysis, keep), pruned, inputs=2)
    assert check.passed and check.max_rel_diff <= 1e-5 and not check.weak
    biases = sorted(tuple(v.const_value.shape) for v in pruned.graph.initializers.values()
                    if v.const_value is not None and len(v.const_value.shape) == 4
                    and v.const_value.shape[-1] == v.const_value.shape[-2] == 17)
    assert biases == [(1, 1, 17, 17), (1, 2, 17, 17)]


def test_a_score_bias_is_cut_along_its_own_head_axis_only(tmp_path):
    from mdp_trt.passes.attention import _score_bias

    b = G.GraphBuilder((1, 6, 5, 5))
    per_head = b.node("Add", ["image", b.const("bias", np.ones((6, 5, 5), np.float32))], "per_head")
    shared = b.node("Add", [per_head, b.const("mask", np.ones((1, 1, 5, 5), np.float32))], "shared")
    computed = b.node("Add", [shared, b.node("Relu", [shared], "relu")], "computed")
    G.head(b, computed, 6)
    model, _ = G.load(b.model(), tmp_path)
    add = {node.name: node for node in model.graph}
    scores = ("a0", "h", "a2", "k")
    assert _score_bias(add["per_head"], 0, scores) == (1, 0)  # heads on the bias's axis 0
    assert _score_bias(add["shared"], 0, scores) == (1, None)  # one value for every head
    assert _score_bias(add["computed"], 0, scores) is None  # not a constant
    # heads merged with the batch (dynamo's k^T): a bias varying along that axis is refused
    assert _score_bias(add["per_head"], 0, ("1", "a0=2*h=3", "a2", "k")) is None


def test_a_solved_plan_keeps_the_most_important_heads(tmp_path):
    model, analysis = _exported(Shape(heads=4, head_dim=2, depth=1), tmp_path, "torchscript")
    (group,) = _head_groups(analysis)
    (producer,) = group.producers
    # head 2 scores highest, then head 0; a plan for two heads keeps exactly those
    scores = np.tile(np.repeat([5.0, 1.0, 9.0, 0.5], 2), 3)
    importance = Importance("given", {layer.name: tuple(scores) if layer.name == producer
                                      else tuple(np.ones(layer.signature.out_channels))
                                      for layer in analysis.layers})
    options = [len(g.options(1)) - 1 for g in analysis.groups]
    options[group.id] = group.options(1).index(4)
    decoded = decode_plan(analysis, importance, 1, options, [1] * (len(removable_blocks(analysis)) + 1))
    assert decoded.keep[group.id] == [0, 1, 4, 5]
    check = verify(mask_model(model, analysis, decoded.keep), apply_plan(model, analysis, decoded.keep))
    assert check.passed


@st.composite
def shapes(draw):
    return Shape(heads=draw(st.integers(1, 4)), head_dim=draw(st.sampled_from([2, 4, 6])),
                 mlp_ratio=draw(st.integers(1, 3)), depth=draw(st.integers(1, 2)),
                 fused=draw(st.booleans()), sdpa=draw(st.booleans()), pre_norm=draw(st.booleans()),
                 class_token=draw(st.booleans()), score_bias=draw(st.booleans()))


@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(shape=shapes(), exporter=st.sampled_from(sorted(EXPORTERS)), seed=st.integers(0, 100),
       batch=st.integers(1, 2), embedding=st.booleans())
def test_random_tiny_transformers_prune_their_heads_like_the_masked_original(
        tmp_path_factory, shape, exporter, seed, batch, embedding):
    # a batch of 2: the dynamo exporter's k^T merges the batch with the heads and splits them back;
    # with ``embedding`` the residual stream is cut too (the reference renormalises its LayerNorms)
    model, analysis = _exported(shape, tmp_path_factory.mktemp("vit"), exporter, seed, batch=batch,
                                embedding=embedding)
    (stream,) = [g for g in analysis.groups if g.norms]
    assert stream.prunable == embedding and stream.channels == shape.dim
    heads = _head_groups(analysis)
    # one head cannot be removed: its Reshapes are not taken apart (the channels stay whole)
    assert len(heads) == (shape.depth if shape.heads > 1 else 0)
    assert all(g.bundle == shape.head_dim for g in heads)
    keep, removed = G.random_plan(analysis, seed, block_probability=0.0)
    for group in heads:
        assert len(keep[group.id]) % shape.head_dim == 0
    pruned = apply_plan(model, analysis, keep, removed)
    check = verify(mask_model(model, analysis, keep, removed), pruned, inputs=2, seed=seed)
    assert check.passed, check
    # every layer is as wide as its latency table says
    nodes = {node.name: node for node in pruned.graph}
    for layer in analysis.layers:
        group = analysis.groups[layer.out_group]
        (width,) = layer_out_widths(layer, group, [len(keep.get(group.id, range(group.channels)))])
        node = nodes[layer.name]  # no block is removed
        assert node.inputs[1].const_value.shape[layer_weight_axes(node)[0]] == width, layer.name


def test_analyze_lists_the_heads_of_a_vision_transformer(tmp_path, capsys):
    from tests.test_cli import run

    path = G.export_module(tiny_vit(Shape(heads=3)), tmp_path / "vit.onnx", input_shape=(1, 3, 16, 16),
                           dynamo=False)
    code, text = run(["analyze", str(path)], capsys)
    cells = " ".join(re.sub(r"[│┃]", " ", text).split())  # the table's wrapped cells, joined
    assert code == 0 and "yes, in 3 attention heads of 4" in cells, text


@pytest.mark.slow
def test_prune_cuts_a_vision_transformer_with_head_groups_and_verifies_it(tmp_path):
    from mdp_trt.prune import PruneOptions, prune

    path = G.export_module(tiny_vit(Shape(heads=4, head_dim=8, mlp_ratio=4)), tmp_path / "vit.onnx",
                           input_shape=(1, 3, 16, 16), dynamo=True)
    report = prune(path, tmp_path / "out", PruneOptions(
        budget=0.6, group_size=8, cache=tmp_path / "cache.sqlite", progress=False,
        measure_seconds=0.3, measure_rounds=1, compare_seconds=3.0, confirm_windows=1))
    assert report.verification.max_rel_diff <= 1e-4
    heads = {name: kept for name, kept in report.kept_channels.items() if name.endswith("attn.qkv")}
    assert heads and all(kept % 8 == 0 for kept, _ in heads.values())  # whole heads
    # its class token sees the image only through attention: the last attention block stays
    from mdp_trt.analysis import Analysis
    from mdp_trt.passes.reachability import KEPT_FOR_THE_INPUT

    blocks = Analysis.load(tmp_path / "out" / "analysis.json").blocks
    assert [b.name for b in blocks if b.reason == KEPT_FOR_THE_INPUT] == ["blocks.1.attn"]
    assert "blocks.1.attn" not in report.removed_blocks


def test_heads_merged_with_the_batch_and_split_back_are_followed(tmp_path):
    # dynamo writes scaled_dot_product_attention's k^T of a batch of 2 as (2, H, N, D) -> (2 H, N, D), Transpose, -> (2, H, D, N)
    model, analysis = _exported(Shape(heads=3, sdpa=True), tmp_path, "dynamo", batch=2)
    merged = [n for n in model.graph if n.op_type == "Reshape"
              and (n.outputs[0].shape is not None and tuple(n.outputs[0].shape)[:1] == (6,))]
    assert merged, "the export no longer merges batch and heads: this test checks nothing"
    heads = _head_groups(analysis)
    assert len(heads) == 2
    keep = {heads[0].id: list(range(4, 8)), heads[1].id: list(range(8))}
    check = verify(mask_model(model, analysis, keep), apply_plan(model, analysis, keep), inputs=2)
    assert check.passed and not check.weak


@pytest.mark.parametrize("fused", [True, False])
def test_an_attention_cell_runs_the_core_at_every_head_count(tmp_path, fused):
    import onnx
    import onnxruntime as ort
    import torch

    from mdp_trt.latency.backends.layer_model import build_layer_model, layer_output_shape
    from mdp_trt.latency.backends.torch_backend import layer_module

    _, analysis = _exported(Shape(heads=3, fused=fused), tmp_path, "torchscript")
    (layer,) = [layer for layer in analysis.layers if layer.signature.attention][:1]
    sig, group = layer.signature, analysis.groups[layer.out_group]
    copies = sig.attention[2]
    for kept in group.options(1)[1:]:
        cell = build_layer_model(sig, kept * copies, sig.in_channels)
        onnx.checker.check_model(cell, full_check=True)
        x = np.random.default_rng(0).standard_normal((sig.batch, sig.in_channels)).astype(np.float32)
        (y,) = ort.InferenceSession(cell.SerializeToString()).run(None, {"x": x})
        assert y.shape == layer_output_shape(sig, kept * copies) == (sig.batch, kept)
        torch_y = layer_module(sig, kept * copies, sig.in_channels)(torch.from_numpy(x))
        assert tuple(torch_y.shape) == (sig.batch, kept)


def test_only_attention_cells_change_the_cache_key():
    from mdp_trt.signature import LayerSignature

    plain = LayerSignature("MatMul", 12, 8, batch=17)
    assert "attention" not in plain.key()  # every cell cached before attention cells stays valid
    timed = LayerSignature("MatMul", 36, 12, batch=17, attention=(17, 4, 3))
    assert timed.key() != plain.key() and LayerSignature.from_json(timed.to_json()) == timed
    assert LayerSignature.from_json(plain.to_json()) == plain


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_blocks_removed_in_a_row_are_all_gone_as_in_the_module_without_them(tmp_path, exporter):
    """Pre-norm blocks join the stream with no op between them, so one block's skip input is
    the Add output of the block before; removing both must remove both (the later one once
    brought the earlier back: masked original and pruned model agreed, both wrong)."""
    import torch
    from torch import nn

    shape = Shape(heads=2, head_dim=4, depth=3)
    module = tiny_vit(shape)
    model, analysis = _exported(shape, tmp_path, exporter, module=module)
    first = [b.id for b in analysis.blocks if b.removable][:2]  # block 0's attention and MLP
    pruned = apply_plan(model, analysis, {}, first)
    module.blocks[0] = nn.Identity()
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    got = G.run(pruned, x)[0]
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()
    assert len([n for n in pruned.graph if n.op_type == "Softmax"]) == 2
