"""Where a group's channels sit in a tensor, and groups made of parts tied at an offset.

A Split or Slice on the channel axis hands on a part of a group (``Layout.first``/``width``).
When an Add then joins that part with another layer's output (YOLO's C2f: a conv, ``chunk(2)``,
the second half plus a bottleneck of it), the other layer's channels *are* those channels of the
first layer: channel c of the bottleneck's last conv is channel 16 + c of the conv before the
split. The channel trace (``passes.groups``) therefore ties layers with a shift
(``ShiftedUnionFind``, the shift read off the two layouts by ``tie``): a group is an interval of
channels of which each producer covers a part, and every layout of a layer's seed is rebased
onto the group's channels at the end.

A producer that covers a part of its group keeps the plan's channels of that part. For its
latency table to follow the group's option, plans keep the same fraction of every part: the
group is cut into equal blocks at every producer's bounds (``span_blocks``), and an option keeps
as many channels in each block as in any other, as for grouped convolutions
(``analysis.layer_out_widths``).

What cannot be pruned is pinned where it happens (``Pin``): a part of a group that reaches an
op mixing its channels or a graph output keeps those channels whole, not the whole group; the
group's other blocks are still cut (the pinned ones are blocks too).

A group may also hold some channels of a layer twice: GhostNet's module concatenates a conv's
output with its depthwise copy and adds both to one residual stream, so channel c and c + h of
the stream's producer are the same channel. Tying a seed to another at two shifts makes the
group periodic (``ShiftedUnionFind.periods``, the gcd of the gaps): it has ``period`` channels
and a layer whose width is a multiple of it produces each of them that many times (a Layout's
channel ``first + i`` is group channel ``(first + i) % period``); cutting a channel removes all
its copies.

A shift ties whole layers: where only a part of each of two layers is tied (an Add of a part
of one and a part of the other), their untied channels may land on the same group channels
and are then cut together. That is sound (each group channel is cut wherever it sits) but coarser than needed;
C2f's bottleneck and a layer added onto a concatenation are tied whole and are not affected.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

__all__ = ["Layout", "Pin", "ShiftedUnionFind", "elements", "tie", "covered", "rebased", "span_blocks", "spans"]


@dataclass(frozen=True)
class Layout:
    """Where a group's channels sit in a tensor.

    Group channel ``first + i`` (``0 <= i < width``; modulo ``period`` in a periodic group)
    sits at channel position ``offset + i * step`` of ``axis`` (non-negative); each channel owns
    ``stride`` consecutive elements. ``width`` is None only before the group's width is known
    (never in a trace: every seed is a whole layer output).
    """

    axis: int
    stride: int = 1
    offset: int = 0
    first: int = 0
    width: int | None = None
    step: int = 1
    period: int = 0  # a periodic group's channel count (0: the group is not periodic)

    @property
    def plain(self) -> bool:
        """Channels on axis 1, one element each (an NCHW tensor as a conv reads it)."""
        return self.axis == 1 and self.stride == 1

    def whole(self, channels: int) -> bool:
        """True when this places an entire group of ``channels`` at position 0."""
        return self.offset == 0 and self.first == 0 and self.step == 1 and self.width in (None, channels)

    def elements(self, channels: np.ndarray) -> np.ndarray:
        """Element indices along ``axis`` of those group ``channels`` that this layout holds."""
        channels = np.asarray(channels, dtype=np.int64).reshape(-1)
        if self.period:
            # Every copy, in position order (as a non-periodic layout gives sorted channels).
            index = np.arange(self.width or 0, dtype=np.int64)
            positions = index[np.isin(self.held(), channels)] * self.step + self.offset
        else:
            end = self.first + self.width if self.width is not None else np.iinfo(np.int64).max
            held = channels[(channels >= self.first) & (channels < end)]
            positions = (held - self.first) * self.step + self.offset
        return (positions[:, None] * self.stride + np.arange(self.stride, dtype=np.int64)[None, :]).reshape(-1)

    def held(self) -> np.ndarray:
        """The group channel at each of its positions, in position order (copies included)."""
        held = np.arange(self.first, self.first + (self.width or 0), dtype=np.int64)
        return held % self.period if self.period else held

    def channels(self) -> np.ndarray:
        """The group channels this layout holds (sorted, each once)."""
        return np.unique(self.held())


@dataclass(frozen=True)
class Pin:
    """Why the channels that ``layout`` holds must be kept (None: every channel of the group)."""

    reason: str
    layout: Layout | None = None

    def channels(self, channels: int) -> np.ndarray:
        """The pinned channels of a group of ``channels`` (sorted)."""
        if self.layout is None:
            return np.arange(channels, dtype=np.int64)
        return self.layout.channels()


def spans(channels: np.ndarray) -> list[tuple[int, int]]:
    """Sorted channel indices as maximal runs [start, stop)."""
    runs: list[tuple[int, int]] = []
    for c in np.unique(np.asarray(channels, dtype=np.int64)).tolist():
        if runs and runs[-1][1] == c:
            runs[-1] = (runs[-1][0], c + 1)
        else:
            runs.append((c, c + 1))
    return runs


def elements(layout: Layout) -> np.ndarray:
    """Every element index along the axis that ``layout``'s channels occupy."""
    return layout.elements(layout.channels())


