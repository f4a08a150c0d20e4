"""Taylor importance equals the score computed directly with torch.nn; it needs data and logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mdp_trt.data import ArrayDataset
from mdp_trt.errors import InputError
from mdp_trt.graph import initializer_array
from mdp_trt.importance.output_scale import layer_output_scale
from mdp_trt.importance.magnitude import magnitude_importance
from mdp_trt.importance.taylor import taylor_importance
from mdp_trt.passes import analyze
from tests import onnx_graphs as G


@pytest.fixture
def chain(tmp_path):
    """conv1(no bias)-bn1-relu-conv2-bn2-relu-gap-flatten-fc(5), BatchNormalization kept."""
    model, path = G.load(G.conv_bn_relu_chain(), tmp_path)
    return model, analyze(model, str(path))


def _data(n=10, labels=True, seed=3):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3, 8, 8)).astype(np.float32)
    return ArrayDataset(x, rng.integers(0, 5, n) if labels else None)


def _torch_chain(model) -> nn.Sequential:
    """The same network written with torch.nn, weights copied from the ONNX initializers."""
    def init(name):
        return torch.from_numpy(initializer_array(model, name).copy())

    conv1, conv2 = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.Conv2d(8, 6, 3, padding=1)
    bn1, bn2, fc = nn.BatchNorm2d(8), nn.BatchNorm2d(6), nn.Linear(6, 5)
    for module, prefix in ((conv1, "conv1"), (conv2, "conv2"), (fc, "fc"), (bn1, "bn1"), (bn2, "bn2")):
        for key, tensor in module.state_dict().items():
            if key != "num_batches_tracked":
                tensor.copy_(init(f"{prefix}.{key}"))
    return nn.Sequential(conv1, bn1, nn.ReLU(), conv2, bn2, nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), fc).eval()


def _direct_scores(net: nn.Sequential, data: ArrayDataset, batch_size: int, labels: bool):
    conv1, bn1, _, conv2, bn2, _, _, _, fc = net
    layers = {"conv1": [conv1.weight, bn1.weight, bn1.bias],
              "conv2": [conv2.weight, conv2.bias, bn2.weight, bn2.bias],
              "fc": [fc.weight, fc.bias]}
    totals = {name: 0.0 for name in layers}
    batches = 0
    for start in range(0, len(data), batch_size):
        x = torch.from_numpy(data.x[start:start + batch_size])
        logits = net(x)
        target = (torch.from_numpy(data.y[start:start + batch_size]) if labels
                  else logits.argmax(1))
        net.zero_grad()
        nn.functional.cross_entropy(logits, target).backward()
        for name, params in layers.items():
            per_channel = sum((p * p.grad).reshape(p.shape[0], -1).sum(1) for p in params)
            totals[name] = totals[name] + per_channel.double().detach() ** 2
        batches += 1
    return {name: (total / batches).numpy() for name, total in totals.items()}


@pytest.mark.parametrize("labels", [True, False], ids=["labels", "own-predictions"])
def test_scores_equal_a_direct_torch_computation(chain, labels):
    model, analysis = chain
    data = _data(labels=labels)
    importance = taylor_importance(model, analysis, data, batch_size=4, progress=False)
    expected = _direct_scores(_torch_chain(model), data, batch_size=4, labels=labels)
    assert importance.method == "taylor"
    assert set(importance.layer_scores) == {"conv1", "conv2", "fc"}
    for name, scores in expected.items():
        assert np.all(scores >= 0) and np.any(scores > 0)
        np.testing.assert_allclose(importance.layer_scores[name], scores, rtol=1e-4, atol=1e-12,
                                   err_msg=name)


def test_scores_are_deterministic_and_differ_from_magnitude(chain):
    model, analysis = chain
    data = _data(n=40)
    first = taylor_importance(model, analysis, data, max_samples=16, seed=1, progress=False)
    again = taylor_importance(model, analysis, data, max_samples=16, seed=1, progress=False)
    other = taylor_importance(model, analysis, data, max_samples=16, seed=2, progress=False)
    assert first.layer_scores == again.layer_scores
    assert first.layer_scores != other.layer_scores  # another subset of the data
    magnitude = magnitude_importance(
        analysis, weight_of=lambda n: initializer_array(model, analysis.layer(n).weight),
        scale_of=lambda n: layer_output_scale(model, analysis, n))
    assert any(first.ranking(analysis, g.id) != magnitude.ranking(analysis, g.id)
               for g in analysis.groups if g.prunable)


def test_bad_data_is_refused(chain):
    model, analysis = chain
    with pytest.raises(InputError, match="calibration data is empty"):
        taylor_importance(model, analysis, ArrayDataset(np.zeros((0, 3, 8, 8), np.float32)),
                          progress=False)
    bad = ArrayDataset(_data().x, np.full(10, 7))
    with pytest.raises(InputError, match=r"class indices in 0..4 .* holds 7..7"):
        taylor_importance(model, analysis, bad, progress=False)


def test_a_model_without_logits_is_refused(tmp_path):
    b = G.GraphBuilder((1, 3, 8, 8))
    b.output(b.node("Relu", [b.conv("image", 3, 4, "conv")], "relu"), [1, 4, 8, 8])
    model, path = G.load(b.model(), tmp_path)
    with pytest.raises(InputError, match=r"shape \[2, 4, 8, 8\] .* \(batch, classes\) logits"):
        taylor_importance(model, analyze(model, str(path)), _data(n=2), progress=False)


@pytest.mark.slow
def test_prune_with_taylor_importance(tmp_path):
    import json

    from mdp_trt.models.export import ExportOptions, export_architecture
    from mdp_trt.prune import PruneOptions, prune

    model = export_architecture("resnet18", tmp_path / "r18.onnx",
                                ExportOptions(input_shape=(1, 3, 64, 64), exporter="torchscript"))
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "calib.npz", x=rng.standard_normal((16, 3, 64, 64)).astype(np.float32))
    report = prune(model, tmp_path / "out", PruneOptions(
        budget=0.9, group_size=64, importance="taylor", calib_data=tmp_path / "calib.npz",
        cache=tmp_path / "cache.sqlite", progress=False, measure_seconds=0.3, measure_rounds=1,
        compare_seconds=3.0, confirm_windows=1))
    assert report.importance == "taylor"
    saved = json.loads((tmp_path / "out" / "importance.json").read_text())
    assert saved["method"] == "taylor" and len(saved["layer_scores"]) == 21
    assert (tmp_path / "out" / "pruned.onnx").is_file()
    assert report.verification.max_rel_diff <= 1e-4
