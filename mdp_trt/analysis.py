"""The result of the analysis pass: layers, channel groups and residual blocks of a graph.

This is a plain, serialisable description; it never holds graph objects, only names, so it can be
saved (``analyze --json``) and used later against the same ONNX file.

Invariants:
- ``groups[i].id == i`` and ``blocks[i].id == i`` (ids are positions);
- every prunable layer's output channels are channels ``[out_first, out_first + out_channels)``
  of exactly one group (``Layer.out_group``; a part of it when the layer is tied to a part of
  another layer's output, e.g. a bottleneck added onto half of a split), a whole number of the
  group's ``divisions`` blocks when it is prunable, so that the layer keeps the group's fraction
  (``layer_out_widths``); in a ``periodic`` group (GhostNet's streams) a layer may instead hold
  whole copies of it, its channel c being group channel ``(out_first + c) % channels``; its
  input channels belong to ``Layer.in_group`` (None when the input
  is a graph input such as the image, or is not exactly one whole group, e.g. a concatenation);
  ``check_layer`` checks both;
- a layer's input width is always ``in_stride * (sum(kept channels of g for g in in_groups) +
  in_fixed)``: ``in_groups`` are the whole groups its input concatenates, in channel order,
  ``in_fixed`` the channels that no group explains (the image, a part of a group after a Split),
  and ``in_stride`` the weight columns per channel (H*W for a Gemm after a Flatten, else 1);
- a group with ``prunable=False`` keeps all channels and carries a human ``reason``; a prunable
  one may pin whole blocks (``pinned``, with ``pinned_reason``) that every plan keeps;
- a block with ``removable=True`` is a branch whose Add's other input is an identity skip from
  the same fork; removing it makes the Add output equal its skip input.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from mdp_trt.errors import InputError
from mdp_trt.signature import LayerSignature

__all__ = ["Layer", "ChannelGroup", "Block", "Analysis", "option_channels", "layer_out_widths",
           "check_layer", "limit_options", "kept_structure",
           "check_max_options", "nothing_to_prune", "require_prunable"]

FORMAT = "mdp-analysis/1"


def option_channels(channels: int, group_size: int, prunable: bool = True) -> list[int]:
    """Channel count of each option k = 0..K of a group (k units of ``group_size``, capped).

    Option 0 (no channel) is listed so that indices match the problem format; it is never chosen.
    An unprunable group has exactly one real option: all channels.
    """
    if not prunable or group_size >= channels:
        return [0, channels]
    units = -(-channels // group_size)
    return [min(k * group_size, channels) for k in range(units + 1)]


@dataclass(frozen=True)
class Layer:
    """A Conv/Gemm/MatMul whose weight is a constant with an output and an input channel axis."""

    name: str  # ONNX node name
    op_type: str
    weight: str  # initializer name of the weight
    out_group: int
    in_group: int | None
    block: int | None  # id of the removable block that contains it, if any
    signature: LayerSignature
    in_groups: tuple[int, ...] = ()  # groups concatenated on its input, in channel order
    in_fixed: int = 0  # input channels that no group explains (never pruned)
    in_stride: int = 1  # weight input columns per input channel (H*W after a Flatten)
    out_first: int = 0  # the group channel of its first output channel (it may produce a part)
    # The attention core timed with this layer (``LayerSignature.attention``): its nodes' names,
    # so that the layer's in-model time in a profile is its own node's plus theirs.
    core_nodes: tuple[str, ...] = ()

    def to_json(self) -> dict:
        data = asdict(self)
        data["signature"] = self.signature.to_json()
        return data

    @classmethod
    def from_json(cls, data: dict) -> "Layer":
        return cls(**{**data, "signature": LayerSignature.from_json(data["signature"]),
                      "in_groups": tuple(data.get("in_groups", ())),
                      "core_nodes": tuple(data.get("core_nodes", ()))})


@dataclass(frozen=True)
class ChannelGroup:
    """Channels that must be kept or removed together (coupled through Add, BN, depthwise...)."""

    id: int
    name: str
    channels: int
    producers: tuple[str, ...]  # layers whose output channels are this group
    consumers: tuple[str, ...]  # layers whose input channels are this group
    prunable: bool = True
    reason: str | None = None  # why not prunable
    tensors: tuple[str, ...] = ()  # tensors carrying exactly these channels (debugging view)
    # Grouped convolutions read/write the channels in this many equal consecutive blocks, and
    # layers producing a part of the group cover whole blocks; a plan should keep the same number
    # in each block (surgery pads one that does not for grouped convs: the padded channels are
    # computed and zeroed at their consumers, sound but not faster; a part's producer then only
    # strays from its latency table).
    divisions: int = 1
    # Set by ``limit_options``: this group is cut in units this many times the group size.
    unit_multiple: int = 1
    # Channels [start, stop) that every plan keeps although the group is prunable (a part of
    # it that reaches an op mixing its channels, say): whole blocks, kept by every option.
    pinned: tuple[tuple[int, int], ...] = ()
    pinned_reason: str | None = None  # why they are kept
    # Periodic group (a Ghost module's stream): a layer may hold every channel several times
    # (its output channel c is group channel (out_first + c) % channels); cutting one removes
    # all its copies.
    periodic: bool = False
    # Consecutive channels kept or removed together (an attention head's channels in every
    # copy of its projections): options step in whole bundles and plans keep whole ones.
    bundle: int = 1
    # LayerNorms whose statistics run over exactly these channels (a transformer's embedding);
    # prunable only by ``analyze(prune_normalised=True)``, verified by renormalising them.
    norms: tuple[str, ...] = ()

    @property
    def pinned_channels(self) -> int:
        return sum(stop - start for start, stop in self.pinned)

    def unit(self, group_size: int) -> int:
        """Channels per option step: ``group_size`` rounded up to a multiple of the blocks that
        are not pinned (so that every conv group and every producer's part keeps the same
        count), times ``unit_multiple``."""
        free = max(1, self.divisions * (self.channels - self.pinned_channels) // self.channels)
        unit = -(-group_size // free) * free * self.unit_multiple
        return -(-unit // self.bundle) * self.bundle

    def options(self, group_size: int) -> list[int]:
        """Channel count per option k = 0..K (see ``option_channels``): the pinned channels
        plus k units of the others."""
        free = option_channels(self.channels - self.pinned_channels, self.unit(group_size), self.prunable)
        return [0] + [self.pinned_channels + c for c in free[1:]]

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "ChannelGroup":
        tuples = {"producers", "consumers", "tensors", "norms"}
        values = {k: tuple(v) if k in tuples else v for k, v in data.items()}
        values["pinned"] = tuple(tuple(span) for span in data.get("pinned", ()))
        return cls(**values)


def _group_channels(layer: Layer, group: ChannelGroup) -> np.ndarray:
    """The group channel of each of the layer's output channels (a layer of a periodic group
    holds each several times)."""
    return (layer.out_first + np.arange(layer.signature.out_channels)) % group.channels


def _pinned_in(layer: Layer, group: ChannelGroup) -> int:
    """How many of the layer's output channels its group pins."""
    channels = _group_channels(layer, group)
    return int(sum(((channels >= a) & (channels < b)).sum() for a, b in group.pinned))


