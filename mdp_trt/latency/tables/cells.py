"""A cell of a bilayer table: one layer signature at one (out, in) width pair."""

from __future__ import annotations

from dataclasses import dataclass

from mdp_trt.signature import LayerSignature

__all__ = ["Cell", "CellKey"]

# A cell's identity: (signature key, out_channels, in_channels)
CellKey = tuple[str, int, int]


@dataclass(frozen=True)
class Cell:
    """One measurement: a layer signature at given output and input widths (channels >= 1)."""

    signature: LayerSignature
    out_channels: int
    in_channels: int

    def key(self) -> CellKey:
        return self.signature.key(), self.out_channels, self.in_channels
