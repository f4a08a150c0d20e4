"""Bilayer latency tables: which cells a model needs, measuring them (locally, under a drift
guard, or on Ray workers), their persistent cache, and filling untimed cells (interpolation,
fitted surfaces)."""

from mdp_trt.latency.tables.bilayer import LatencyTables, plan_cells, profile_tables, required_cells
from mdp_trt.latency.tables.cells import Cell

__all__ = ["Cell", "LatencyTables", "plan_cells", "profile_tables", "required_cells"]
