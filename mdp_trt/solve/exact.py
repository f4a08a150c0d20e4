"""The default solver: provably optimal plans by Pareto dynamic programming over a tree decomposition.

Steps (each exact; see ``docs/solver.md``):

1. condition out fixed variables and build the factor graph (:mod:`factor_graph`), decompose it by
   greedy elimination (:mod:`junction_tree`); if the widest clique table is too large the MILP
   solver takes over (the plan's ``solver`` and ``notes`` say so);
2. smallest achievable latency by a min-sum pass: above the budget -> status "infeasible";
3. Lagrangian dual ``min_lam max_x importance - lam * (latency - budget)`` on a grid of multipliers
   (one vectorised max-sum pass per refinement): an upper bound, and primal plans that a
   one-variable local search improves into an incumbent;
4. if the bound cannot beat the incumbent, the incumbent is optimal; otherwise the Pareto search
   (:mod:`pareto`) with latency and Lagrangian pruning proves the optimum.

With a time limit the incumbent is returned with status "time_limit" and the Lagrangian bound.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from mdp_trt.solve.factor_graph import FactorGraph, build_factor_graph
from mdp_trt.solve.junction_tree import JunctionTree, ScalarMessages, TreeTooWide, build_junction_tree
from mdp_trt.solve.pareto import SearchBounds, SearchTimeout, SearchTooLarge, pareto_search
from mdp_trt.solve.plan import Plan
from mdp_trt.solve.problem import Problem

__all__ = ["solve_exact", "MAX_CLIQUE_SIZE"]

logger = logging.getLogger(__name__)

# Widest clique table (assignments) the decomposition may have; wider problems go to the MILP.
MAX_CLIQUE_SIZE = 1 << 21
# Frontier size at which the first (incumbent-target) search gives up for optimistic targets.
_FIRST_RUN_POINTS = 4000
_NAME = "exact"


def _importance_step(problem: Problem) -> float:
    """Smallest possible improvement of the objective: 1 for integer importances, else 0."""
    return 1.0 if problem.integral else 0.0


def _tolerance(graph: FactorGraph) -> float:
    """Absolute slack for float rounding in bound computations (scale of the objective)."""
    scale = abs(graph.const_importance) + sum(float(np.max(np.abs(f.imp))) for f in graph.factors)
    return 1e-9 * max(1.0, scale)


def _local_search(graph: FactorGraph, assignment: np.ndarray, budget: float, deadline: float | None) -> np.ndarray:
    """Improve a feasible assignment by single-variable moves (more importance, or equal and faster)."""
    x = assignment.copy()
    by_var: list[list[int]] = [[] for _ in graph.variables]
    for i, f in enumerate(graph.factors):
        for v in f.scope:
            by_var[v].append(i)
    lat, imp = graph.totals(x)
    lat -= graph.const_latency
    imp -= graph.const_importance
    improved = True
    sweeps = 0
    while improved and sweeps < 50:
        improved = False
        sweeps += 1
        for v, var in enumerate(graph.variables):
            if deadline is not None and time.perf_counter() > deadline:
                return x
            d_lat = np.zeros(var.size)
            d_imp = np.zeros(var.size)
            for i in by_var[v]:
                f = graph.factors[i]
                idx = tuple(slice(None) if u == v else int(x[u]) for u in f.scope)
                d_lat += f.lat[idx]
                d_imp += f.imp[idx]
            cur = int(x[v])
            new_lat = lat + d_lat - d_lat[cur]
            new_imp = imp + d_imp - d_imp[cur]
            ok = new_lat <= budget
            if not np.any(ok):
                continue
            cand = np.nonzero(ok)[0]
            # best importance, then lowest latency
            best = cand[np.lexsort((new_lat[cand], -new_imp[cand]))[0]]
            if new_imp[best] > imp or (new_imp[best] == imp and new_lat[best] < lat):
                x[v] = best
                lat, imp = float(new_lat[best]), float(new_imp[best])
                improved = True
    return x


def _plan(problem: Problem, graph: FactorGraph, assignment: np.ndarray, **fields: object) -> Plan:
    options, blocks = graph.to_plan_arrays(assignment)
    ev = problem.evaluate(options, blocks)
    return Plan(
        options=tuple(options),
        blocks=tuple(blocks),
        latency=ev.latency,
        **fields,  # type: ignore[arg-type]
    )


def _first_lams(scale: float) -> np.ndarray:
    """The first grid of multipliers of :func:`_dual_search`."""
    return np.concatenate([[0.0], scale * np.geomspace(1e-3, 1e3, 25)])


def _dual_search(
    tree: JunctionTree,
    budget: float,
    scale: float,
    deadline: float | None,
    first: ScalarMessages | None = None,
) -> tuple[float, float, list[float], list[np.ndarray]]:
    """Minimise the Lagrangian dual over lam >= 0 on refining grids.

    Returns (best bound without the constant, best lam, the lams tried in the last grid sorted,
    decoded assignments for the feasible-side lams near the best). ``scale`` is a typical
    importance-per-latency ratio. ``first``, if given, is the upward pass for the first grid.
    """
    lams = _first_lams(scale)
    best_val = np.inf
    best_lam = 0.0
    for rnd in range(3):
        if rnd and deadline is not None and time.perf_counter() > deadline:
            break
        if rnd == 0 and first is not None:
            msgs = first
        else:
            msgs = tree.upward(np.stack([np.ones_like(lams), lams], axis=1))
        vals = msgs.total + lams * budget
        k = int(np.argmin(vals))
        if vals[k] < best_val:
            best_val, best_lam = float(vals[k]), float(lams[k])
        lo = lams[k - 1] if k > 0 else 0.0
        hi = lams[k + 1] if k + 1 < len(lams) else lams[k] * 4 + scale
        last_msgs, last_lams = msgs, lams
        lams = np.linspace(lo, hi, 12)
    # Primal candidates: decode the argmax of a few multipliers at or above the best one (those
    # tend to be feasible; infeasible ones are discarded by the caller).
    order = np.argsort(last_lams)
    cands = [int(i) for i in order if last_lams[i] >= best_lam][:4] or [int(order[-1])]
    decoded = list(tree.decode(last_msgs, cands))
    return best_val, best_lam, sorted(float(x) for x in last_lams), decoded


def solve_exact(problem: Problem, time_limit: float | None = None) -> Plan:
    """Provably optimal plan (status "optimal"), or "infeasible", or "time_limit" with a bound."""
    t0 = time.perf_counter()
    deadline = None if time_limit is None else t0 + time_limit
    graph = build_factor_graph(problem)
    try:
        tree = build_junction_tree(graph, MAX_CLIQUE_SIZE)
    except TreeTooWide as wide:
        from mdp_trt.solve.milp import solve_milp

        note = f"tree decomposition too wide ({wide}); solved by the MILP instead"
        logger.info(note)
        plan = solve_milp(problem, time_limit)
        return Plan(
            solver=f"{_NAME}(milp fallback)",
            status=plan.status,
            objective=plan.objective,
            bound=plan.bound,
            latency=plan.latency,
            options=plan.options,
            blocks=plan.blocks,
            solve_seconds=time.perf_counter() - t0,
            min_latency=plan.min_latency,
            notes=plan.notes + (note,),
        )

    tol_lat = problem.latency_tolerance
    budget = problem.effective_capacity - graph.const_latency + tol_lat
    step = _importance_step(problem)
    tol = _tolerance(graph)

    # The min-latency pass shares one upward pass with the first grid of the dual search.
    total_imp = sum(float(f.imp.max()) for f in graph.factors)
    total_lat = sum(float(f.lat.max()) for f in graph.factors)
    scale = max(total_imp, 1e-12) / max(total_lat, 1e-12)
    lams0 = _first_lams(scale)
    both = tree.upward(np.vstack([[[0.0, 1.0]], np.stack([np.ones_like(lams0), lams0], axis=1)]))
    minlat = tree.downward(ScalarMessages(both.weights[:1], [u[:1] for u in both.up], both.total[:1]))
    first = ScalarMessages(both.weights[1:], [u[1:] for u in both.up], both.total[1:])
    fastest = tree.decode(minlat, [0])[0]
    fast_plan_lat, _ = graph.totals(fastest)
    if not problem.fits(fast_plan_lat):
        options, blocks = graph.to_plan_arrays(fastest)
        ev = problem.evaluate(options, blocks)
        return Plan.infeasible(
            _NAME, latency=ev.latency, options=options, blocks=blocks,
            seconds=time.perf_counter() - t0,
            note=f"smallest achievable latency {ev.latency} exceeds the budget {problem.effective_capacity}",
        )

    if not graph.variables:
        return _plan(
            problem, graph, fastest, solver=_NAME, status="optimal",
            objective=problem.evaluate(*graph.to_plan_arrays(fastest)).objective,
            bound=problem.evaluate(*graph.to_plan_arrays(fastest)).objective,
            solve_seconds=time.perf_counter() - t0,
        )

    dual, lam_star, lams, decoded = _dual_search(tree, budget, scale, deadline, first)
    upper = dual + graph.const_importance

    # Incumbent: best feasible of the decoded Lagrangian plans and the fastest plan, polished.
    incumbent = fastest
    inc_imp = graph.totals(fastest)[1]
    for cand in decoded:
        lat, imp = graph.totals(cand)
        if lat - graph.const_latency <= budget and imp > inc_imp:
            incumbent, inc_imp = cand, imp
    incumbent = _local_search(graph, incumbent, budget, deadline)
    inc_imp = graph.totals(incumbent)[1]
    logger.debug("dual bound %.6g at lam %.4g, incumbent %.6g", upper, lam_star, inc_imp)

    def finish(assignment: np.ndarray, status: str, bound: float | None, notes: tuple[str, ...] = ()) -> Plan:
        options, blocks = graph.to_plan_arrays(assignment)
        ev = problem.evaluate(options, blocks)
        if not ev.feasible:  # never report a plan that the independent evaluation rejects
            raise AssertionError(f"exact solver produced an infeasible plan: {ev.violations}")
        if status == "optimal":
            bound = ev.objective
        elif bound is not None and problem.integral:
            bound = int(np.floor(bound + tol))
        return Plan(
            solver=_NAME,
            status=status,  # type: ignore[arg-type]
            objective=ev.objective,
            bound=bound,
            latency=ev.latency,
            options=tuple(options),
            blocks=tuple(blocks),
            solve_seconds=time.perf_counter() - t0,
            notes=notes,
        )

    if upper + tol < inc_imp + step:
        return finish(incumbent, "optimal", None, ("Lagrangian bound closes the gap",))
    if deadline is not None and time.perf_counter() > deadline:
        return finish(incumbent, "time_limit", max(upper, inc_imp), ("time limit reached before the Pareto search",))

    # Bound multipliers: the dual optimum and its neighbourhood (different lams prune different
    # points: small lams bound points that spend latency, large ones points that save it).
    factors = np.array([0.0, 0.7, 0.9, 1.0, 1.1, 1.4])
    # The most selective multiplier (the dual optimum) goes first: later ones see fewer points.
    bound_lams = lam_star * factors[np.argsort(np.abs(factors - 1.0))]
    if lam_star == 0.0:
        bound_lams = np.array([0.0, 0.01 * scale, 0.1 * scale, scale])
    lag = tree.downward(tree.upward(np.stack([np.ones_like(bound_lams), bound_lams], axis=1)))
    # Targets: the search returns the best plan at or above its target, so a hit is optimal.
    # First one run at the incumbent, abandoned if a frontier grows past a small cap (most real
    # instances finish here). Otherwise optimistic targets just below the dual bound, which prune
    # far more (the optimum is usually close to the bound), lowered fourfold after each miss until
    # the target is the incumbent's again (that last run, uncapped, alone would suffice).
    floor_target = inc_imp - graph.const_importance + step - tol
    gap = upper - inc_imp
    deltas: list[float | None] = [None]
    deltas += [gap / 4**m for m in range(4, 0, -1) if gap / 4**m > 4 * step + tol] + [None]
    search_bounds = SearchBounds(tree, lag, minlat)
    peak = 0
    for attempt, delta in enumerate(deltas):
        target = floor_target if delta is None else max(floor_target, upper - graph.const_importance - delta)
        try:
            result = pareto_search(
                tree, search_bounds, budget, target, deadline, max_points=_FIRST_RUN_POINTS if attempt == 0 else None
            )
        except SearchTooLarge:
            logger.debug("search at the incumbent outgrew %d points; trying optimistic targets", _FIRST_RUN_POINTS)
            continue
        except SearchTimeout:
            return finish(
                incumbent, "time_limit", max(upper, inc_imp), ("time limit reached during the Pareto search",)
            )
        peak = max(peak, result.peak_points)
        logger.debug("search at target %.8g (delta %s): %s", target, delta, result.importance)
        if result.assignment is not None and result.importance is not None:
            if result.importance + graph.const_importance > inc_imp:
                incumbent = result.assignment
            break
        if target <= floor_target:
            break
    notes = (f"largest frontier {peak} points; widest clique {tree.max_clique_size}",)
    return finish(incumbent, "optimal", None, notes)
