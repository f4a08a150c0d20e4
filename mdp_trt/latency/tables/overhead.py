"""The per-call overhead of a timed cell, taken out of every table entry.

A cell times one layer alone: one call into the runtime (binding the tensors, starting the
executor, dispatching the kernel, returning) around the layer's work. Inside a model the layer
is one node among many and that call is paid once per model, not once per layer, so a table sum
counts it once per layer. On a small network it dominates: the 8x8-digits ResNet (0.39 ms, ORT
CPU, 1 thread, 2026-12-08) has cells of 5-30 us of which ~5 us is the call (a conv of 8 channels
on one input channel takes 5.3 us), its layers ran at 0.2-0.5x their cells inside the model, the
two-point fit wanted a negative offset (-0.16 ms: the overhead summed over its 20 layers) and
narrow plans were predicted up to 1.8x their measured latency. So ``profile_tables`` times
``OVERHEAD_CELL`` (a 1x1 convolution of one channel over one pixel: the call around next to no
work), cached like any cell, and subtracts it from each table entry, keeping at least ``FLOOR``
of the entry (a layer inside a model still costs its node's dispatch). On a 224 px model the
overhead is a few microseconds against cells of milliseconds and changes nothing.

Backends whose cells carry such an overhead say so (``call_overhead``: every runtime backend).
Cells timed with cold weights are left as they are: a layer replicated to stream its weights
spreads the call over its copies.
"""

from __future__ import annotations

from collections.abc import Mapping

from mdp_trt.latency.tables.cells import Cell, CellKey
from mdp_trt.signature import LayerSignature

__all__ = ["OVERHEAD_CELL", "FLOOR", "net_of_overhead", "describe_overhead"]

OVERHEAD_CELL = Cell(LayerSignature("Conv", 1, 1, kernel=(1, 1), strides=(1, 1), pads=(0, 0, 0, 0),
                                    dilations=(1, 1), input_hw=(1, 1)), 1, 1)
# The smallest share of an entry left after the subtraction: a 1-channel cell times as much as
# the overhead cell itself, yet costs a node's dispatch (~0.3-1 us) inside a model.
FLOOR = 0.1


def net_of_overhead(values: Mapping[CellKey, float], overhead_ms: float) -> dict[CellKey, float]:
    """Every value less ``overhead_ms``, but not below ``FLOOR`` of itself."""
    return {key: max(value - overhead_ms, FLOOR * value) for key, value in values.items()}


def describe_overhead(overhead_ms: float) -> str:
    """The profile summary's words on it."""
    return f"a call's overhead ({1000 * overhead_ms:.1f} us) taken out of every cell"
