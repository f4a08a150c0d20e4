"""A cell of a bilayer table: one layer signature at one (out, in) width pair."""

from __future__ import annotations

from dataclasses import dataclass

from mdp_trt.signature import LayerSignature

__all__ = ["Cell"]


@dataclass(frozen=True)
class Cell:
    """One measurement: a layer signature at given output and input widths (channels >= 1)."""

    signature: LayerSignature
    out_channels: int
    in_channels: int

    def key(self) -> tuple[str, int, int]:
        return self.signature.key(), self.out_channels, self.in_channels
