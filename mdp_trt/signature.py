"""What a layer's latency depends on: the key of a bilayer latency table.

Layers with equal signatures share one table (e.g. the three 3x3 convs of a ResNet stage).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TypeVar

__all__ = ["LayerSignature", "group_by_signature"]

T = TypeVar("T")


@dataclass(frozen=True)
class LayerSignature:
    """Everything a one-layer benchmark needs to reproduce a layer.

    Channel counts are the layer's full (unpruned) widths; a table cell varies them below these.
    ``input_hw`` is the spatial size of the layer's input (empty for Gemm/MatMul), ``batch`` the
    leading dimension. ``conv_group`` is the Conv ``group`` attribute (1 for a dense conv, equal
    to the channel count for a depthwise conv, whose input and output widths move together).
    ``activation`` is the op fused after the layer in the real graph (e.g. ``"Relu"``) or None.
    ``attention`` (tokens, head width, copies): the layer's output opens an attention core (its
    ``copies`` of q/k/v split into heads, q k^T, softmax, @ v, heads merged), which the cell
    times with it, so that a head's cost is in the table of the layer that produces it.
    """

    op_type: str
    out_channels: int
    in_channels: int
    kernel: tuple[int, ...] = ()
    strides: tuple[int, ...] = ()
    pads: tuple[int, ...] = ()
    dilations: tuple[int, ...] = ()
    conv_group: int = 1
    input_hw: tuple[int, ...] = ()
    batch: int = 1
    dtype: str = "float32"
    bias: bool = True
    activation: str | None = None
    attention: tuple[int, ...] = ()

    @property
    def depthwise(self) -> bool:
        return self.conv_group > 1 and self.conv_group == self.in_channels == self.out_channels

    def key(self) -> str:
        """A stable text key (sorted JSON) used by the cache and to share tables."""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))

    def to_json(self) -> dict:
        data = asdict(self)
        if not self.attention:
            del data["attention"]  # so the cache keys of every other layer stay as they were
        return data

    @classmethod
    def from_json(cls, data: dict) -> "LayerSignature":
        tuples = {"kernel", "strides", "pads", "dilations", "input_hw", "attention"}
        return cls(**{k: tuple(v) if k in tuples else v for k, v in data.items()})


def group_by_signature(cells: Iterable[T]) -> list[list[T]]:
    """``cells`` (anything with a ``signature``) grouped by signature key, groups and cells in
    first-seen order: the cells of one shared table."""
    groups: dict[str, list[T]] = {}
    for cell in cells:
        groups.setdefault(cell.signature.key(), []).append(cell)
    return list(groups.values())
