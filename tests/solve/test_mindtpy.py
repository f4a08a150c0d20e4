"""The MindtPy baseline: clean refusal without its solvers, a real run when they are present."""

from __future__ import annotations

import pytest

from mdp_trt.errors import BackendUnavailable
from mdp_trt.solve import mindtpy as mindtpy_module
from mdp_trt.solve.exact import solve_exact
from mdp_trt.solve.generate import chain_instance
from mdp_trt.solve.mindtpy import _build_model, mindtpy_unavailable_reason, solve_mindtpy
from mdp_trt.solve.problem import load_problem
from tests.solve.official import official_path, official_reference


def test_missing_solvers_raise_with_the_fix(monkeypatch) -> None:
    monkeypatch.setattr(mindtpy_module.shutil, "which", lambda name: None)
    monkeypatch.setattr(mindtpy_module, "_nlp_solver", lambda: None)
    reason = mindtpy_unavailable_reason()
    assert reason is not None
    assert "glpsol" in reason and "Ipopt" in reason and "scripts/install_mindtpy_deps.sh" in reason
    with pytest.raises(BackendUnavailable, match="install_mindtpy_deps.sh"):
        solve_mindtpy(load_problem(chain_instance(3, 3)))


def test_model_matches_the_problem() -> None:
    """The Pyomo model's objective and latency equal Problem.evaluate at binary points."""
    pyo = pytest.importorskip("pyomo.environ")
    p = load_problem(chain_instance(4, 4, seed=2, block_size=2))
    model, offsets, block_base = _build_model(p)
    for options, blocks in (([3, 2, 1, 3], [1, 1, 0]), ([1, 1, 1, 1], [1, 0, 1])):
        for i in range(len(model.x)):
            model.x[i].set_value(0)
        for g, o in enumerate(options):
            model.x[offsets[g] + o].set_value(1)
        for b, flag in enumerate(blocks):
            model.x[block_base + b].set_value(flag)
        ev = p.evaluate(options, blocks)
        assert pyo.value(model.obj) == pytest.approx(ev.objective)
        assert pyo.value(model.latency.body) == pytest.approx(ev.latency)


def test_runs_when_available() -> None:
    reason = mindtpy_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    p = load_problem(chain_instance(5, 4, seed=1))
    plan = solve_mindtpy(p, time_limit=60)
    assert plan.status in ("feasible", "time_limit")
    if plan.status == "feasible":
        assert p.evaluate(plan.options, plan.blocks).feasible
        assert plan.objective <= solve_exact(p).objective


def test_cyipopt_fallback_runs_when_available(monkeypatch) -> None:
    """Without an 'ipopt' executable the cyipopt binding (pynumero ASL extension) is used."""
    real_which = mindtpy_module.shutil.which
    monkeypatch.setattr(mindtpy_module.shutil, "which", lambda name: None if name == "ipopt" else real_which(name))
    reason = mindtpy_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    assert mindtpy_module._nlp_solver() == "cyipopt"
    p = load_problem(chain_instance(4, 3, seed=3))
    plan = solve_mindtpy(p, time_limit=60)
    assert any("cyipopt" in note for note in plan.notes)
    assert plan.status in ("feasible", "time_limit")
    if plan.status == "feasible":
        assert p.evaluate(plan.options, plan.blocks).feasible


def test_official_step_24_reproduces_the_rerun() -> None:
    """Step 24 has a block in no constraint (MindtPy leaves it None); the plan still comes back."""
    reason = mindtpy_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    reference = official_reference()["24"]["mindtpy_rerun"]
    p = load_problem(official_path("24"))
    plan = solve_mindtpy(p, time_limit=600)
    assert plan.status == "feasible"
    assert plan.objective == reference["objective"]
    assert list(plan.blocks) == reference["blocks"]
