"""Baseline: the paper's MINLP model solved as the official code does, with Pyomo's MindtPy.

The model is the one ``knapsack_pyomo`` of NVlabs/MDP builds (see the instance README): binary
``x[g][i]`` and ``b[k]``, ``sum_i x[g][i] >= 1``, ``x[g][0] <= 0``, the stem and block 0 fixed,
a bilinear objective and the cubic latency constraint ``sum b * L[i][j] * x[g][i] * x[p][j]``.
The call is ``SolverFactory('mindtpy').solve(model, strategy='OA', init_strategy='FP',
mip_solver='glpk', nlp_solver='ipopt')``; when only the ``cyipopt`` Python binding of Ipopt is
present (no ``ipopt`` executable), ``nlp_solver='cyipopt'`` is used as a fallback and the plan's
notes say so (``scripts/install_mindtpy_deps.sh`` builds the ``ipopt`` AMPL executable from
Debian's Ipopt source package, and the fallback's pynumero ASL extension against Debian's
libamplsolver). MindtPy leaves variables that occur in no constraint (a block whose layers all
have zero coefficients) without a value; they take 0, with a note.
MindtPy is a heuristic for nonconvex models: its "optimal" is not a proof, so this solver reports
status "feasible" with MindtPy's own bound in the notes.

Missing GLPK or Ipopt raises BackendUnavailable naming what is missing; install them with
``scripts/install_mindtpy_deps.sh``.
"""

from __future__ import annotations

import logging
import shutil
import time

from mdp_trt.errors import BackendUnavailable
from mdp_trt.solve.plan import Plan
from mdp_trt.solve.problem import Problem

__all__ = ["mindtpy_unavailable_reason", "solve_mindtpy"]

logger = logging.getLogger(__name__)

_NAME = "mindtpy"
_INSTALL_HINT = "install them with scripts/install_mindtpy_deps.sh"


def _nlp_solver() -> str | None:
    """'ipopt' (AMPL executable) if on PATH, else 'cyipopt' if Pyomo can drive it, else None."""
    if shutil.which("ipopt"):
        return "ipopt"
    try:
        import cyipopt  # noqa: F401
        import scipy  # noqa: F401  (pynumero needs it)
        from pyomo.contrib.pynumero.asl import AmplInterface
    except Exception:  # ImportError, or a broken libipopt (OSError)
        return None
    # Pyomo's cyipopt route evaluates the model through pynumero's compiled ASL extension.
    return "cyipopt" if AmplInterface.available() else None


def mindtpy_unavailable_reason() -> str | None:
    """Why the mindtpy solver cannot run here (None when it can)."""
    missing = []
    try:
        import pyomo.environ  # noqa: F401
    except ImportError:
        missing.append("the 'pyomo' package (pip install 'mdp-trt[mindtpy]')")
    if not shutil.which("glpsol"):
        missing.append("GLPK (the 'glpsol' executable, Debian package glpk-utils)")
    if _nlp_solver() is None:
        missing.append(
            "Ipopt (an 'ipopt' executable on PATH, or the 'cyipopt' package plus scipy and Pyomo's "
            "pynumero ASL extension from 'pyomo build-extensions')"
        )
    if not missing:
        return None
    return "the mindtpy solver needs " + " and ".join(missing) + "; " + _INSTALL_HINT


def _build_model(problem: Problem):  # type: ignore[no-untyped-def]
    import pyomo.environ as pyo

    # One binary vector as in the official code: all x in group order, then the blocks.
    offsets = []
    n = 0
    for grp in problem.groups:
        offsets.append(n)
        n += grp.num_options
    block_base = n
    n += problem.num_blocks
    model = pyo.ConcreteModel()
    model.x = pyo.Var(range(n), within=pyo.Binary)

    def xv(g: int, i: int):  # type: ignore[no-untyped-def]
        return model.x[offsets[g] + i]

    def bv(b: int):  # type: ignore[no-untyped-def]
        return model.x[block_base + b]

    model.cons = pyo.ConstraintList()
    for g, grp in enumerate(problem.groups):
        model.cons.add(sum(xv(g, i) for i in range(grp.num_options)) >= 1)
        model.cons.add(sum(xv(g, i) for i in range(grp.num_options)) <= 1)
        model.cons.add(xv(g, 0) <= 0)
    if problem.stem is not None:
        model.cons.add(xv(problem.stem[0], problem.stem[1]) >= 1)
    for b in problem.forced_blocks:
        model.cons.add(bv(b) >= 1)
    obj = 0
    lat = problem.latency_offset
    for layer in problem.layers:
        g, p = layer.group, layer.prev_group
        if layer.in_objective:
            obj = obj + bv(layer.block) * sum(
                float(layer.importance[i]) * xv(g, i) for i in range(1, problem.groups[g].num_options) if layer.importance[i]
            )
        if p is None:
            term = sum(float(layer.latency[i]) * xv(g, i) for i in range(1, problem.groups[g].num_options) if layer.latency[i])
        elif p == g:
            term = sum(float(layer.latency[i, i]) * xv(g, i) for i in range(1, problem.groups[g].num_options) if layer.latency[i, i])
        else:
            term = sum(
                float(layer.latency[i, j]) * xv(g, i) * xv(p, j)
                for i in range(1, problem.groups[g].num_options)
                for j in range(1, problem.groups[p].num_options)
                if layer.latency[i, j]
            )
        lat = lat + (bv(layer.block) * term if layer.latency_times_block else term)
    model.latency = pyo.Constraint(expr=lat <= problem.effective_capacity)
    model.obj = pyo.Objective(expr=obj, sense=pyo.maximize)
    return model, offsets, block_base


