"""Exact bi-criteria (latency, importance) dynamic programming over a junction tree.

For every clique, bottom-up, and every assignment of its separator, the message holds the Pareto
frontier of (latency, importance) over all assignments of the clique's subtree: the points that no
other point beats in both (lower-or-equal latency and higher-or-equal importance). Combining a
clique = adding its local table to every point, Minkowski-summing the children's frontiers
(matched on the shared variables), then taking the union over the eliminated variable. Dropping
dominated points is exact: a dominated partial solution can be replaced by its dominator in any
completion, because the rest of the problem only sees the separator.

Two more prunings keep the frontiers small, both exact:

* latency: a point whose latency plus the smallest latency the rest of the problem can reach
  (outside + not yet combined children, from a min-sum pass) exceeds the budget can never be
  completed into a feasible plan;
* objective: for any multiplier lam >= 0 the best completion of a point with (lat, imp) is at most
  ``imp - lam * lat + R_lam + lam * budget``, where ``R_lam`` is the exact max-sum of
  ``importance - lam * latency`` over the rest (a Lagrangian relaxation of the budget); a point whose
  bound for some lam cannot beat the incumbent by at least ``step`` is dropped.

So the root frontier contains every plan that could beat the incumbent; its best feasible point,
or else the incumbent, is optimal. Every point remembers where it came from (clique assignment and
the index of the point it used in each child message) so that the plan can be traced back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from mdp_trt.solve.junction_tree import JunctionTree, ScalarMessages

__all__ = ["ParetoResult", "SearchBounds", "SearchTimeout", "SearchTooLarge", "pareto_search"]

# Pairs materialised at once when Minkowski-summing two frontiers (memory: ~40 bytes each).
_MAX_PAIRS = 2_000_000
# Point sets up to this size are Pareto-filtered in plain Python.
_SMALL = 24
# Largest (multipliers x points) bound table that ``_Bounds.keep`` builds in one piece.
_VECTOR_CELLS = 1 << 12


class SearchTimeout(Exception):
    """The deadline passed during the search (internal; the solver turns it into a time_limit plan)."""


class SearchTooLarge(Exception):
    """A frontier outgrew the caller's ``max_points`` (internal; the caller retries differently)."""


@dataclass(frozen=True)
class ParetoResult:
    """The best root point that beats the incumbent, or None when the incumbent is optimal.

    ``assignment`` is a domain index per variable; ``latency``/``importance`` exclude the graph's
    constant part. ``peak_points`` is the largest message size seen (for diagnostics).
    """

    assignment: np.ndarray | None
    latency: float | None
    importance: float | None
    peak_points: int


@dataclass(eq=False)
class _Points:
    """Candidate partial solutions inside one clique: flat assignment ``a`` and provenance."""

    a: np.ndarray
    lat: np.ndarray
    imp: np.ndarray
    prov: dict[int, np.ndarray]

    def take(self, idx: np.ndarray) -> _Points:
        return _Points(self.a[idx], self.lat[idx], self.imp[idx], {k: v[idx] for k, v in self.prov.items()})

    def __len__(self) -> int:
        return len(self.a)


@dataclass(eq=False)
class _Message:
    """A clique's frontier per separator assignment, sorted by (seg, latency)."""

    seg: np.ndarray
    lat: np.ndarray
    imp: np.ndarray
    start: np.ndarray  # start[s]..start[s+1] are the points of separator assignment s
    a: np.ndarray
    prov: dict[int, np.ndarray]


