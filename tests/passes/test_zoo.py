"""The torchvision zoo at small resolution: every architecture is analysed, pruned with a random
valid plan and checked against the masked original in ORT; none may crash.

One export per architecture (seeded, weights=None, random BN statistics; dynamo or TorchScript,
both covered), cached for the module. Architectures whose patterns the passes do not prune still run: their groups are kept
whole and each says why. ``FLOOR`` pins the share of prunable channels each architecture reached
when the test was written, so a handler that regresses to "unprunable" fails here.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from mdp_trt.graph import load_model
from mdp_trt.models.export import ExportOptions, export_architecture
from mdp_trt.passes import analyze, apply_plan, mask_model, verify
from tests import onnx_graphs as G

# torchvision warns that GoogLeNet's default initialisation will change: irrelevant here.
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


@dataclass(frozen=True)
class Arch:
    name: str
    size: int = 32  # square input side: the smallest the architecture accepts, or 32
    min_prunable_share: float = 0.0  # channels in prunable groups / all channels, floor
    blocks: tuple[int, int] | None = None  # (blocks found, removable), when pinned
    # Both exporters are covered; TorchScript where dynamo is slow (DenseNet: 17 s vs 4 s).
    exporter: str = "dynamo"


ZOO = [
    Arch("resnet18", 32, 0.70, (8, 5)),
    Arch("resnet50", 32, 0.90, (16, 12), "torchscript"),
    Arch("resnext50_32x4d", 32, 0.90, (16, 12), "torchscript"),
    Arch("vgg11_bn_small", 32, 0.90, (0, 0)),
    Arch("alexnet", 64, 0.85, (0, 0)),
    Arch("mobilenet_v2", 32, 0.85, (10, 10), "torchscript"),
    Arch("mobilenet_v3_small", 32, 0.80, (6, 6)),
    Arch("efficientnet_b0", 32, 0.90, (9, 9), "torchscript"),
    Arch("mnasnet0_5", 32, 0.80, (10, 10), "torchscript"),
    Arch("regnet_x_400mf", 32, 0.90, (22, 18)),
    Arch("regnet_y_400mf", 32, 0.90, (16, 12), "torchscript"),
    # Channel shuffles become Gathers of the kept channels: only the classifier stays whole.
    Arch("shufflenet_v2_x0_5", 32, 0.70, (0, 0)),
    # The 1000-channel classifier conv is a quarter of SqueezeNet's channels.
    Arch("squeezenet1_0", 64, 0.70, (0, 0)),
    Arch("densenet121", 32, 0.90, (0, 0), "torchscript"),
    Arch("googlenet", 32, 0.85, (0, 0), "torchscript"),
    Arch("inception_v3", 96, 0.90, (0, 0), "torchscript"),  # its stem needs >= 75 pixels
    # LayerNorm over the channels pins the residual stream; the MLP hidden groups prune.
    Arch("convnext_tiny", 32, 0.70, (18, 18)),
]


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    cache = {}
    root = tmp_path_factory.mktemp("zoo")

    def get(arch: Arch):
        if arch.name not in cache:
            path = root / f"{arch.name}.onnx"
            shape = (1, 3, arch.size, arch.size)
            if arch.name in ("vgg11_bn_small", "convnext_tiny"):
                # The full VGG head is a 500 MB model; ConvNeXt's 1e-6 layer scales would hide
                # any pruning error in its blocks: the test helper sizes/draws them instead.
                G.export_torchvision(arch.name, path, dynamo=arch.exporter == "dynamo", input_shape=shape)
            else:
                export_architecture(arch.name, path, ExportOptions(input_shape=shape, exporter=arch.exporter))
            cache[arch.name] = path
        return cache[arch.name]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("arch", ZOO, ids=[a.name for a in ZOO])
def test_zoo_architecture_prunes_with_verified_equivalence(exports, arch):
    path = exports(arch)
    model = load_model(path)
    analysis = analyze(model, str(path))
    assert analysis.layers and analysis.groups
    for group in analysis.groups:
        assert group.prunable == (group.reason is None), (group.name, group.reason)
    for layer in analysis.layers:
        group = analysis.groups[layer.out_group]
        assert group.channels == layer.signature.out_channels, layer.name
        width = sum(analysis.groups[g].channels for g in layer.in_groups) + layer.in_fixed
        assert width * layer.in_stride == layer.signature.in_channels, layer.name
        if layer.in_group is not None:
            assert layer.in_groups == (layer.in_group,) and layer.in_fixed == 0, layer.name
    # The classifier reaches the graph output: never prunable, always with that reason.
    last = analysis.groups[analysis.layers[-1].out_group]
    assert not last.prunable and "graph output" in last.reason
    total = sum(g.channels for g in analysis.groups)
    share = sum(g.channels for g in analysis.groups if g.prunable) / total
    assert share >= arch.min_prunable_share, [(g.name, g.reason) for g in analysis.groups if not g.prunable][:5]
    if arch.blocks is not None:
        assert (len(analysis.blocks), sum(b.removable for b in analysis.blocks)) == arch.blocks
    keep, removed = G.random_plan(analysis, seed=0)
    pruned = apply_plan(model, analysis, keep, removed)
    result = verify(mask_model(model, analysis, keep, removed), pruned, inputs=1, seed=0)
    assert result.max_rel_diff <= 1e-4
    # The plan really changed the network (a surgery that cut nothing would pass trivially).
    assert verify(model, pruned, inputs=1, seed=0, rtol=float("inf")).max_rel_diff > 1e-3


@pytest.mark.slow
def test_convnext_streams_prune_with_their_layernorms_when_asked(exports):
    # ConvNeXt's residual streams run through channel-last LayerNorms: kept whole by default,
    # cut with prune_normalised (--prune-embedding), checked against the renormalised reference.
    arch = next(a for a in ZOO if a.name == "convnext_tiny")
    path = exports(arch)
    model = load_model(path)
    before = analyze(model, str(path))
    after = analyze(model, str(path), prune_normalised=True)
    streams = [g for g in after.groups if g.norms]
    # the first three stages' streams; the last one reaches the classifier through a Gather
    # along the channels (the dynamo exporter's as_strided)
    assert [g.prunable for g in streams] == [True, True, True, False]
    assert all(not before.groups[g.id].prunable for g in streams)
    streams = streams[:3]
    share = sum(g.channels for g in after.groups if g.prunable) / sum(g.channels for g in after.groups)
    assert share > sum(g.channels for g in before.groups if g.prunable) / sum(g.channels for g in before.groups)
    keep, removed = G.random_plan(after, seed=1, block_probability=0.0)
    assert any(len(keep[g.id]) < g.channels for g in streams)
    pruned = apply_plan(model, after, keep, removed)
    assert verify(mask_model(model, after, keep, removed), pruned, inputs=1, seed=0).max_rel_diff <= 1e-4
    assert verify(model, pruned, inputs=1, seed=0, rtol=float("inf")).max_rel_diff > 1e-3