def tie(held: Layout, new: Layout) -> tuple[bool, int | None]:
    """Whether ``new`` places channels on elements of the same tensor axis that ``held`` already
    holds, and then the shift that makes them the same channels: channel c of ``new``'s seed is
    channel c + shift of ``held``'s. The shift is None when no shift does (another step or
    stride: the shared elements carry the channels in different patterns)."""
    if not _overlap(held, new) or not np.intersect1d(elements(held), elements(new)).size:
        return False, None
    if (held.stride, held.step) != (new.stride, new.step):
        return True, None
    # A shared position p holds channel first + (p - offset) / step of each.
    return True, held.first - new.first + (new.offset - held.offset) // held.step


def _overlap(a: Layout, b: Layout) -> bool:
    """Whether the element ranges of ``a`` and ``b`` meet (a cheap test before the exact one:
    a concatenation holds many groups side by side)."""
    (a_low, a_high), (b_low, b_high) = _bounds(a), _bounds(b)
    return a_low < b_high and b_low < a_high


def _bounds(layout: Layout) -> tuple[int, int]:
    last = layout.offset + ((layout.width or 1) - 1) * layout.step
    return layout.offset * layout.stride, (last + 1) * layout.stride


def covered(layout: Layout, others: list[Layout]) -> bool:
    """Whether ``others`` (on the same tensor axis) hold every element ``layout`` holds."""
    held = np.concatenate([elements(o) for o in others]) if others else np.empty(0, np.int64)
    return bool(np.isin(elements(layout), held).all())


def rebased(layout: Layout, shift: int, period: int = 0) -> Layout:
    """``layout`` with its channels numbered ``shift`` higher (a seed's channels as its group's),
    in a periodic group's ``period`` channels."""
    if period:
        return replace(layout, first=(layout.first + shift) % period, period=period)
    return replace(layout, first=layout.first + shift) if shift else layout


def span_blocks(channels: int, spans: list[tuple[int, int]]) -> int:
    """Into how many equal blocks ``spans`` ([start, stop) channels of a group of ``channels``:
    its producers', its pinned parts') cut the group: each span is then a whole number of them."""
    size = math.gcd(channels, *(bound for span in spans for bound in span))
    return channels // size if size else 1


class ShiftedUnionFind:
    """Union-find over layer seeds whose channels are tied at a shift.

    ``find(i)`` is ``(root, shift)``: channel c of seed i is channel c + shift of the root. The
    root of a set is its lowest seed (the first layer in graph order).
    """

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.shift: list[int] = []  # channel c of i is channel c + shift[i] of parent[i]
        self.periods: list[int] = []  # of each root: its channels repeat with this period (0: never)

    def add(self) -> int:
        self.parent.append(len(self.parent))
        self.shift.append(0)
        self.periods.append(0)
        return len(self.parent) - 1

    def find(self, i: int) -> tuple[int, int]:
        path = []
        while self.parent[i] != i:
            path.append(i)
            i = self.parent[i]
        offset = 0
        for j in reversed(path):  # nearest the root first: each adds its parent's shift
            offset += self.shift[j]
            self.parent[j], self.shift[j] = i, offset
        return i, self.shift[path[0]] if path else 0

    def union(self, a: int, b: int, delta: int = 0) -> bool:
        """Tie channel c of ``a`` to channel c + ``delta`` of ``b``; False when ``a`` and ``b``
        are already tied at another shift: the set's channels then repeat with the gap's period
        (combined with any period it had by their gcd)."""
        root_a, shift_a = self.find(a)
        root_b, shift_b = self.find(b)
        gap = delta + shift_b - shift_a  # channel x of root_a is channel x + gap of root_b
        if root_a == root_b:
            period = self.periods[root_a]
            if (gap % period if period else gap) == 0:
                return True
            self.periods[root_a] = math.gcd(period, abs(gap))
            return False
        period = math.gcd(self.periods[root_a], self.periods[root_b])
        if root_a < root_b:
            self.parent[root_b], self.shift[root_b] = root_a, -gap
            self.periods[root_a] = period
        else:
            self.parent[root_a], self.shift[root_a] = root_b, gap
            self.periods[root_b] = period
        return True
