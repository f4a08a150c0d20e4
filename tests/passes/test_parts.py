"""Groups made of parts: a part of a split layer output tied by an Add to another layer (YOLO's
C2f, CSP and Ghost blocks), traced as one group whose producers cover parts of it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import helper
from torch import nn

from mdp_trt.analysis import Analysis, layer_out_widths
from mdp_trt.errors import InputError
from mdp_trt.graph import load_model
from mdp_trt.importance import Importance
from mdp_trt.latency.tables.bilayer import plan_cells
from mdp_trt.passes import analyze, apply_plan, mask_model, verify
from mdp_trt.passes.parts import Layout, ShiftedUnionFind, tie
from mdp_trt.solve.formulate import decode_plan, removable_blocks
from tests import onnx_graphs as G
from tests.test_cli import run


def test_tie_reads_the_shift_between_two_layouts_of_one_tensor():
    # A split's second half (channels 16..31 of its producer) where a bottleneck's 16 sit.
    half = Layout(axis=1, first=16, width=16)
    assert tie(half, Layout(axis=1, width=16)) == (True, 16)
    assert tie(Layout(axis=1, width=16), half) == (True, -16)
    assert tie(Layout(axis=1, offset=16, width=8), Layout(axis=1, width=8)) == (False, None)
    # Every other channel of a shuffled tensor against consecutive ones: no shift ties them.
    assert tie(Layout(axis=1, width=8, step=2), Layout(axis=1, width=8)) == (True, None)


def test_shifted_union_find_turns_a_channel_in_two_places_into_a_period():
    uf = ShiftedUnionFind()
    a, b, c, d = uf.add(), uf.add(), uf.add(), uf.add()
    assert uf.union(b, a, 16) and uf.union(c, b, 4)  # c's 0 is b's 4 is a's 20
    assert uf.find(c) == (a, 20) and uf.periods[a] == 0
    assert uf.union(c, a, 20)  # consistent: nothing changes
    assert not uf.union(a, a, 16) and uf.periods[a] == 16  # an Add of both halves of one output
    assert uf.union(c, a, 36)  # 20 + 16: the same channel one period on
    assert not uf.union(c, a, 28) and uf.periods[a] == 8  # gcd(16, 8)
    uf.union(d, d, 6)  # a period of its own joins by the gcd
    assert uf.union(d, a) and uf.periods[uf.find(d)[0]] == 2


# --- the reported module: conv, chunk(2), residual on the second half, concat, 1x1 conv -------


class Conv(nn.Module):
    """YOLO's Conv block: conv, BatchNorm, SiLU."""

    def __init__(self, cin: int, cout: int, k: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, padding=k // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.SiLU()
        with torch.no_grad():  # trained-looking statistics, so folding is not the identity
            self.bn.weight.uniform_(0.5, 1.5)
            self.bn.bias.normal_(0, 0.1)
            self.bn.running_mean.normal_(0, 0.1)
            self.bn.running_var.uniform_(0.5, 1.5)

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class SplitResidualConcat(nn.Module):
    """C2f with one bottleneck: the second half plus conv(conv(second half)), concatenated with
    both halves."""

    def __init__(self):
        super().__init__()
        self.stem, self.cv1 = Conv(3, 16, 3), Conv(16, 32)
        self.m1, self.m2 = Conv(16, 16, 3), Conv(16, 16, 3)
        self.cv2 = Conv(48, 24)

    def forward(self, x):
        a, b = self.cv1(self.stem(x)).chunk(2, dim=1)
        return self.cv2(torch.cat([a, b, b + self.m2(self.m1(b))], 1))


@pytest.fixture(scope="module", params=[False, True], ids=["torchscript", "dynamo"])
def split_residual(request, tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("c2f") / "c2f.onnx"
    G.export_module(SplitResidualConcat().eval(), path, input_shape=(1, 3, 32, 32),
                    dynamo=request.param, opset=17)
    return path


def _producers(analysis: Analysis, group) -> list[tuple[int, int]]:
    """(first channel, width) of each producer of ``group``."""
    layers = [analysis.layer(name) for name in group.producers]
    return [(layer.out_first, layer.signature.out_channels) for layer in layers]


def test_the_bottleneck_produces_the_second_half_of_the_split_conv(split_residual):
    model = load_model(split_residual)
    analysis = analyze(model, str(split_residual))
    (tied,) = [g for g in analysis.groups if len(g.producers) == 2]
    assert tied.prunable and tied.channels == 32 and tied.divisions == 2
    assert _producers(analysis, tied) == [(0, 32), (16, 16)]
    assert [g.prunable for g in analysis.groups] == [True, True, True, False]  # cv2: the output
    plan_cells(analysis, 8)  # the latency tables accept every layer's widths
    for seed in range(3):
        keep, removed = G.random_plan(analysis, seed)
        pruned = apply_plan(model, analysis, keep, removed)
        verify(mask_model(model, analysis, keep, removed), pruned, inputs=1, seed=seed)


@pytest.mark.slow
def test_analyze_and_prune_agree_on_the_split_residual_module(split_residual, tmp_path, capsys,
                                                              fast_prune):
    code, text = run(["analyze", str(split_residual)], capsys)
    assert code == 0, text
    out = tmp_path / "out"
    code, text = run(["prune", str(split_residual), "--budget", "0.95", "--group-size", "8",
                      "--cache", str(tmp_path / "c.sqlite"), "-o", str(out), "--allow-over"],
                     capsys)
    assert code == 0, text
    report = json.loads((out / "report.json").read_text())
    assert report["verification"]["max_rel_diff"] <= 1e-4


def test_a_layer_added_onto_a_concatenation_produces_each_concatenated_group(tmp_path):
    b = G.GraphBuilder((1, 3, 8, 8))
    cat = b.node("Concat", [b.conv("image", 3, 4, "conv1"), b.conv("image", 3, 4, "conv2")], "concat", axis=1)
    y = b.conv(b.node("Relu", [b.conv(cat, 8, 6, "conv3")], "relu3"), 6, 8, "conv4")
    G.head(b, b.node("Relu", [b.node("Add", [cat, y], "add")], "relu"), 8)
    model, path = G.load(b.model(), tmp_path)
    analysis = analyze(model, str(path))
    (tied,) = [g for g in analysis.groups if len(g.producers) == 3]
    assert tied.prunable and tied.divisions == 2
    assert _producers(analysis, tied) == [(0, 4), (4, 4), (0, 8)]
    for seed in range(2):
        keep, _ = G.random_plan(analysis, seed)
        verify(mask_model(model, analysis, keep), apply_plan(model, analysis, keep), inputs=1, seed=seed)


def test_an_add_of_both_halves_of_one_output_makes_a_periodic_group(tmp_path):
    """low + high: channel c and c + 4 of conv1 are one channel, cut together."""
    b = G.GraphBuilder((1, 3, 8, 8))
    x = b.conv("image", 3, 8, "conv1")
    sizes = b.const("sizes", np.array([4, 4], np.int64))
    b.nodes.append(helper.make_node("Split", [x, sizes], ["low", "high"], name="split", axis=1))
    G.head(b, b.conv(b.node("Add", ["low", "high"], "add"), 4, 6, "conv2"), 6)
    model, path = G.load(b.model(), tmp_path)
    analysis = analyze(model, str(path))
    group = analysis.groups[analysis.layer("conv1").out_group]
    assert group.prunable and group.periodic and group.channels == 4
    assert analysis.layer("conv2").in_group == group.id
    plan_cells(analysis, 2)
    for seed in range(3):
        keep, removed = G.random_plan(analysis, seed)
        verify(mask_model(model, analysis, keep, removed), apply_plan(model, analysis, keep, removed))
    # Keeping group channel 1 keeps conv1's outputs 1 and 5.
    pruned = apply_plan(model, analysis, {group.id: [1]}, set())
    weight = next(n for n in pruned.graph if n.name == "conv1").inputs[1].const_value.numpy()
    original = next(n for n in model.graph if n.name == "conv1").inputs[1].const_value.numpy()
    assert np.array_equal(weight, original[[1, 5]])


def test_overlapping_parts_that_do_not_repeat_keep_their_group_whole(tmp_path):
    """Slices [0:3] and [2:5] of a 7-channel output added: channel c is channel c + 2, which
    7 channels cannot hold in whole periods."""
    b = G.GraphBuilder((1, 3, 8, 8))
    x = b.conv("image", 3, 7, "conv1")
    low = b.node("Slice", [x, b.const("s0", np.array([0])), b.const("e0", np.array([3])), b.const("ax", np.array([1]))], "low")
    high = b.node("Slice", [x, b.const("s1", np.array([2])), b.const("e1", np.array([5])), "ax"], "high")
    G.head(b, b.conv(b.node("Add", [low, high], "add"), 3, 6, "conv2"), 6)
    model, path = G.load(b.model(), tmp_path)
    analysis = analyze(model, str(path))
    group = analysis.groups[analysis.layer("conv1").out_group]
    assert not group.prunable and "lines up channels of the group with other channels of it" in group.reason
    plan_cells(analysis, 2)


def test_a_part_that_cannot_be_pruned_is_kept_and_the_rest_of_its_group_is_cut(tmp_path):
    """The bottleneck's sum (channels 4-7 of conv1's group) is also a graph output: those
    channels are kept by every plan, conv1's first half is still pruned."""
    b = G.GraphBuilder((1, 3, 8, 8))
    x = b.node("Relu", [b.conv("image", 3, 8, "conv1")], "relu1")
    b.nodes.append(helper.make_node("Split", [x, b.const("sizes", np.array([4, 4], np.int64))], ["low", "high"],
                                    name="split", axis=1))
    y = b.conv(b.node("Relu", [b.conv("high", 4, 3, "conv_a")], "relu_a"), 3, 4, "conv_b")
    total = b.node("Add", ["high", y], "add")
    b.output(total, [1, 4, 8, 8])
    cat = b.node("Concat", ["low", "high", total], "concat", axis=1)
    G.head(b, b.node("Relu", [b.conv(cat, 12, 6, "fuse")], "relu_fuse"), 6)
    model, path = G.load(b.model(), tmp_path)
    analysis = analyze(model, str(path))
    group = analysis.groups[analysis.layer("conv1").out_group]
    assert group.prunable and group.pinned == ((4, 8),) and "graph output" in group.pinned_reason
    assert _producers(analysis, group) == [(0, 8), (4, 4)] and group.options(1) == [0, 5, 6, 7, 8]
    assert layer_out_widths(analysis.layer("conv_b"), group, group.options(1)) == [0, 4, 4, 4, 4]
    # Ranked first, the pinned channels are in every option's importance.
    importance = Importance("test", {layer.name: tuple(map(float, range(layer.signature.out_channels)))
                                     for layer in analysis.layers})
    assert importance.ranking(analysis, group.id) == [4, 5, 6, 7, 3, 2, 1, 0]
    assert importance.cumulative(analysis, "conv_b", group.options(1)) == [0, 6, 6, 6, 6]
    assert importance.cumulative(analysis, "conv1", group.options(1)) == [0, 25, 27, 28, 28]
    plan_cells(analysis, 1)
    assert Analysis.from_json(json.loads(json.dumps(analysis.to_json()))) == analysis
    with pytest.raises(InputError, match=r"drops channels \[5\].*graph output"):
        apply_plan(model, analysis, {group.id: [0, 4, 6, 7]})
    keep = {group.id: [1, 4, 5, 6, 7]}
    pruned = apply_plan(model, analysis, keep)
    verify(mask_model(model, analysis, keep), pruned, inputs=1)
    assert {n.name: n.inputs[1].const_value.shape[0] for n in pruned.graph if n.op_type == "Conv"}["conv1"] == 5


# --- random variants ---------------------------------------------------------------------------


class _Variant:
    """A graph under construction: one producer split into parts (Split or Slices) of random
    sizes, parts split again, residual Adds on parts (a bottleneck of the part, or a part of
    another layer's split output), parts through a Softmax over the channels (pinned),
    everything concatenated into one conv and a head.

    Sizes are multiples of ``unit``, so that the tied groups keep blocks of that many channels
    (with unit 1 most groups would keep their channels one block each: prunable, but not by
    plans that keep the same count per block)."""

    def __init__(self, draw, seed: int, unit: int):
        self.draw, self.b, self.count, self.unit = draw, G.GraphBuilder((1, 3, 8, 8), seed=seed), 0, unit

    def name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def split(self, x: str, channels: int) -> list[tuple[str, int]]:
        """``x`` cut into 2-3 parts of random sizes, by a Split or by one Slice per part."""
        units = channels // self.unit
        cuts = sorted(self.draw(st.sets(st.integers(1, units - 1), min_size=1, max_size=min(2, units - 1))))
        bounds = [0, *(c * self.unit for c in cuts), channels]
        name = self.name("split")
        outputs = [f"{name}_{i}" for i in range(len(bounds) - 1)]
        if self.draw(st.booleans()):
            sizes = self.b.const(f"{name}.sizes", np.diff(bounds).astype(np.int64))
            self.b.nodes.append(helper.make_node("Split", [x, sizes], outputs, name=name, axis=1))
        else:
            for out, start, end in zip(outputs, bounds, bounds[1:]):
                consts = [self.b.const(f"{out}.{k}", np.array([v], np.int64))
                          for k, v in (("starts", start), ("ends", end), ("axes", 1))]
                self.b.nodes.append(helper.make_node("Slice", [x, *consts], [out], name=out))
        return list(zip(outputs, np.diff(bounds).tolist()))

    def parts(self, x: str, channels: int, depth: int = 0) -> list[tuple[str, int]]:
        """The tensors (and widths) that end up concatenated from ``x``."""
        kept = []
        for part, width in self.split(x, channels):
            kinds = ["keep", "bottleneck", "cross", "softmax"] + (["nested"] if depth == 0 and width > self.unit else [])
            kind = self.draw(st.sampled_from(kinds))
            if kind == "nested":
                kept += self.parts(part, width, depth + 1)
            elif kind == "bottleneck":  # C2f: the part and the part plus conv(conv(part))
                mid = self.draw(st.integers(1, 6))
                y = self.b.node("Relu", [self.b.conv(part, width, mid, self.name("m"))], self.name("relu"))
                kept += [(part, width), (self.b.node("Add", [part, self.b.conv(y, mid, width, self.name("m"))],
                                                     self.name("add")), width)]
            elif kind == "cross":  # tied to a part of another layer's split output
                extra = self.unit * self.draw(st.integers(1, 3))
                other = self.b.conv("image", 3, width + extra, self.name("q"))
                pieces = self.split_at(other, width, extra, self.draw(st.booleans()))
                kept += [(self.b.node("Add", [part, pieces[0]], self.name("add")), width), (pieces[1], extra)]
            elif kind == "softmax":  # mixes the part's channels: they are kept whole
                kept.append((self.b.node("Softmax", [part], self.name("softmax"), axis=1), width))
            else:
                kept.append((part, width))
        return kept

    def split_at(self, x: str, width: int, extra: int, first: bool) -> tuple[str, str]:
        """``x`` split into ``width`` and ``extra`` channels (the ``width`` part first or last)."""
        name = self.name("split")
        sizes = [width, extra] if first else [extra, width]
        self.b.nodes.append(helper.make_node("Split", [x, self.b.const(f"{name}.sizes", np.array(sizes, np.int64))],
                                             [f"{name}_0", f"{name}_1"], name=name, axis=1))
        return (f"{name}_0", f"{name}_1") if first else (f"{name}_1", f"{name}_0")


@st.composite
def split_variants(draw):
    unit = draw(st.integers(1, 3))
    variant = _Variant(draw, draw(st.integers(0, 2**16)), unit)
    b, channels = variant.b, unit * draw(st.integers(2, 6))
    x = b.node("Relu", [b.conv("image", 3, channels, "producer")], "producer_relu")
    kept = variant.parts(x, channels)
    total = sum(width for _, width in kept)
    cat = b.node("Concat", [t for t, _ in kept], "concat", axis=1)
    G.head(b, b.node("Relu", [b.conv(cat, total, 6, "fuse", k=1)], "fuse_relu"), 6)
    return b.model()


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(proto=split_variants(), seed=st.integers(0, 100))
def test_random_split_variants_are_consistent_and_prune_like_the_masked_original(tmp_path_factory, proto, seed):
    model, path = G.load(proto, tmp_path_factory.mktemp("variant"))
    analysis = analyze(model, str(path))  # checks every layer's widths against its groups
    plan_cells(analysis, 1)
    output = analysis.layer("fc").out_group
    for group in analysis.groups:  # only a Softmax keeps channels (and the output the logits)
        why = group.pinned_reason if group.prunable else group.reason
        assert group.id == output or why is None or "Softmax" in why, why
    keep, _ = G.random_plan(analysis, seed)
    verify(mask_model(model, analysis, keep), apply_plan(model, analysis, keep), inputs=1, seed=seed)
    # A solver's plan, decoded: every layer is as wide as its latency table says.
    rng = np.random.default_rng(seed)
    importance = Importance("random", {layer.name: tuple(rng.random(layer.signature.out_channels))
                                       for layer in analysis.layers})
    options = [int(rng.integers(1, len(g.options(1)))) for g in analysis.groups]
    kept = [g.options(1)[k] for g, k in zip(analysis.groups, options)]
    decoded = decode_plan(analysis, importance, 1, options, [1] * (len(removable_blocks(analysis)) + 1))
    pruned = apply_plan(model, analysis, decoded.keep)
    verify(mask_model(model, analysis, decoded.keep), pruned, inputs=1, seed=seed)
    weights = {node.name: node.inputs[1].const_value.shape for node in pruned.graph if node.name in
               {layer.name for layer in analysis.layers}}
    for layer in analysis.layers:
        (width,) = layer_out_widths(layer, analysis.groups[layer.out_group], [kept[layer.out_group]])
        assert weights[layer.name][0] == width, layer.name
        if layer.in_group is not None:
            assert weights[layer.name][1] == kept[layer.in_group] * layer.in_stride, layer.name