def _pareto_order(seg: np.ndarray, lat: np.ndarray, imp: np.ndarray, tie: np.ndarray | None = None) -> np.ndarray:
    """Indices of the non-dominated points of each segment, sorted by (segment, latency).

    Within a segment, a point survives iff its importance is strictly above that of every point
    sorted before it (lower latency, or equal latency and higher importance; then lower ``tie``,
    if given, then lower index).
    """
    if len(seg) == 0:
        return np.zeros(0, dtype=np.int64)
    n = len(seg)
    if n <= _SMALL:
        # The same rule in plain Python (cheaper than a dozen numpy calls on a few points): a
        # stable sort by (segment, latency, -importance), then keep strictly rising importances.
        sl, ll, il = seg.tolist(), lat.tolist(), imp.tolist()
        kept: list[int] = []
        prev_seg = None
        best = 0.0
        if tie is None:
            ranked = sorted(range(n), key=lambda j: (sl[j], ll[j], -il[j]))
        else:
            tl = tie.tolist()
            ranked = sorted(range(n), key=lambda j: (sl[j], ll[j], -il[j], tl[j]))
        for i in ranked:
            if sl[i] != prev_seg:
                prev_seg, best = sl[i], il[i]
                kept.append(i)
            elif il[i] > best:
                best = il[i]
                kept.append(i)
        return np.array(kept, dtype=np.int64)
    order = np.lexsort((-imp, lat, seg) if tie is None else (tie, -imp, lat, seg))
    # Dense rank of the importances (equal values share a rank), as np.unique would give.
    imp_o = imp[order]
    by_imp = np.argsort(imp_o, kind="stable")
    sorted_imp = imp_o[by_imp]
    step = np.empty(n, dtype=np.int64)
    step[0] = 0
    np.not_equal(sorted_imp[1:], sorted_imp[:-1], out=step[1:])
    rank = np.empty(n, dtype=np.int64)
    rank[by_imp] = np.cumsum(step)
    key = seg[order].astype(np.int64) * (int(rank.max()) + 1) + rank
    best = np.maximum.accumulate(key)
    keep = np.empty(n, dtype=bool)
    keep[0] = True
    np.greater(key[1:], best[:-1], out=keep[1:])
    return order[keep]


class _CliqueBounds:
    """Remaining-problem bounds per flat assignment of one clique (independent of the target).

    ``rem[k]`` is the exact max of ``importance - lams[k] * latency`` over everything outside the
    clique's local table (outside message + all children); ``rem_lat`` the smallest latency of the
    same part. ``child_up[ch]``/``child_lat[ch]`` are child ch's share, removed once merged.
    """

    def __init__(self, tree: JunctionTree, c: int, lag: ScalarMessages, minlat: ScalarMessages):
        clique = tree.cliques[c]
        assert lag.out is not None and minlat.out is not None
        k = len(lag.weights)

        def flat(arr: np.ndarray, scope: tuple[int, ...], lead: int) -> np.ndarray:
            # The value for every flat clique assignment: index by its restriction to ``scope``.
            return arr.reshape(lead, -1)[:, clique.projection(scope)]

        self.child_up = {ch: flat(lag.up[ch], tree.cliques[ch].sep, k) for ch in clique.children}
        # minlat messages hold max(-latency): negate to get the smallest latency.
        self.child_lat = {ch: -flat(minlat.up[ch], tree.cliques[ch].sep, 1)[0] for ch in clique.children}
        self.rem = flat(lag.out[c], clique.sep, k)
        self.rem_lat = -flat(minlat.out[c], clique.sep, 1)[0]
        if self.child_up:
            # (0 + x == x: the same sums as starting the children's total from zeros)
            ups = list(self.child_up.values())
            lats = list(self.child_lat.values())
            self.rem = self.rem + (sum(ups[1:], ups[0]) if len(ups) > 1 else ups[0])
            self.rem_lat = self.rem_lat + (sum(lats[1:], lats[0]) if len(lats) > 1 else lats[0])
        self.lams = lag.weights[:, 1]


