"""The embedding width of a vision transformer (``--prune-embedding``): one group through
every LayerNorm, the patch embedding, class token and position embedding and the head, cut only
when asked, verified against a reference that normalises over the kept channels and, here,
against the PyTorch module with those channels dropped from every weight."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from mdp_trt.errors import VerificationFailed
from mdp_trt.graph import load_model
from mdp_trt.passes import analyze, apply_plan, mask_model, verify
from tests import onnx_graphs as G

torch = pytest.importorskip("torch")
from tests.transformers import Shape, tiny_vit  # noqa: E402

EXPORTERS = {"torchscript": False, "dynamo": True}


def _exported(module, shape: Shape, folder, exporter: str, normalised: bool = True):
    path = G.export_module(module, folder / f"vit-{exporter}.onnx",
                           input_shape=(1, 3, shape.image, shape.image), dynamo=EXPORTERS[exporter])
    model = load_model(path)
    return model, analyze(model, str(path), prune_normalised=normalised)


def _embedding(analysis):
    (group,) = [g for g in analysis.groups if g.norms]
    return group


def _dropped(module, shape: Shape, kept: list[int]):
    """The module with every embedding channel outside ``kept`` removed from its weights."""
    small = copy.deepcopy(module)
    k = torch.as_tensor(kept)

    def take(parameter, axis: int):
        return torch.nn.Parameter(parameter.detach().index_select(axis, k))

    def norm(layer):
        layer.weight, layer.bias = take(layer.weight, 0), take(layer.bias, 0)
        layer.normalized_shape = (len(kept),)

    small.embed.weight, small.embed.bias = take(small.embed.weight, 0), take(small.embed.bias, 0)
    if small.cls is not None:
        small.cls = take(small.cls, 2)
    small.pos = take(small.pos, 2)
    for block in small.blocks:
        norm(block.norm1)
        norm(block.norm2)
        attention = block.attn
        for name in ("qkv",) if shape.fused else ("q", "k", "v"):
            getattr(attention, name).weight = take(getattr(attention, name).weight, 1)
        attention.proj.weight, attention.proj.bias = take(attention.proj.weight, 0), take(attention.proj.bias, 0)
        block.mlp[0].weight = take(block.mlp[0].weight, 1)
        block.mlp[2].weight, block.mlp[2].bias = take(block.mlp[2].weight, 0), take(block.mlp[2].bias, 0)
    norm(small.norm)
    small.head.weight = take(small.head.weight, 1)
    return small


def test_the_embedding_is_one_group_kept_whole_unless_asked(tmp_path):
    shape = Shape(heads=2, head_dim=4, depth=2)
    model, analysis = _exported(tiny_vit(shape), shape, tmp_path, "torchscript", normalised=False)
    stream = _embedding(analysis)
    assert stream.channels == shape.dim and len(stream.norms) == 2 * shape.depth + 1
    assert not stream.prunable and "the prune-embedding option cuts these channels too" in stream.reason
    cut = _embedding(analyze(model, analysis.model, prune_normalised=True))
    assert cut.prunable and cut.pinned == () and cut.norms == stream.norms
    # the patch embedding, every attention output and MLP output produce it; the head reads it
    assert len(cut.producers) == 1 + 2 * shape.depth and "head" in " ".join(cut.consumers)


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("fused, pre_norm, class_token", [
    (True, True, True), (False, False, True), (True, True, False)])
def test_a_cut_embedding_equals_the_module_with_those_channels_dropped(tmp_path, exporter, fused,
                                                                      pre_norm, class_token):
    shape = Shape(heads=2, head_dim=4, fused=fused, pre_norm=pre_norm, class_token=class_token)
    module = tiny_vit(shape, seed=3)
    model, analysis = _exported(module, shape, tmp_path, exporter)
    stream = _embedding(analysis)
    kept = [0, 2, 3, 6]
    pruned = apply_plan(model, analysis, {stream.id: kept})
    # against the masked original whose LayerNorms normalise over the kept channels
    check = verify(mask_model(model, analysis, {stream.id: kept}), pruned, inputs=2)
    assert check.passed and check.max_rel_diff <= 1e-5 and not check.weak
    # and against PyTorch: the module with the other channels dropped from every weight
    x = np.random.default_rng(0).standard_normal((1, 3, shape.image, shape.image), np.float32)
    with torch.no_grad():
        expected = _dropped(module, shape, kept)(torch.from_numpy(x)).numpy()
    (got,) = G.run(pruned, x)
    assert np.abs(got - expected).max() <= 1e-4 * max(np.abs(expected).max(), 1.0)
    with pytest.raises(VerificationFailed):  # the dropped channels did matter
        verify(model, pruned, inputs=2)


@pytest.mark.slow
def test_prune_embedding_cuts_the_stream_and_reports_the_renormalised_layernorms(
        tmp_path, capsys, fast_prune):
    from tests.test_cli import run

    shape = Shape(heads=4, head_dim=16, mlp_ratio=2, depth=2, image=32)
    path = G.export_module(tiny_vit(shape), tmp_path / "vit.onnx", input_shape=(1, 3, 32, 32),
                           dynamo=True)
    code, text = run(["prune", str(path), "-o", str(tmp_path / "out"), "--budget", "0.6",
                      "--group-size", "8", "--cache", str(tmp_path / "c.sqlite"),
                      "--prune-embedding", "--allow-over", "--method", "uniform"], capsys)
    assert code == 0, text
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    analysis = json.loads((tmp_path / "out" / "analysis.json").read_text())
    (stream,) = [g for g in analysis["groups"] if g["norms"]]
    assert stream["prunable"] and len(stream["norms"]) == 2 * shape.depth + 1
    kept, total = report["kept_channels"][stream["name"]]
    assert total == shape.dim
    # uniform: every group at one fraction, the embedding too; the verification's reference
    # renormalised its LayerNorms
    assert kept < total and report["renormalised"] == stream["norms"]
    assert f"{len(stream['norms'])} LayerNorms normalising over the kept channels" in text
    assert report["verification"]["max_rel_diff"] <= 1e-4