def _referenced_ids(model) -> set[int]:  # type: ignore[no-untyped-def]
    """ids of the variables that occur in the model's active constraints or objectives."""
    import pyomo.environ as pyo
    from pyomo.core.expr.visitor import identify_variables

    ids: set[int] = set()
    for comp in (pyo.Constraint, pyo.Objective):
        for data in model.component_data_objects(comp, active=True, descend_into=True):
            ids.update(id(v) for v in identify_variables(data.expr, include_fixed=True))
    return ids


def solve_mindtpy(problem: Problem, time_limit: float | None = None) -> Plan:
    """Run MindtPy (OA, FP init, GLPK, Ipopt) on the paper's model; status "feasible" or "infeasible".

    Raises BackendUnavailable when GLPK or Ipopt are missing (see :func:`mindtpy_unavailable_reason`).
    """
    reason = mindtpy_unavailable_reason()
    if reason is not None:
        raise BackendUnavailable(reason)
    import pyomo.environ as pyo

    t0 = time.perf_counter()
    model, offsets, block_base = _build_model(problem)
    nlp = _nlp_solver()
    kwargs = dict(strategy="OA", init_strategy="FP", mip_solver="glpk", nlp_solver=nlp)
    if time_limit is not None:
        kwargs["time_limit"] = max(1, int(time_limit))
    notes: list[str] = []
    if nlp != "ipopt":
        notes.append(f"nlp_solver={nlp!r} (no 'ipopt' executable found)")
    try:
        result = pyo.SolverFactory("mindtpy").solve(model, **kwargs)
        termination = str(result.solver.termination_condition)
        upper = getattr(result.problem, "upper_bound", None)
        notes.append(f"MindtPy termination {termination}, its bounds {result.problem.lower_bound}..{upper}")
    except Exception as exc:  # MindtPy raises bare exceptions on NLP/MIP failures
        termination = "error"
        notes.append(f"MindtPy raised {type(exc).__name__}: {exc}")
    values = [pyo.value(model.x[i], exception=False) for i in range(len(model.x))]
    # MindtPy only hands back variables that occur in an active constraint or the objective; a
    # block whose layers all have zero coefficients occurs nowhere, keeps value None, and takes 0
    # (its value changes neither objective nor latency).
    referenced = _referenced_ids(model)
    missing = [i for i, v in enumerate(values) if v is None]
    unused = [i for i in missing if id(model.x[i]) not in referenced]
    if len(unused) < len(missing):
        unused = []  # a variable of the model has no value either: no solution at all
    for i in unused:
        values[i] = 0.0
    if unused:
        notes.append(f"{len(unused)} variable(s) occur in no constraint or objective; set to 0")
    if any(v is None for v in values):
        return Plan(
            solver=_NAME,
            status="time_limit" if termination != "infeasible" else "infeasible",
            objective=None,
            bound=None,
            latency=None,
            options=(),
            blocks=(),
            solve_seconds=time.perf_counter() - t0,
            notes=tuple(notes + ["no solution returned"]),
        )
    options = []
    for g, grp in enumerate(problem.groups):
        row = values[offsets[g] : offsets[g] + grp.num_options]
        options.append(max(range(grp.num_options), key=lambda i: row[i]))
    blocks = [int(round(values[block_base + b])) for b in range(problem.num_blocks)]
    ev = problem.evaluate(options, blocks)
    if not ev.feasible:
        notes.append("MindtPy's point is infeasible: " + "; ".join(ev.violations))
    return Plan(
        solver=_NAME,
        status="feasible" if ev.feasible else "time_limit",
        objective=ev.objective if ev.feasible else None,
        bound=None,
        latency=ev.latency,
        options=tuple(options),
        blocks=tuple(blocks),
        solve_seconds=time.perf_counter() - t0,
        notes=tuple(notes),
    )