class _Bounds:
    """The bounds of one clique during one search, updated as children are merged."""

    def __init__(self, pre: _CliqueBounds):
        self.pre = pre
        self.lams = pre.lams
        self.rem = pre.rem
        self.rem_lat = pre.rem_lat

    def merged(self, ch: int) -> None:
        """Child ``ch``'s subtree is now inside the points: drop it from the remaining bound."""
        self.rem = self.rem - self.pre.child_up[ch]
        self.rem_lat = self.rem_lat - self.pre.child_lat[ch]

    def keep(self, pts: _Points, budget: float, target: float) -> np.ndarray:
        """Indices of the points that may still be completed into a plan better than ``target``."""
        return self.keep_arrays(pts.a, pts.lat, pts.imp, budget, target)

    def keep_arrays(
        self, a: np.ndarray | None, lat: np.ndarray, imp: np.ndarray, budget: float, target: float
    ) -> np.ndarray:
        """:meth:`keep` for points given as arrays; ``a`` None means point i has assignment i."""
        idx = np.nonzero(lat + (self.rem_lat if a is None else self.rem_lat[a]) <= budget)[0]
        if len(idx) == 0 or len(self.lams) == 0:
            return idx
        if len(idx) * len(self.lams) > _VECTOR_CELLS:
            # Large: one multiplier at a time, each on the survivors of the previous ones.
            for k, lam in enumerate(self.lams):
                if len(idx) == 0:
                    break
                ai = idx if a is None else a[idx]
                ub = imp[idx] - lam * lat[idx] + self.rem[k, ai] + lam * budget
                idx = idx[ub >= target]
            return idx
        # Small: all multipliers at once, (K, n) bounds with the same arithmetic per point.
        ai = idx if a is None else a[idx]
        lams = self.lams[:, None]
        ub = imp[idx][None, :] - lams * lat[idx][None, :]
        ub += self.rem[:, ai]
        ub += lams * budget
        return idx[np.all(ub >= target, axis=0)]


class SearchBounds:
    """Per-clique bounds for :func:`pareto_search`, computed once and reused across targets."""

    def __init__(self, tree: JunctionTree, lag: ScalarMessages, minlat: ScalarMessages):
        self.tree = tree
        self.cliques = [_CliqueBounds(tree, c, lag, minlat) for c in range(len(tree.cliques))]


def pareto_search(
    tree: JunctionTree,
    search_bounds: SearchBounds,
    budget: float,
    target: float,
    deadline: float | None = None,
    max_points: int | None = None,
) -> ParetoResult:
    """Find the best assignment with latency <= ``budget`` and importance >= ``target``.

    ``budget`` and ``target`` exclude the graph's constant part. ``search_bounds`` is built from
    upward and outside messages for weights (1, lam), lam >= 0, and for the weight (0, 1). Raises
    SearchTimeout when ``deadline`` (a ``time.perf_counter()`` value) passes, SearchTooLarge when a
    clique's frontier exceeds ``max_points``.
    """
    msgs: list[_Message | None] = [None] * len(tree.cliques)
    peak = 0
    for c, clique in enumerate(tree.cliques):
        if deadline is not None and time.perf_counter() > deadline:
            raise SearchTimeout
        bounds = _Bounds(search_bounds.cliques[c])
        n = clique.size
        assert clique.lat is not None and clique.imp is not None
        lat0 = clique.lat.reshape(n)
        imp0 = clique.imp.reshape(n)
        idx = bounds.keep_arrays(None, lat0, imp0, budget, target)
        pts = _Points(idx, lat0[idx], imp0[idx], {})
        children = sorted(clique.children, key=lambda ch: len(msgs[ch].lat))  # type: ignore[union-attr]
        for j, ch in enumerate(children):
            child = msgs[ch]
            assert child is not None
            bounds.merged(ch)
            pts = _merge_child(pts, child, clique.projection(tree.cliques[ch].sep), ch, bounds, budget, target, deadline)
            if j + 1 < len(children):
                pts = pts.take(_pareto_order(pts.a, pts.lat, pts.imp))
        # Eliminate the clique's variable: union over its values, per separator assignment. After
        # the last child this one filter replaces two (per assignment, then per separator): with
        # ties broken by the assignment it keeps the same points in the same order.
        seg = clique.projection(clique.sep)[pts.a]
        order = _pareto_order(seg, pts.lat, pts.imp, pts.a if children else None)
        pts = pts.take(order)
        seg = seg[order]
        nsep = clique.size // clique.shape[clique.var_axis] if clique.sep else 1  # type: ignore[index]
        start = np.searchsorted(seg, np.arange(nsep + 1, dtype=np.int64)).astype(np.int64)
        msgs[c] = _Message(seg, pts.lat, pts.imp, start, pts.a, pts.prov)
        peak = max(peak, len(pts))
        if max_points is not None and peak > max_points:
            raise SearchTooLarge

    root = msgs[tree.root]
    assert root is not None
    if len(root.lat) == 0:
        return ParetoResult(None, None, None, peak)
    best = int(np.argmax(root.imp))
    assignment = np.zeros(len(tree.graph.variables), dtype=np.int64)
    stack = [(tree.root, best)]
    while stack:
        c, i = stack.pop()
        msg = msgs[c]
        assert msg is not None
        clique = tree.cliques[c]
        if clique.shape:
            coords = np.unravel_index(int(msg.a[i]), clique.shape)
            for v, k in zip(clique.scope, coords):
                assignment[v] = int(k)
        for ch in clique.children:
            stack.append((ch, int(msg.prov[ch][i])))
    return ParetoResult(assignment, float(root.lat[best]), float(root.imp[best]), peak)


