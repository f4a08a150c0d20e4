"""A problem as a factor graph: discrete variables and (latency, importance) tables over them.

Variables are the groups and blocks the solver may still choose: groups with a forced option (the
stem, groups with a single real option) and blocks that are forced kept or named by no layer are
conditioned out, their contribution folded into the factors or into a constant. Every layer
becomes one factor over its free variables among (group, prev_group, block); factors with the same
scope are summed. So an assignment's latency is ``const_latency + sum_f lat_f[assignment]`` and its
objective ``const_importance + sum_f imp_f[assignment]``, exactly the problem's (up to float
rounding, which is exact for integer data below 2**53).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mdp_trt.solve.problem import Problem

__all__ = ["Variable", "Factor", "FactorGraph", "build_factor_graph"]


@dataclass(frozen=True, eq=False)
class Variable:
    """A free decision: ``values[k]`` is the option (group) or 0/1 flag (block) of domain index k."""

    kind: str  # "group" or "block"
    index: int  # group index or block id in the problem
    values: np.ndarray  # int64, length >= 2

    @property
    def size(self) -> int:
        return len(self.values)


@dataclass(frozen=True, eq=False)
class Factor:
    """Summed layer contributions over ``scope`` (ascending variable ids; table axes follow it)."""

    scope: tuple[int, ...]
    lat: np.ndarray
    imp: np.ndarray


@dataclass(frozen=True, eq=False)
class FactorGraph:
    """Variables, factors and the fixed part of a problem (see the module docstring)."""

    problem: Problem
    variables: tuple[Variable, ...]
    factors: tuple[Factor, ...]
    const_latency: float  # includes the problem's latency_offset
    const_importance: float
    fixed_options: tuple[int, ...]  # option per group for conditioned-out groups, -1 for free ones
    fixed_blocks: tuple[int, ...]  # flag per block for conditioned-out blocks, -1 for free ones

    def to_plan_arrays(self, assignment: np.ndarray) -> tuple[list[int], list[int]]:
        """Options per group and flags per block of an assignment (domain index per variable)."""
        options = list(self.fixed_options)
        blocks = list(self.fixed_blocks)
        for var, k in zip(self.variables, assignment):
            if var.kind == "group":
                options[var.index] = int(var.values[k])
            else:
                blocks[var.index] = int(var.values[k])
        return options, blocks

    def from_plan_arrays(self, options: list[int], blocks: list[int]) -> np.ndarray:
        """The domain-index assignment of a plan whose fixed parts agree with this graph."""
        out = np.zeros(len(self.variables), dtype=np.int64)
        for v, var in enumerate(self.variables):
            value = options[var.index] if var.kind == "group" else blocks[var.index]
            (hits,) = np.nonzero(var.values == value)
            out[v] = int(hits[0]) if len(hits) else 0
        return out

    def totals(self, assignment: np.ndarray) -> tuple[float, float]:
        """(latency, importance) of an assignment in float arithmetic (constant included)."""
        lat = self.const_latency
        imp = self.const_importance
        for f in self.factors:
            idx = tuple(int(assignment[v]) for v in f.scope)
            lat += float(f.lat[idx])
            imp += float(f.imp[idx])
        return lat, imp


def build_factor_graph(problem: Problem) -> FactorGraph:
    """Condition out fixed variables and merge layer tables into factors (see module docstring)."""
    var_of_group: dict[int, int] = {}
    var_of_block: dict[int, int] = {}
    variables: list[Variable] = []
    fixed_options = [-1] * problem.num_groups
    fixed_blocks = [-1] * problem.num_blocks
    for g in range(problem.num_groups):
        allowed = problem.allowed_options(g)
        if len(allowed) == 1:
            fixed_options[g] = allowed[0]
        else:
            var_of_group[g] = len(variables)
            variables.append(Variable("group", g, np.arange(allowed.start, allowed.stop, dtype=np.int64)))
    active = problem.active_blocks()
    for b in range(problem.num_blocks):
        if b in problem.forced_blocks:
            fixed_blocks[b] = 1
        elif b not in active:
            # No layer names it, so its value changes nothing; 0 records "already removed".
            fixed_blocks[b] = 0
        else:
            var_of_block[b] = len(variables)
            variables.append(Variable("block", b, np.array([0, 1], dtype=np.int64)))

    def values_of(kind: str, index: int) -> tuple[int | None, np.ndarray]:
        table = var_of_group if kind == "group" else var_of_block
        if index in table:
            v = table[index]
            return v, variables[v].values
        fixed = fixed_options[index] if kind == "group" else fixed_blocks[index]
        return None, np.array([fixed], dtype=np.int64)

    merged: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]] = {}
    const_lat = float(problem.latency_offset)
    const_imp = 0.0
    for layer in problem.layers:
        gv, gvals = values_of("group", layer.group)
        zv, zvals = values_of("block", layer.block)
        axes: list[int | None] = [gv]
        if layer.prev_group is None:
            lat = layer.latency[gvals][:, None]
            pv = None
        elif layer.prev_group == layer.group:
            # A layer whose input and output channels are the same group (e.g. depthwise):
            # only the diagonal of its table is reachable.
            lat = np.diagonal(layer.latency)[gvals][:, None]
            pv = None
        else:
            pv, pvals = values_of("group", layer.prev_group)
            lat = layer.latency[np.ix_(gvals, pvals)]
        axes.append(pv)
        axes.append(zv)
        zf = zvals.astype(np.float64)
        lat3 = lat[:, :, None] * (zf[None, None, :] if layer.latency_times_block else 1.0)
        if layer.in_objective:
            imp3 = layer.importance[gvals][:, None, None] * zf[None, None, :]
        else:
            imp3 = np.zeros((len(gvals), 1, len(zvals)))
        lat3 = np.broadcast_to(lat3, (lat3.shape[0], lat3.shape[1], len(zvals)))
        imp3 = np.broadcast_to(imp3, lat3.shape)
        # Drop the axes of fixed variables (size 1), then order by variable id.
        keep = [i for i, a in enumerate(axes) if a is not None]
        lat_t = lat3.reshape([lat3.shape[i] for i in keep]) if keep else lat3.reshape(())
        imp_t = imp3.reshape([imp3.shape[i] for i in keep]) if keep else imp3.reshape(())
        scope_unsorted = [axes[i] for i in keep]
        perm = sorted(range(len(scope_unsorted)), key=lambda i: scope_unsorted[i])
        scope = tuple(scope_unsorted[i] for i in perm)  # type: ignore[misc]
        lat_t = np.transpose(lat_t, perm)
        imp_t = np.transpose(imp_t, perm)
        if not scope:
            const_lat += float(lat_t)
            const_imp += float(imp_t)
            continue
        if scope in merged:
            old_lat, old_imp = merged[scope]
            merged[scope] = (old_lat + lat_t, old_imp + imp_t)
        else:
            merged[scope] = (np.array(lat_t, dtype=np.float64), np.array(imp_t, dtype=np.float64))

    factors = tuple(Factor(scope, lat, imp) for scope, (lat, imp) in merged.items())
    return FactorGraph(
        problem=problem,
        variables=tuple(variables),
        factors=factors,
        const_latency=const_lat,
        const_importance=const_imp,
        fixed_options=tuple(fixed_options),
        fixed_blocks=tuple(fixed_blocks),
    )
