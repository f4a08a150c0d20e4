"""Baseline: an exact MILP linearisation of the problem, solved by HiGHS (``highspy``).

Variables: binary ``x[g,i]`` (i >= 1), binary ``z[b]``; ``u[b,g,i] = z[b] * x[g,i]`` linearised by
``u <= x``, ``u <= z``, ``u >= x + z - 1`` for each (block, group) pair a layer needs. Each layer's
product of its two groups is a transportation block ``y[l,i,j] >= 0`` with row sums ``r_i`` and
column sums ``c_j``, where (r, c) = (u[b,g,.], u[b,p,.]) for layers whose latency is multiplied by
their block and (x[g,.], x[p,.]) otherwise. At an integral point r and c are unit vectors (or both
zero when the block is removed), so the only feasible y is their outer product: the linearisation
is exact, and its LP relaxation is much tighter than McCormick's. Forced variables are fixed by
bounds (HiGHS presolve removes them).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from mdp_trt.errors import BackendUnavailable
from mdp_trt.solve.plan import Plan
from mdp_trt.solve.problem import Problem

__all__ = ["solve_milp"]

logger = logging.getLogger(__name__)

_NAME = "milp"


@dataclass
class _Model:
    """Column bounds, integrality, costs and rows under construction (CSR)."""

    lb: list[float] = field(default_factory=list)
    ub: list[float] = field(default_factory=list)
    integer: list[int] = field(default_factory=list)
    cost: dict[int, float] = field(default_factory=dict)
    row_lo: list[float] = field(default_factory=list)
    row_hi: list[float] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)
    index: list[np.ndarray] = field(default_factory=list)
    value: list[np.ndarray] = field(default_factory=list)
    nnz: int = 0

    def cols(self, n: int, lb: float = 0.0, ub: float = 1.0, binary: bool = False) -> np.ndarray:
        first = len(self.lb)
        self.lb.extend([lb] * n)
        self.ub.extend([ub] * n)
        if binary:
            self.integer.extend(range(first, first + n))
        return np.arange(first, first + n, dtype=np.int64)

    def row(self, idx: np.ndarray, val: np.ndarray, lo: float, hi: float) -> None:
        # HiGHS rejects a row that names a column twice: sum duplicate coefficients first.
        idx, inverse = np.unique(np.asarray(idx, dtype=np.int64), return_inverse=True)
        summed = np.zeros(len(idx))
        np.add.at(summed, inverse.ravel(), np.asarray(val, dtype=np.float64))
        idx, val = idx[summed != 0], summed[summed != 0]
        self.starts.append(self.nnz)
        self.index.append(np.asarray(idx, dtype=np.int32))
        self.value.append(np.asarray(val, dtype=np.float64))
        self.nnz += len(idx)
        self.row_lo.append(lo)
        self.row_hi.append(hi)


def _highs():  # type: ignore[no-untyped-def]
    try:
        import highspy
    except ImportError as exc:  # pragma: no cover - highspy is a declared dependency
        raise BackendUnavailable("the milp solver needs the 'highspy' package (pip install highspy)") from exc
    return highspy


def _build(problem: Problem, minimise_latency: bool) -> tuple[_Model, dict[int, np.ndarray], dict[int, int], list[tuple[np.ndarray, np.ndarray]], float]:
    """Columns/rows of the model; returns (model, x columns per group, z column per block,
    latency terms (columns, coefficients), constant latency)."""
    m = _Model()
    x: dict[int, np.ndarray] = {}
    for g, grp in enumerate(problem.groups):
        # column k is option k + 1 (option 0 is forbidden: no column)
        cols = m.cols(grp.num_options - 1, binary=True)
        allowed = problem.allowed_options(g)
        for k in range(grp.num_options - 1):
            if k + 1 not in allowed:
                m.ub[cols[k]] = 0.0
        x[g] = cols
        m.row(cols, np.ones(len(cols)), 1.0, 1.0)
    z: dict[int, int] = {}
    active = problem.active_blocks()
    for b in range(problem.num_blocks):
        col = int(m.cols(1, binary=True)[0])
        if b in problem.forced_blocks:
            m.lb[col] = 1.0
        elif b not in active:
            m.ub[col] = 0.0
        z[b] = col
    u: dict[tuple[int, int], np.ndarray] = {}

    def u_cols(b: int, g: int) -> np.ndarray:
        if (b, g) not in u:
            cols = m.cols(len(x[g]))
            for uc, xc in zip(cols, x[g]):
                m.row(np.array([uc, xc]), np.array([1.0, -1.0]), -np.inf, 0.0)  # u <= x
                m.row(np.array([uc, z[b]]), np.array([1.0, -1.0]), -np.inf, 0.0)  # u <= z
                m.row(np.array([uc, xc, z[b]]), np.array([1.0, -1.0, -1.0]), -1.0, np.inf)  # u >= x+z-1
            u[(b, g)] = cols
        return u[(b, g)]

    lat_terms: list[tuple[np.ndarray, np.ndarray]] = []
    for layer in problem.layers:
        scaled = layer.latency_times_block
        rows = u_cols(layer.block, layer.group) if scaled else x[layer.group]
        if layer.in_objective and not minimise_latency:
            for c, v in zip(u_cols(layer.block, layer.group), layer.importance[1:]):
                m.cost[int(c)] = m.cost.get(int(c), 0.0) + float(v)
        if layer.prev_group is None:
            lat_terms.append((rows, layer.latency[1:]))
            continue
        if layer.prev_group == layer.group:
            lat_terms.append((rows, np.diagonal(layer.latency)[1:]))
            continue
        cols = u_cols(layer.block, layer.prev_group) if scaled else x[layer.prev_group]
        ni, nj = len(rows), len(cols)
        y = m.cols(ni * nj, ub=np.inf).reshape(ni, nj)
        for i in range(ni):
            m.row(np.append(y[i], rows[i]), np.append(np.ones(nj), -1.0), 0.0, 0.0)
        for j in range(nj):
            m.row(np.append(y[:, j], cols[j]), np.append(np.ones(ni), -1.0), 0.0, 0.0)
        lat_terms.append((y.ravel(), layer.latency[1:, 1:].ravel()))
    return m, x, z, lat_terms, problem.latency_offset


@dataclass(frozen=True, eq=False)
class _Outcome:
    """One HiGHS run: model status text, column values (None without a solution), dual bound."""

    status: str
    values: np.ndarray | None
    bound: float | None
    x: dict[int, np.ndarray]
    z: dict[int, int]


def _run(problem: Problem, minimise_latency: bool, time_limit: float | None) -> _Outcome:
    """Build and solve the MILP (maximise importance, or minimise latency without the budget)."""
    highspy = _highs()
    m, x, z, lat_terms, const_lat = _build(problem, minimise_latency)
    lat_idx = np.concatenate([t[0] for t in lat_terms]) if lat_terms else np.zeros(0, dtype=np.int64)
    lat_val = np.concatenate([t[1] for t in lat_terms]) if lat_terms else np.zeros(0)
    if minimise_latency:
        cost = np.zeros(len(m.lb))
        np.add.at(cost, lat_idx, lat_val)
    else:
        # latency budget row; the float tolerance mirrors Problem.fits
        cost = np.zeros(len(m.lb))
        for c, v in m.cost.items():
            cost[c] += v
        m.row(lat_idx, lat_val, -np.inf, problem.effective_capacity - const_lat + problem.latency_tolerance)
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("mip_rel_gap", 0.0)
    # An integer objective can only improve by 1, so a gap below 1 proves optimality.
    h.setOptionValue("mip_abs_gap", 0.5 if problem.integral and not minimise_latency else 1e-9)
    if time_limit is not None:
        h.setOptionValue("time_limit", float(max(time_limit, 0.01)))
    n = len(m.lb)
    if h.addVars(n, np.array(m.lb, dtype=np.float64), np.array(m.ub, dtype=np.float64)) == highspy.HighsStatus.kError:
        raise RuntimeError("HiGHS rejected the columns")
    ints = np.array(m.integer, dtype=np.int32)
    h.changeObjectiveSense(highspy.ObjSense.kMinimize if minimise_latency else highspy.ObjSense.kMaximize)
    starts = np.array(m.starts, dtype=np.int32)
    index = np.concatenate(m.index) if m.index else np.zeros(0, dtype=np.int32)
    value = np.concatenate(m.value) if m.value else np.zeros(0)
    calls = [
        h.changeColsIntegrality(len(ints), ints, np.ones(len(ints), dtype=np.uint8)),
        h.changeColsCost(n, np.arange(n, dtype=np.int32), cost),
        h.addRows(len(m.row_lo), np.array(m.row_lo), np.array(m.row_hi), len(index), starts, index.astype(np.int32), value),
    ]
    if any(c == highspy.HighsStatus.kError for c in calls):
        raise RuntimeError(f"HiGHS rejected the model ({calls})")
    h.run()
    status = h.modelStatusToString(h.getModelStatus())
    info = h.getInfo()
    has_solution = info.primal_solution_status == 2  # kSolutionStatusFeasible
    values = np.array(h.getSolution().col_value) if has_solution else None
    bound = float(info.mip_dual_bound) if np.isfinite(info.mip_dual_bound) else None
    return _Outcome(status, values, bound, x, z)


def _decode(problem: Problem, values: np.ndarray, x: dict[int, np.ndarray], z: dict[int, int]) -> tuple[list[int], list[int]]:
    options = [int(np.argmax(values[x[g]])) + 1 for g in range(problem.num_groups)]
    blocks = [int(round(values[z[b]])) for b in range(problem.num_blocks)]
    return options, blocks


def solve_milp(problem: Problem, time_limit: float | None = None) -> Plan:
    """Solve the transportation-form MILP with HiGHS (see the module docstring).

    Status "optimal" when HiGHS proves it (gap 0 up to 0.5 for integer objectives), "time_limit"
    with HiGHS's incumbent and dual bound otherwise, "infeasible" with the smallest latency found
    by a second MILP that minimises latency.
    """
    t0 = time.perf_counter()
    main = _run(problem, False, time_limit)
    status, values, bound = main.status, main.values, main.bound
    if status == "Infeasible":
        left = None if time_limit is None else max(0.01, time_limit - (time.perf_counter() - t0))
        fastest = _run(problem, True, left)
        st2 = fastest.status
        found = fastest.values is not None
        options, blocks = _decode(problem, fastest.values, fastest.x, fastest.z) if found else ([], [])
        ev = problem.evaluate(options, blocks) if found else None
        return Plan.infeasible(
            _NAME, latency=None if ev is None else ev.latency, options=options, blocks=blocks,
            seconds=time.perf_counter() - t0, note=f"HiGHS: {status}; latency minimisation: {st2}",
        )
    if values is None:
        return Plan(
            solver=_NAME,
            status="time_limit",
            objective=None,
            bound=bound,
            latency=None,
            options=(),
            blocks=(),
            solve_seconds=time.perf_counter() - t0,
            notes=(f"HiGHS: {status}, no feasible solution found",),
        )
    options, blocks = _decode(problem, values, main.x, main.z)
    ev = problem.evaluate(options, blocks)
    if not ev.feasible:  # the linearisation is exact, so this is a bug, not a user error
        raise RuntimeError(f"HiGHS returned a point the evaluation rejects: {'; '.join(ev.violations)}")
    optimal = status == "Optimal"
    if problem.integral and bound is not None:
        bound = int(np.floor(bound + 1e-6))
    if optimal:
        bound = ev.objective
    return Plan(
        solver=_NAME,
        status="optimal" if optimal else "time_limit",
        objective=ev.objective,
        bound=bound,
        latency=ev.latency,
        options=tuple(options),
        blocks=tuple(blocks),
        solve_seconds=time.perf_counter() - t0,
        notes=(f"HiGHS: {status}",),
    )