def _merge_child(
    pts: _Points,
    child: _Message,
    proj: np.ndarray,
    ch: int,
    bounds: _Bounds,
    budget: float,
    target: float,
    deadline: float | None,
) -> _Points:
    """Minkowski sum of the points with the child's frontier on the matching separator segment."""
    s = proj[pts.a]
    first = child.start[s]
    counts = child.start[s + 1] - first
    ends = np.cumsum(counts)
    total = int(ends[-1]) if len(ends) else 0
    if 0 < total <= _MAX_PAIRS:
        # Common case: every pair at once (the loop below would do the same in one piece).
        if deadline is not None and time.perf_counter() > deadline:
            raise SearchTimeout
        rep = np.repeat(np.arange(len(pts), dtype=np.int64), counts)
        ci = np.arange(total, dtype=np.int64) + np.repeat(first - (ends - counts), counts)
        lat = pts.lat[rep] + child.lat[ci]
        imp = pts.imp[rep] + child.imp[ci]
        a = pts.a[rep]
        keep = bounds.keep_arrays(a, lat, imp, budget, target)
        prov = {k: v[rep[keep]] for k, v in pts.prov.items()}
        prov[ch] = ci[keep]
        return _Points(a[keep], lat[keep], imp[keep], prov)
    pieces: list[_Points] = []
    lo = 0
    while lo < len(pts):
        if deadline is not None and time.perf_counter() > deadline:
            raise SearchTimeout
        base = int(ends[lo - 1]) if lo else 0
        hi = int(np.searchsorted(ends, base + _MAX_PAIRS, side="right"))
        hi = max(hi, lo + 1)
        cnt = counts[lo:hi]
        m = int(cnt.sum())
        if m:
            rep = np.repeat(np.arange(lo, hi, dtype=np.int64), cnt)
            offs = np.arange(m, dtype=np.int64) - np.repeat(np.cumsum(cnt) - cnt, cnt)
            ci = np.repeat(first[lo:hi], cnt) + offs
            piece = _Points(
                pts.a[rep],
                pts.lat[rep] + child.lat[ci],
                pts.imp[rep] + child.imp[ci],
                {**{k: v[rep] for k, v in pts.prov.items()}, ch: ci},
            )
            pieces.append(piece.take(bounds.keep(piece, budget, target)))
        lo = hi
    if not pieces:
        return _Points(
            np.zeros(0, dtype=np.int64),
            np.zeros(0),
            np.zeros(0),
            {**{k: np.zeros(0, dtype=np.int64) for k in pts.prov}, ch: np.zeros(0, dtype=np.int64)},
        )
    if len(pieces) == 1:
        return pieces[0]
    return _Points(
        np.concatenate([p.a for p in pieces]),
        np.concatenate([p.lat for p in pieces]),
        np.concatenate([p.imp for p in pieces]),
        {k: np.concatenate([p.prov[k] for p in pieces]) for k in pieces[0].prov},
    )
