"""Random small CNNs mixing the patterns users' exporters produce (hypothesis): each is exported
with torch.onnx, analysed, pruned with a random valid plan and checked against the masked
original in ORT. Patterns: plain conv-BN-act, residual blocks, inverted residuals with depthwise
convs and squeeze-excitation, grouped convs, dense and inception-style concatenations, split
halves, ShuffleNetV2 units (channel shuffle; the strided unit's depthwise conv reads the
shuffled tensor), ConvNeXt-style channel-last MLPs, pooling, Pad and Resize, and heads with
global pooling or a Flatten over a spatial map.

Every group must either be prunable or carry a reason; groups are only allowed to be pinned
by the patterns that pin them by design (LayerNorm over the channels) and by the classifier
reaching the graph output.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from mdp_trt.graph import load_model
from mdp_trt.graph.torch_graph import TorchGraph
from mdp_trt.passes import analyze, apply_plan, mask_model, verify
from tests import onnx_graphs as G

ACTIVATIONS = {"relu": nn.ReLU, "relu6": nn.ReLU6, "hardswish": nn.Hardswish, "silu": nn.SiLU, "gelu": nn.GELU}
# Patterns that keep the channels around them whole by design.
PINNING = {"convnext"}
# Patterns whose output interleaves groups (a channel shuffle puts every other channel of each).
INTERLEAVING = {"shuffle", "shuffle_down"}
RESIDUAL = {"residual", "inverted", "grouped"}


def _all_prunable_expected(kinds: list[str]) -> bool:
    """False where a known limitation pins groups: LayerNorm over channels, or a residual Add
    that joins a shuffled tensor with one layer's output, which would tie every other channel
    of that layer to another group (an interleaving; ties are shifts, ``passes.parts``). An Add
    that joins a concatenation with one layer's output is traced: that layer produces the
    concatenated groups, tied at their offsets."""
    if PINNING & set(kinds):
        return False
    interleaved = False
    for kind in kinds:
        if kind in RESIDUAL and interleaved:
            return False
        if kind in INTERLEAVING:
            interleaved = True
        elif kind == "plain":
            interleaved = False
    return True


def _bn(c: int) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(c)
    with torch.no_grad():  # trained-looking statistics, so folding is not the identity
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_(0, 0.1)
        bn.running_mean.normal_(0, 0.1)
        bn.running_var.uniform_(0.5, 1.5)
    return bn


def _cba(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: str = "relu") -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), _bn(cout), ACTIVATIONS[act]())


class Residual(nn.Module):
    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x):
        return x + self.body(x)


class SqueezeExcite(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, max(2, c // 4), 1), nn.Conv2d(max(2, c // 4), c, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean((2, 3), keepdim=True)))))


class Dense(nn.Module):
    def __init__(self, c: int, growth: int, act: str):
        super().__init__()
        self.conv = _cba(c, growth, 3, act=act)

    def forward(self, x):
        return torch.cat([x, self.conv(x)], 1)


class Inception(nn.Module):
    def __init__(self, c: int, w: int, act: str):
        super().__init__()
        self.a = _cba(c, w, 1, act=act)
        self.b = nn.Sequential(_cba(c, w, 1, act=act), _cba(w, w, 3, act=act))
        self.c = nn.Sequential(nn.MaxPool2d(3, 1, 1), _cba(c, w, 1, act=act))

    def forward(self, x):
        return torch.cat([self.a(x), self.b(x), self.c(x)], 1)


class SplitHalf(nn.Module):
    def __init__(self, c: int, act: str, shuffle: bool):
        super().__init__()
        self.half, self.shuffle = c // 2, shuffle
        self.branch = _cba(c - c // 2, c - c // 2, 3, act=act)

    def forward(self, x):
        a, b = torch.split(x, [self.half, x.shape[1] - self.half], 1)
        y = torch.cat([a, self.branch(b)], 1)
        return _shuffle(y) if self.shuffle else y


def _shuffle(y: torch.Tensor) -> torch.Tensor:
    n, c, h, w = y.shape
    return y.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleDown(nn.Module):
    """ShuffleNetV2's strided unit (at stride 1): both branches read the whole input, the
    first through a depthwise conv."""

    def __init__(self, c: int, act: str):
        super().__init__()
        self.branch1 = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False), _bn(c), _cba(c, c, 1, act=act))
        self.branch2 = nn.Sequential(_cba(c, c, 1, act=act), nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False),
                                     _bn(c), _cba(c, c, 1, act=act))

    def forward(self, x):
        return _shuffle(torch.cat([self.branch1(x), self.branch2(x)], 1))


class ConvNeXtBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.norm, self.fc1, self.fc2 = nn.LayerNorm(c), nn.Linear(c, 4 * c), nn.Linear(4 * c, c)
        self.gamma = nn.Parameter(torch.rand(c) + 0.5)

    def forward(self, x):
        y = self.norm(self.dw(x).permute(0, 2, 3, 1))
        y = self.gamma * self.fc2(nn.functional.gelu(self.fc1(y)))
        return x + y.permute(0, 3, 1, 2)


class PadResize(nn.Module):
    def forward(self, x):
        x = nn.functional.pad(x, (1, 1, 1, 1))
        return nn.functional.interpolate(x, scale_factor=0.5, mode="nearest")


def _bottleneck(draw, c: int, mid: int, groups: int, act) -> nn.Module:
    """1x1 expand, grouped 3x3 (optionally squeeze-excited), 1x1 project, around an identity."""
    body = [_cba(c, mid, 1, act=act), _cba(mid, mid, 3, groups=groups, act=act)]
    if draw(st.booleans()):
        body.append(SqueezeExcite(mid))
    body += [nn.Conv2d(mid, c, 1, bias=False), _bn(c)]
    return Residual(nn.Sequential(*body))


def _block(kind: str, c: int, draw, act: str) -> tuple[nn.Module, int]:
    """A block of ``kind`` reading ``c`` channels, and its output width."""
    if kind == "plain":
        out = draw(st.integers(4, 12))
        return _cba(c, out, draw(st.sampled_from([1, 3])), act=act), out
    if kind == "residual":
        mid = draw(st.integers(3, 10))
        return Residual(nn.Sequential(_cba(c, mid, 3, act=act), nn.Conv2d(mid, c, 3, padding=1), _bn(c))), c
    if kind == "inverted":  # MobileNetV2: expand, depthwise, project
        mid = c * draw(st.integers(2, 3))
        return _bottleneck(draw, c, mid, mid, act), c
    if kind == "grouped":  # ResNeXt: the 3x3 conv in a few channel groups
        groups = draw(st.sampled_from([2, 4]))
        return _bottleneck(draw, c, groups * draw(st.integers(1, 3)), groups, act), c
    if kind == "dense":
        growth = draw(st.integers(2, 6))
        return Dense(c, growth, act), c + growth
    if kind == "inception":
        w = draw(st.integers(2, 5))
        return Inception(c, w, act), 3 * w
    if kind in ("split", "shuffle"):
        c2 = c + c % 2
        pre = _cba(c, c2, 1, act=act) if c2 != c else nn.Identity()
        return nn.Sequential(pre, SplitHalf(c2, act, kind == "shuffle")), c2
    if kind == "shuffle_down":
        return ShuffleDown(c, act), 2 * c
    if kind == "convnext":
        return ConvNeXtBlock(c), c
    if kind == "pool":
        return nn.MaxPool2d(2), c
    if kind == "pad_resize":
        return PadResize(), c
    raise AssertionError(kind)


KINDS = ["plain", "residual", "inverted", "grouped", "dense", "inception", "split", "shuffle",
         "shuffle_down", "convnext", "pool", "pad_resize"]


@st.composite
def architectures(draw):
    """(module, input shape, block kinds): a stem, 2-4 random blocks and a head."""
    act = draw(st.sampled_from(sorted(ACTIVATIONS)))
    kinds = draw(st.lists(st.sampled_from(KINDS), min_size=2, max_size=4))
    c = draw(st.integers(4, 10))
    layers = [_cba(3, c, 3, act=act)]
    size = 16
    for kind in kinds:
        block, c = _block(kind, c, draw, act)
        layers.append(block)
        if kind == "pool":
            size //= 2
        elif kind == "pad_resize":
            size = (size + 2) // 2
    if draw(st.booleans()) or size < 2:  # global pooling head
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 5)]
    else:  # VGG-style: the Linear reads channel x spatial columns
        kernel = size // 2  # TorchScript cannot export adaptive pooling after a Resize
        side = (size - kernel) // kernel + 1
        layers += [nn.AvgPool2d(kernel), nn.Flatten(), nn.Linear(side * side * c, 6), nn.ReLU(), nn.Linear(6, 5)]
    seed = draw(st.integers(0, 2**16))
    torch.manual_seed(seed)
    model = nn.Sequential(*layers).eval()
    return model, (1, 3, 16, 16), kinds, seed


@pytest.mark.slow
@settings(max_examples=20, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(arch=architectures(), dynamo=st.booleans())
def test_random_architecture_prunes_like_the_masked_original(tmp_path_factory, arch, dynamo):
    model, shape, kinds, seed = arch
    path = tmp_path_factory.mktemp("random") / "model.onnx"
    G.export_module(model, path, input_shape=shape, dynamo=dynamo)
    onnx_model = load_model(path)
    analysis = analyze(onnx_model, str(path))
    output_groups = {analysis.layers[-1].out_group}
    for group in analysis.groups:
        assert group.prunable == (group.reason is None)
        if _all_prunable_expected(kinds) and group.id not in output_groups:
            assert group.prunable, (kinds, group.name, group.reason)
    keep, removed = G.random_plan(analysis, seed)
    pruned = apply_plan(onnx_model, analysis, keep, removed)
    result = verify(mask_model(onnx_model, analysis, keep, removed), pruned, inputs=1, seed=seed)
    assert result.max_rel_diff <= 1e-4, kinds


@pytest.mark.parametrize("dynamo", [True, False])
def test_shufflenet_units_prune_through_the_shuffle(tmp_path, dynamo):
    """ShuffleNetV2's pattern: a strided unit (its depthwise conv reads a shuffled tensor that
    holds parts of several groups), a unit that splits the shuffled tensor in halves. Every
    group but the classifier's is prunable; surgery turns each shuffle into a Gather."""
    torch.manual_seed(0)
    model = nn.Sequential(_cba(3, 8), ShuffleDown(8, "relu"), SplitHalf(16, "relu", True),
                          ShuffleDown(16, "relu"), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 5)).eval()
    path = G.export_module(model, tmp_path / "shuffle.onnx", input_shape=(1, 3, 16, 16), dynamo=dynamo)
    onnx_model = load_model(path)
    analysis = analyze(onnx_model, str(path))
    pinned = [g for g in analysis.groups if not g.prunable]
    assert [g.id for g in pinned] == [analysis.layers[-1].out_group], [g.reason for g in pinned]
    for seed in range(3):
        keep, removed = G.random_plan(analysis, seed)
        pruned = apply_plan(onnx_model, analysis, keep, removed)
        ops = [n.op_type for n in pruned.graph]
        assert ops.count("Gather") == 3 and "Transpose" not in ops
        result = verify(mask_model(onnx_model, analysis, keep, removed), pruned, inputs=1, seed=seed)
        assert result.max_rel_diff <= 1e-4
    # Fine-tuning runs the pruned graph in PyTorch: its Gathers must compute what ORT does.
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        got = TorchGraph.from_model(pruned)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, G.run(pruned, x)[0], rtol=1e-4, atol=1e-5)
