"""Bilayer latency tables: which cells a model needs, measuring them (locally, under a drift
guard, or on Ray workers), their persistent cache, which cells to time (all, adaptive, an
interpolation grid) and filling untimed cells (fitted surfaces, staircases, interpolation)."""

from mdp_trt.latency.tables.bilayer import (CELLS, Cells, LatencyTables, check_cells, plan_cells,
                                            profile_tables, required_cells)
from mdp_trt.latency.tables.cells import Cell

__all__ = ["Cell", "Cells", "CELLS", "LatencyTables", "check_cells", "plan_cells",
           "profile_tables", "required_cells"]
