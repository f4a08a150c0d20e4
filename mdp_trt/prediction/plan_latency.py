"""A plan's latency under the bilayer tables: each kept layer's cell at the plan's widths, summed.

A plan is given as per-group option indices (``options[g]``, the last one full width) and the
ids of the analysis blocks it removes. A layer's cell is its table entry at its output group's
option and its input group's option (column 1 for a layer fed by the graph input, whose tables
have two columns). Calibrated tables (``Calibration.apply``) make the sum plus the calibration's
offset the predicted whole-model latency.
"""

from __future__ import annotations

from collections.abc import Sequence

from mdp_trt.analysis import Analysis, Layer
from mdp_trt.latency.tables import LatencyTables

__all__ = ["layer_cell", "layer_cells", "table_sum"]


def layer_cell(tables: LatencyTables, layer: Layer, options: Sequence[int]) -> float:
    """The layer's table entry at the per-group option indices ``options``."""
    column = 1 if layer.in_group is None else options[layer.in_group]
    return tables.layer_latency(layer.name, options[layer.out_group], column)


def layer_cells(analysis: Analysis, tables: LatencyTables, options: Sequence[int]
                ) -> dict[str, float]:
    """Every layer's cell at ``options`` by layer name (removed blocks' layers included)."""
    return {layer.name: layer_cell(tables, layer, options) for layer in analysis.layers}


def table_sum(analysis: Analysis, tables: LatencyTables, options: Sequence[int],
              removed: frozenset[int] = frozenset()) -> float:
    """The sum of the cells of every layer outside the ``removed`` blocks, in ms."""
    return sum(layer_cell(tables, layer, options) for layer in analysis.layers
               if layer.block is None or layer.block not in removed)