def layer_out_widths(layer: Layer, group: ChannelGroup, channels: list[int]) -> list[int]:
    """The layer's output width when its group keeps each of ``channels``: its pinned channels
    and, of the others, the group's fraction (plans keep equal counts per block; a layer
    producing a part of the group keeps that fraction of its part)."""
    pinned = _pinned_in(layer, group)
    free = layer.signature.out_channels - pinned
    cut = group.channels - group.pinned_channels
    return [c and pinned + (c - group.pinned_channels) * free // cut for c in channels]


def check_layer(layer: Layer, out_group: ChannelGroup, in_group: ChannelGroup | None) -> None:
    """Raise InputError when ``layer``'s widths do not follow its groups as the invariants say
    (the analysis that wrote them is inconsistent)."""
    width = layer.signature.out_channels
    block = -(-out_group.channels // out_group.divisions)
    free = width - _pinned_in(layer, out_group)
    # A periodic group's producers hold whole copies of it; any other layer lies inside its group.
    if out_group.periodic:
        beyond = width % out_group.channels != 0
    else:
        beyond = layer.out_first + width > out_group.channels
    if beyond or (out_group.prunable and free % block):
        raise InputError(
            f"layer {layer.name!r} has {width} output channels from channel {layer.out_first} of "
            f"its group {out_group.name!r}, which has {out_group.channels} in {out_group.divisions} "
            "equal blocks; the analysis is inconsistent")
    # A Gemm after a Flatten reads in_stride (= H*W) weight columns per channel.
    if in_group is not None and in_group.channels * layer.in_stride != layer.signature.in_channels:
        raise InputError(
            f"layer {layer.name!r} has {layer.signature.in_channels} input channels but its input "
            f"group {in_group.name!r} has {in_group.channels} x {layer.in_stride}; the analysis "
            "is inconsistent")


@dataclass(frozen=True)
class Block:
    """A residual block: the nodes of a branch joined back by an Add."""

    id: int
    name: str
    add_node: str
    skip_input: str  # the Add input that bypasses the branch
    layers: tuple[str, ...]
    nodes: tuple[str, ...]
    removable: bool
    reason: str | None = None  # why not removable (e.g. projection skip)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "Block":
        tuples = {"layers", "nodes"}
        return cls(**{k: tuple(v) if k in tuples else v for k, v in data.items()})


def check_max_options(max_options: int | None) -> None:
    if max_options is not None and max_options < 2:
        raise InputError(f"`max_options` {max_options} must be >= 2 (one option is the full "
                         "width: nothing could be pruned)", parameters=("max_options",))


def limit_options(analysis: "Analysis", group_size: int, max_options: int | None) -> "Analysis":
    """``analysis`` with each group that would have more than ``max_options`` options cut in a
    coarser unit, a multiple of its ``group_size`` unit.

    One group size for every group makes wide layers expensive: a table has one cell per
    (out, in) option pair, so VGG's 4096x4096 Gemm at 64 channels needs 4 096 one-layer models
    of 64 MB each, while its 64-channel first conv needs one. ``None`` keeps every group as is.
    """
    check_max_options(max_options)
    if max_options is None:
        return analysis
    groups = []
    for group in analysis.groups:
        base = replace(group, unit_multiple=1)
        steps = len(base.options(group_size)) - 1
        groups.append(replace(base, unit_multiple=-(-steps // max_options)))
    return replace(analysis, groups=tuple(groups))


@dataclass(frozen=True)
class Analysis:
    model: str  # path of the analysed ONNX file
    input_shape: tuple[int, ...]
    layers: tuple[Layer, ...]
    groups: tuple[ChannelGroup, ...]
    blocks: tuple[Block, ...]
    notes: tuple[str, ...] = field(default=())  # graph-wide remarks (e.g. unsupported ops seen)
    # "Op (node 'name'): why" for each Conv/Gemm/MatMul that is not a layer (a weight computed
    # at run time, no static shape, inside control flow...)
    skipped: tuple[str, ...] = field(default=())
    quantized: bool = False  # the graph holds QuantizeLinear/DequantizeLinear or QLinear ops

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "model": self.model,
            "input_shape": list(self.input_shape),
            "layers": [x.to_json() for x in self.layers],
            "groups": [x.to_json() for x in self.groups],
            "blocks": [x.to_json() for x in self.blocks],
            "notes": list(self.notes),
            "skipped": list(self.skipped),
            "quantized": self.quantized,
        }

    @classmethod
    def from_json(cls, data: dict) -> "Analysis":
        return cls(
            model=data["model"],
            input_shape=tuple(data["input_shape"]),
            layers=tuple(Layer.from_json(x) for x in data["layers"]),
            groups=tuple(ChannelGroup.from_json(x) for x in data["groups"]),
            blocks=tuple(Block.from_json(x) for x in data["blocks"]),
            notes=tuple(data.get("notes", ())),
            skipped=tuple(data.get("skipped", ())),
            quantized=bool(data.get("quantized", False)),
        )

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> "Analysis":
        return cls.from_json(json.loads(Path(path).read_text()))


SUPPORTED = ("mdp-trt prunes the channels of Conv, Gemm and MatMul layers with constant float "
             "weights, on static shapes")

# Reasons quoted in a message before "(and N more)".
_MAX_QUOTED = 3


def kept_structure(analysis: Analysis, kept: dict[str, list[int]],
                   removed_blocks: Iterable[str] = ()) -> dict[str, str]:
    """A transformer plan's heads, MLP channels and embedding channels, "kept/total" each
    (``kept``: a report's kept_channels, group name -> (kept, total); "" where it has none);
    a group produced only inside ``removed_blocks`` (names) keeps none."""
    names = set(removed_blocks)
    removed = {layer for b in analysis.blocks if b.name in names for layer in b.layers}

    def count(group: ChannelGroup) -> int:
        return 0 if set(group.producers) <= removed else kept[group.name][0]

    heads = [g for g in analysis.groups if g.bundle > 1]
    mlp = [g for g in analysis.groups if g.prunable and g.bundle == 1 and not g.norms]
    stream = [kept[g.name] for g in analysis.groups if g.norms]
    return {"heads kept": f"{sum(count(g) // g.bundle for g in heads)}/"
                          f"{sum(g.channels // g.bundle for g in heads)}" if heads else "",
            "MLP kept": f"{sum(count(g) for g in mlp)}/{sum(g.channels for g in mlp)}" if mlp else "",
            "embedding kept": "/".join(map(str, stream[0])) if stream else ""}


def _quoted(reasons: list[str]) -> str:
    more = len(reasons) - _MAX_QUOTED
    return "; ".join(reasons[:_MAX_QUOTED]) + (f" (and {more} more)" if more > 0 else "")


def nothing_to_prune(analysis: Analysis) -> str | None:
    """Why ``analysis`` has no prunable group: what mdp-trt supports and what this model lacks
    (no such layer, a quantised model, or every group kept whole, with the first reasons).
    None when some group is prunable."""
    if any(g.prunable for g in analysis.groups):
        return None
    if not analysis.layers:
        why = ("it has no such layer: " + _quoted(list(analysis.skipped)) if analysis.skipped
               else "it has no Conv, Gemm or MatMul")
    else:
        reasons = list(dict.fromkeys(f"{g.name}: {g.reason}" for g in analysis.groups))
        why = "every channel group must be kept whole (" + _quoted(reasons) + ")"
        if analysis.skipped:
            why += "; other candidates are not layers (" + _quoted(list(analysis.skipped)) + ")"
    if analysis.quantized:
        # Q/DQ pairs around every weight and activation pin all channels; the float model has
        # none, and quantisation calibrates the pruned one as it would the original.
        why += ". It is a quantised model: prune the float model, then quantise the pruned one"
    return f"nothing to prune: {SUPPORTED}; {why}"


def require_prunable(analysis: Analysis) -> None:
    """Raise InputError (with ``nothing_to_prune``'s reason) when no group is prunable."""
    why = nothing_to_prune(analysis)
    if why is not None:
        raise InputError(f"{analysis.model}: {why}")
