"""The result of the analysis pass: layers, channel groups and residual blocks of a graph.

This is a plain, serialisable description; it never holds graph objects, only names, so it can be
saved (``analyze --json``) and used later against the same ONNX file.

Invariants:
- ``groups[i].id == i`` and ``blocks[i].id == i`` (ids are positions);
- every prunable layer's output channels belong to exactly one group (``Layer.out_group``); its
  input channels to ``Layer.in_group`` (None when the input is a graph input such as the image,
  or is not exactly one whole group, e.g. a concatenation);
- a layer's input width is always ``in_stride * (sum(kept channels of g for g in in_groups) +
  in_fixed)``: ``in_groups`` are the whole groups its input concatenates, in channel order,
  ``in_fixed`` the channels that no group explains (the image, a part of a group after a Split),
  and ``in_stride`` the weight columns per channel (H*W for a Gemm after a Flatten, else 1);
- a group with ``prunable=False`` keeps all channels and carries a human ``reason``;
- a block with ``removable=True`` is a branch whose Add's other input is an identity skip from
  the same fork; removing it makes the Add output equal its skip input.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from mdp_trt.errors import InputError
from mdp_trt.latency.signature import LayerSignature

__all__ = ["Layer", "ChannelGroup", "Block", "Analysis", "option_channels", "limit_options",
           "check_max_options"]

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

    def to_json(self) -> dict:
        data = asdict(self)
        data["signature"] = self.signature.to_json()
        return data

    @classmethod
    def from_json(cls, data: dict) -> "Layer":
        return cls(**{**data, "signature": LayerSignature.from_json(data["signature"]),
                      "in_groups": tuple(data.get("in_groups", ()))})


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
    # Grouped convolutions read/write the channels in this many equal consecutive blocks; a plan
    # should keep the same number in each block (surgery pads one that does not: the padded
    # channels are computed and zeroed at their consumers, sound but not faster).
    divisions: int = 1
    # Set by ``limit_options``: this group is cut in units this many times the group size.
    unit_multiple: int = 1

    def unit(self, group_size: int) -> int:
        """Channels per option step: ``group_size`` rounded up to a multiple of ``divisions`` (so
        that every conv group keeps the same count), times ``unit_multiple``."""
        return -(-group_size // self.divisions) * self.divisions * self.unit_multiple

    def options(self, group_size: int) -> list[int]:
        """Channel count per option k = 0..K (see ``option_channels``)."""
        return option_channels(self.channels, self.unit(group_size), self.prunable)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "ChannelGroup":
        tuples = {"producers", "consumers", "tensors"}
        return cls(**{k: tuple(v) if k in tuples else v for k, v in data.items()})


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
    if max_options is not None and max_options < 1:
        raise InputError(f"--max-options {max_options} must be >= 1")


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
        )

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> "Analysis":
        return cls.from_json(json.loads(Path(path).read_text()))
