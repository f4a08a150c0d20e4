"""No plan may leave a model whose outputs ignore the input: a class-token transformer keeps
one attention block; CNNs and mean-pooling transformers keep every block removable."""

from __future__ import annotations

from pathlib import Path

import pytest

from mdp_trt.graph import load_model
from mdp_trt.passes import analyze, mask_model
from mdp_trt.passes.reachability import KEPT_FOR_THE_INPUT, keep_outputs_reachable
from mdp_trt.passes.verify import WEAK_SENSITIVITY, input_sensitivity
from tests import onnx_graphs as G

pytest.importorskip("torch")
from tests.transformers import Shape, tiny_vit  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _vit(tmp_path, class_token: bool):
    shape = Shape(heads=2, head_dim=4, depth=2, class_token=class_token)
    path = G.export_module(tiny_vit(shape), tmp_path / "vit.onnx", input_shape=(1, 3, 16, 16),
                           dynamo=True)
    model = load_model(path)
    return model, analyze(model, str(path))


def test_a_class_token_transformer_keeps_its_last_attention_block(tmp_path):
    model, analysis = _vit(tmp_path, class_token=True)
    assert sum(b.removable for b in analysis.blocks) == 4  # attention and MLP of two blocks
    everything = [b.id for b in analysis.blocks if b.removable]
    assert input_sensitivity(mask_model(model, analysis, {}, everything)) < WEAK_SENSITIVITY

    kept = keep_outputs_reachable(model, analysis)
    pinned = [b for b in kept.blocks if b.reason == KEPT_FOR_THE_INPUT]
    heads = {g.id for g in analysis.groups if g.bundle > 1}
    assert len(pinned) == 1 and not pinned[0].removable
    assert any(analysis.layer(name).out_group in heads for name in pinned[0].layers)
    assert pinned[0] == max((b for b in kept.blocks if b.reason == KEPT_FOR_THE_INPUT or b.removable),
                            key=lambda b: b.id if b.reason else -1)
    # the most any plan can now remove still reads the image
    rest = [b.id for b in kept.blocks if b.removable]
    assert len(rest) == 3
    assert input_sensitivity(mask_model(model, kept, {}, rest)) >= WEAK_SENSITIVITY


def test_mean_pooling_transformers_and_cnns_keep_every_block_removable(tmp_path):
    model, analysis = _vit(tmp_path, class_token=False)
    assert keep_outputs_reachable(model, analysis) == analysis

    path = ROOT / "models" / "digits_resnet_deep.onnx"  # seven removable blocks
    cnn = load_model(path)
    cnn_analysis = analyze(cnn, str(path))
    assert sum(b.removable for b in cnn_analysis.blocks) == 7
    assert keep_outputs_reachable(cnn, cnn_analysis) == cnn_analysis
