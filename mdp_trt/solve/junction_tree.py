"""Tree decomposition of a factor graph (greedy variable elimination) and scalar max-sum passes.

Each free variable ``v`` gets a clique: ``v`` plus its neighbours at the moment it is eliminated
(its separator). A clique's parent is the clique of the separator variable eliminated first, so
the cliques, in elimination order, list children before parents; the running-intersection property
holds by construction. A virtual root with an empty scope adopts the clique of every connected
component whose separator is empty, so there is always exactly one root (the last clique).

The scalar passes compute, for K linear weightings ``w_imp * importance - w_lat * latency`` at
once, the exact maximum of the weighted sum over each clique's subtree (upward messages, over the
separator) and over everything outside it (outside messages): the ingredients of the Lagrangian
bounds the Pareto search prunes with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from mdp_trt.solve.factor_graph import FactorGraph

__all__ = ["Clique", "JunctionTree", "ScalarMessages", "TreeTooWide", "build_junction_tree"]

# Largest temporary (numbers) a scalar pass builds at once: weightings are chunked to fit.
_MAX_CELLS = 1 << 22
# Upward passes over at least this many weightings keep them on the last axis (long inner loops).
_LAST_AXIS_MIN = 8


class TreeTooWide(Exception):
    """The decomposition has a clique table larger than allowed (``size`` assignments)."""

    def __init__(self, size: int, limit: int):
        super().__init__(f"largest clique table {size} assignments > {limit}")
        self.size = size
        self.limit = limit


@dataclass(eq=False)
class Clique:
    """A clique: ``scope`` (ascending variable ids) = ``sep`` + the eliminated ``var``.

    ``lat``/``imp`` are the summed factor tables assigned here, with axes in ``scope`` order.
    The virtual root has ``var`` None and an empty scope.
    """

    var: int | None
    scope: tuple[int, ...]
    sep: tuple[int, ...]
    shape: tuple[int, ...]
    parent: int | None = None
    children: list[int] = field(default_factory=list)
    lat: np.ndarray | None = None
    imp: np.ndarray | None = None
    _proj: dict[tuple[int, ...], np.ndarray] = field(default_factory=dict, repr=False)
    _dims: dict[tuple[int, ...], tuple[int, ...]] = field(default_factory=dict, repr=False)
    _decode: tuple[np.ndarray, np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def var_axis(self) -> int | None:
        return None if self.var is None else self.scope.index(self.var)

    def expand(self, arr: np.ndarray, sub_scope: tuple[int, ...], lead: int = 0) -> np.ndarray:
        """Reshape ``arr`` (``lead`` leading axes, then ``sub_scope`` axes) to broadcast over scope."""
        return arr.reshape(arr.shape[:lead] + self.expand_dims(sub_scope))

    def expand_dims(self, sub_scope: tuple[int, ...]) -> tuple[int, ...]:
        """The broadcast shape of a ``sub_scope`` table over this clique's scope (cached)."""
        cached = self._dims.get(sub_scope)
        if cached is not None:
            return cached
        dims = []
        pos = 0
        for var, n in zip(self.scope, self.shape):
            if pos < len(sub_scope) and sub_scope[pos] == var:
                dims.append(n)
                pos += 1
            else:
                dims.append(1)
        if pos != len(sub_scope):
            raise ValueError(f"scope {sub_scope} is not inside clique scope {self.scope}")
        out = tuple(dims)
        self._dims[sub_scope] = out
        return out

    def projection(self, sub_scope: tuple[int, ...]) -> np.ndarray:
        """For every flat clique assignment, the flat index of its restriction to ``sub_scope``."""
        cached = self._proj.get(sub_scope)
        if cached is not None:
            return cached
        n = self.size
        if not sub_scope:
            out = np.zeros(n, dtype=np.int64)
        else:
            coords = np.unravel_index(np.arange(n, dtype=np.int64), self.shape)
            picked = [coords[self.scope.index(v)] for v in sub_scope]
            dims = [self.shape[self.scope.index(v)] for v in sub_scope]
            out = np.ravel_multi_index(picked, dims).astype(np.int64)
        out.setflags(write=False)
        self._proj[sub_scope] = out
        return out


