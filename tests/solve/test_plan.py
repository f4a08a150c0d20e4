"""`mdp-plan/1`: JSON round trip, gap, validation."""

from __future__ import annotations

import json

import pytest

from mdp_trt.errors import InputError
from mdp_trt.solve.plan import Plan


def _plan(**kw) -> Plan:
    base = dict(solver="exact", status="time_limit", objective=90, bound=100, latency=12.5,
                options=(1, 2), blocks=(1, 0), solve_seconds=0.25)
    base.update(kw)
    return Plan(**base)


def test_round_trip() -> None:
    for plan in (_plan(), _plan(status="infeasible", objective=None, bound=None, min_latency=40, notes=("x",))):
        data = json.loads(json.dumps(plan.to_json()))
        assert data["format"] == "mdp-plan/1"
        assert Plan.from_json(data) == plan


def test_unknown_fields_survive() -> None:
    data = _plan().to_json()
    data["kept_channels"] = {"g0": [0, 1]}
    plan = Plan.from_json(data)
    assert plan.extra == {"kept_channels": {"g0": [0, 1]}}
    assert plan.to_json()["kept_channels"] == {"g0": [0, 1]}


def test_gap() -> None:
    assert _plan().gap == pytest.approx(0.1)
    assert _plan(status="optimal", objective=100).gap == 0.0
    assert _plan(status="infeasible", objective=None, bound=None).gap is None


def test_validation() -> None:
    with pytest.raises(InputError, match="status"):
        _plan(status="great")
    with pytest.raises(InputError, match="format"):
        Plan.from_json({"format": "other"})
    with pytest.raises(InputError, match="missing field 'options'"):
        data = _plan().to_json()
        del data["options"]
        Plan.from_json(data)