@dataclass(eq=False)
class ScalarMessages:
    """Results of one upward (and optionally downward) pass for weights ``W`` (K x 2).

    ``up[c]`` has shape (K, *sep shape of c); ``out[c]`` too (the best weighted value of everything
    outside c's subtree given the separator); ``total`` (K,) is the optimum of each weighting over
    the whole graph, constant part excluded.
    """

    weights: np.ndarray
    up: list[np.ndarray]
    total: np.ndarray
    out: list[np.ndarray] | None = None


# Per clique, for the passes: flat (1, size) importance and latency tables, shape, var axis, and
# (child, broadcast shape of its message over this clique) for each child.
_Prepared = tuple[np.ndarray, np.ndarray, tuple[int, ...], "int | None", list[tuple[int, tuple[int, ...]]]]


@dataclass(eq=False)
class JunctionTree:
    """Cliques in elimination order (children first); the last one is the virtual root."""

    graph: FactorGraph
    cliques: list[Clique]
    # Per-clique data the passes reuse (flat local tables, broadcast shapes); built on first use.
    _cache: list[_Prepared] | None = field(default=None, init=False, repr=False)
    _max_size: int | None = field(default=None, init=False, repr=False)

    @property
    def root(self) -> int:
        return len(self.cliques) - 1

    @property
    def max_clique_size(self) -> int:
        if self._max_size is None:
            self._max_size = max((c.size for c in self.cliques), default=1)
        return self._max_size

    def sep_shape(self, c: int) -> tuple[int, ...]:
        sizes = {v: self.graph.variables[v].size for v in self.cliques[c].sep}
        return tuple(sizes[v] for v in self.cliques[c].sep)

    # ------------------------------------------------------------------ scalar passes
    def _prepared(self) -> list[_Prepared]:
        """Per clique: flat (1, size) importance and latency tables, shape, var axis, child dims."""
        if self._cache is None:
            cache = []
            for clique in self.cliques:
                assert clique.lat is not None and clique.imp is not None
                n = clique.size
                kids = [(ch, clique.expand_dims(self.cliques[ch].sep)) for ch in clique.children]
                cache.append((clique.imp.reshape(1, n), clique.lat.reshape(1, n), clique.shape, clique.var_axis, kids))
            self._cache = cache
        return self._cache

    def _local(self, c: int, weights: np.ndarray) -> np.ndarray:
        imp, lat, shape, _, _ = self._prepared()[c]
        w_imp = weights[:, 0:1]
        w_lat = weights[:, 1:2]
        return (w_imp * imp - w_lat * lat).reshape((len(weights),) + shape)

    def _full(self, c: int, weights: np.ndarray, up: list[np.ndarray]) -> np.ndarray:
        imp, lat, shape, _, kids = self._prepared()[c]
        k = len(weights)
        val = (weights[:, 0:1] * imp - weights[:, 1:2] * lat).reshape((k,) + shape)
        for ch, dims in kids:
            val += up[ch].reshape((k,) + dims)
        return val

    def upward(self, weights: np.ndarray) -> ScalarMessages:
        """Max-sum messages for each weighting (rows of ``weights``: (w_imp, w_lat)).

        Weightings are processed in chunks so that no temporary exceeds ``_MAX_CELLS`` numbers.
        """
        weights = np.asarray(weights, dtype=np.float64).reshape(-1, 2)
        rows = max(1, _MAX_CELLS // max(1, self.max_clique_size))
        if len(weights) > rows:
            parts = [self.upward(weights[i : i + rows]) for i in range(0, len(weights), rows)]
            up = [np.concatenate([p.up[c] for p in parts], axis=0) for c in range(len(self.cliques))]
            return ScalarMessages(weights, up, up[self.root].reshape(len(weights)))
        k = len(weights)
        if k < _LAST_AXIS_MIN:
            up = [np.empty(0)] * len(self.cliques)
            for c, (_, _, _, axis, _) in enumerate(self._prepared()):
                full = self._full(c, weights, up)
                up[c] = full if axis is None else np.maximum.reduce(full, axis=axis + 1)
            return ScalarMessages(weights, up, up[self.root].reshape(k))
        # Computed with the weightings on the LAST axis (contiguous inner loops of length k, not
        # of a tiny variable domain), then exposed weightings-first as views; same arithmetic.
        w_imp = weights[:, 0]
        w_lat = weights[:, 1]
        unit = bool(np.all(w_imp == 1.0))  # 1.0 * x == x exactly: skip the product
        maximum = np.maximum.reduce
        up_t: list[np.ndarray] = [np.empty(0)] * len(self.cliques)
        for c, (imp, lat, shape, axis, kids) in enumerate(self._prepared()):
            n = imp.shape[1]
            val = np.multiply(w_lat, lat.reshape(n, 1))
            if unit:
                np.subtract(imp.reshape(n, 1), val, out=val)
            else:
                np.subtract(w_imp * imp.reshape(n, 1), val, out=val)
            val = val.reshape(shape + (k,))
            for ch, dims in kids:
                val += up_t[ch].reshape(dims + (k,))
            up_t[c] = val if axis is None else maximum(val, axis=axis)
        up = [u.transpose((u.ndim - 1,) + tuple(range(u.ndim - 1))) for u in up_t]
        return ScalarMessages(weights, up, up[self.root].reshape(k))

    def downward(self, msgs: ScalarMessages) -> ScalarMessages:
        """Add outside messages to an upward result (returns the same object, completed)."""
        weights = msgs.weights
        k = len(weights)
        rows = max(1, _MAX_CELLS // max(1, self.max_clique_size))
        if k > rows:
            parts = []
            for i in range(0, k, rows):
                part = ScalarMessages(weights[i : i + rows], [u[i : i + rows] for u in msgs.up], msgs.total[i : i + rows])
                parts.append(self.downward(part))
            msgs.out = [np.concatenate([p.out[c] for p in parts], axis=0) for c in range(len(self.cliques))]  # type: ignore[index]
            return msgs
        prepared = self._prepared()
        maximum = np.maximum.reduce
        out: list[np.ndarray] = [np.empty(0)] * len(self.cliques)
        out[self.root] = np.zeros((k,))
        for c in range(len(self.cliques) - 1, -1, -1):
            clique = self.cliques[c]
            if not clique.children:
                continue
            full = self._full(c, weights, msgs.up)
            full += out[c].reshape((k,) + clique.expand_dims(clique.sep))
            for ch, dims in prepared[c][4]:
                rest = full - msgs.up[ch].reshape((k,) + dims)
                child_sep = self.cliques[ch].sep
                axes = tuple(1 + i for i, v in enumerate(clique.scope) if v not in child_sep)
                out[ch] = maximum(rest, axis=axes) if axes else rest
        msgs.out = out
        return msgs

    def _decode_info(self, c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Separator variables, their flat strides in clique c, and the var's flat offsets (cached)."""
        clique = self.cliques[c]
        cached = clique._decode
        if cached is None:
            shape = clique.shape
            axis = clique.var_axis
            strides = [math.prod(shape[i + 1 :]) for i in range(len(shape))]
            sep_vars = np.array([v for i, v in enumerate(clique.scope) if i != axis], dtype=np.int64)
            sep_strides = np.array([st for i, st in enumerate(strides) if i != axis], dtype=np.int64)
            offsets = (np.arange(shape[axis], dtype=np.int64) * strides[axis])[None, :]  # type: ignore[index]
            cached = (sep_vars, sep_strides, offsets)
            clique._decode = cached
        return cached

    def decode(self, msgs: ScalarMessages, rows: list[int] | None = None) -> np.ndarray:
        """Assignments (one row per weighting in ``rows``) attaining ``msgs.total[rows]``."""
        rows = list(range(len(msgs.weights))) if rows is None else rows
        chunk = max(1, _MAX_CELLS // max(1, self.max_clique_size))
        if len(rows) > chunk:
            return np.concatenate([self.decode(msgs, rows[i : i + chunk]) for i in range(0, len(rows), chunk)])
        weights = msgs.weights[rows]
        k = len(rows)
        w_imp = weights[:, 0:1]
        w_lat = weights[:, 1:2]
        prepared = self._prepared()
        row_idx = np.asarray(rows, dtype=np.int64)[:, None]
        assignment = np.zeros((k, len(self.graph.variables)), dtype=np.int64)
        for c in range(len(self.cliques) - 2, -1, -1):
            clique = self.cliques[c]
            imp, lat, shape, axis, kids = prepared[c]
            assert axis is not None
            sep_vars, sep_strides, offsets = self._decode_info(c)
            flat = (assignment[:, sep_vars] @ sep_strides)[:, None] + offsets
            # Only the entries of the clique table on the decoded separator: the same sums, in the
            # same order, as the full table (local, then the children's messages).
            val = w_imp * imp[0][flat] - w_lat * lat[0][flat]
            for ch, _ in kids:
                child_flat = clique.projection(self.cliques[ch].sep)[flat]
                val = val + msgs.up[ch].reshape(len(msgs.weights), -1)[row_idx, child_flat]
            assignment[:, clique.var] = np.argmax(val, axis=1)
        return assignment


def _elimination_order(graph: FactorGraph) -> tuple[list[int], dict[int, set[int]]]:
    """Greedy order: always eliminate the variable whose clique table is smallest."""
    n = len(graph.variables)
    sizes = [v.size for v in graph.variables]
    adj: dict[int, set[int]] = {v: set() for v in range(n)}
    for f in graph.factors:
        for a in f.scope:
            adj[a].update(u for u in f.scope if u != a)
    live = {v: set(nb) for v, nb in adj.items()}

    def cost(v: int) -> tuple[float, int, int]:
        table = float(sizes[v])
        for u in live[v]:
            table *= sizes[u]
        return (table, len(live[v]), v)

    costs = {v: cost(v) for v in range(n)}
    order: list[int] = []
    seps: dict[int, set[int]] = {}
    while costs:
        v = min(costs, key=costs.__getitem__)
        nbrs = live.pop(v)
        del costs[v]
        order.append(v)
        seps[v] = set(nbrs)
        for u in nbrs:
            live[u].discard(v)
            live[u].update(w for w in nbrs if w != u)
        for u in nbrs:
            costs[u] = cost(u)
    return order, seps


def build_junction_tree(graph: FactorGraph, max_clique_size: int | None = None) -> JunctionTree:
    """Decompose ``graph`` by greedy elimination and attach every factor to one clique.

    Raises TreeTooWide, before allocating any table, when a clique table would have more than
    ``max_clique_size`` assignments.
    """
    order, seps = _elimination_order(graph)
    if max_clique_size is not None:
        widest = max((math.prod(graph.variables[u].size for u in seps[v] | {v}) for v in order), default=1)
        if widest > max_clique_size:
            raise TreeTooWide(widest, max_clique_size)
    position = {v: i for i, v in enumerate(order)}
    sizes = [v.size for v in graph.variables]
    cliques: list[Clique] = []
    clique_of: dict[int, int] = {}
    for v in order:
        scope = tuple(sorted(seps[v] | {v}))
        cliques.append(Clique(var=v, scope=scope, sep=tuple(sorted(seps[v])), shape=tuple(sizes[u] for u in scope)))
        clique_of[v] = len(cliques) - 1
    cliques.append(Clique(var=None, scope=(), sep=(), shape=()))
    root = len(cliques) - 1
    for c, clique in enumerate(cliques[:-1]):
        if clique.sep:
            first = min(clique.sep, key=position.__getitem__)
            clique.parent = clique_of[first]
        else:
            clique.parent = root
        cliques[clique.parent].children.append(c)
    for clique in cliques:
        clique.lat = np.zeros(clique.shape)
        clique.imp = np.zeros(clique.shape)
    tree = JunctionTree(graph, cliques)
    for f in graph.factors:
        home = cliques[clique_of[min(f.scope, key=position.__getitem__)]]
        home.lat = home.lat + home.expand(f.lat, f.scope)
        home.imp = home.imp + home.expand(f.imp, f.scope)
    return tree
