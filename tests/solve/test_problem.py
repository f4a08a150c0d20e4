"""Loading, validation, exact evaluation and JSON round trip of `mdp-minlp-instance/1` problems."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from mdp_trt.errors import InputError
from mdp_trt.solve.generate import chain_instance, random_instance
from mdp_trt.solve.problem import load_problem
from tests.solve.official import official_path, official_reference


def _tiny() -> dict:
    """Stem (group 0, 3 options) -> conv (group 1, 3 options) in block 1; block 0 forced."""
    return {
        "format": "mdp-minlp-instance/1",
        "name": "tiny",
        "capacity": 30,
        "extra_space": 0,
        "groups": [{"name": "stem", "num_options": 3}, {"name": "x", "num_options": 3}],
        "blocks": [{"id": 0, "name": "layer0.0"}, {"id": 1, "name": "layer1.0"}],
        "layers": [
            {"name": "stem", "group": 0, "prev_group": None, "block": 0, "latency": [0, 5, 8],
             "importance": [0, 1, 2], "in_objective": False, "latency_times_block": False},
            {"name": "conv", "group": 1, "prev_group": 0, "block": 1,
             "latency": [[0, 0, 0], [0, 4, 6], [0, 7, 20]], "importance": [0, 10, 15]},
        ],
        "constraints": {"block_forced_kept": 0, "stem": {"group": 0, "forced_option": 2}},
        "metadata": {"made_by": "test"},
    }


def test_evaluate_by_hand() -> None:
    p = load_problem(_tiny())
    assert p.integral
    ev = p.evaluate([2, 1], [1, 1])
    assert (ev.objective, ev.latency, ev.feasible) == (10, 8 + 6, True)
    assert isinstance(ev.objective, int) and isinstance(ev.latency, int)
    ev = p.evaluate([2, 2], [1, 1])
    assert (ev.objective, ev.latency, ev.feasible) == (15, 28, True)
    ev = p.evaluate([2, 2], [1, 0])  # block removed: its latency and importance vanish
    assert (ev.objective, ev.latency, ev.feasible) == (0, 8, True)


def test_evaluate_reports_each_violation() -> None:
    p = load_problem(_tiny())
    assert not p.evaluate([1, 1], [1, 1]).feasible  # stem not at its forced option
    assert not p.evaluate([2, 0], [1, 1]).feasible  # option 0
    assert not p.evaluate([2, 1], [0, 1]).feasible  # forced block removed
    d = _tiny()
    d["capacity"] = 27
    ev = load_problem(d).evaluate([2, 2], [1, 1])
    assert not ev.feasible and "budget" in ev.violations[0]
    with pytest.raises(InputError, match="3 options"):
        p.evaluate([2, 1, 1], [1, 1])
    with pytest.raises(InputError, match="out of range"):
        p.evaluate([2, 3], [1, 1])


def test_latency_offset_and_extra_space() -> None:
    d = _tiny()
    d["latency_offset"] = 5
    d["extra_space"] = 2
    p = load_problem(d)
    assert p.effective_capacity == 32
    ev = p.evaluate([2, 2], [1, 1])
    assert ev.latency == 33 and not ev.feasible
    assert p.evaluate([2, 1], [1, 1]).latency == 19


def test_negative_latency_offset_shifts_the_budget() -> None:
    d = _tiny()
    d["latency_offset"] = -5
    p = load_problem(d)
    assert p.evaluate([2, 2], [1, 1]).latency == 23
    shifted = _tiny()
    shifted["capacity"] = d["capacity"] + 5
    shifted["effective_capacity"] = shifted["capacity"] + shifted.get("extra_space", 0)
    from mdp_trt.solve import solve

    a, b = solve(p, "exact"), solve(load_problem(shifted), "exact")
    assert a.status == b.status == "optimal"
    assert a.objective == b.objective and tuple(a.options) == tuple(b.options)


def test_float_data_evaluate_exactly() -> None:
    d = _tiny()
    d["layers"][1]["latency"] = [[0, 0, 0], [0, 0.1, 0.2], [0, 0.3, 0.7]]
    d["layers"][1]["importance"] = [0, 0.25, 0.5]
    d["capacity"] = 8.2
    p = load_problem(d)
    assert not p.integral
    ev = p.evaluate([2, 1], [1, 1])
    assert ev.latency == pytest.approx(8.2) and ev.feasible  # 8 + 0.2 fits despite float rounding
    assert isinstance(ev.objective, float)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(format="mdp-minlp-instance/2"), "format"),
        (lambda d: d.pop("capacity"), "capacity"),
        (lambda d: d.update(capacity="fast"), "capacity"),
        (lambda d: d["layers"][1].update(latency=[[0, 0, 0], [0, 4, 6]]), "latency has 2 rows, expected 3"),
        (lambda d: d["layers"][1].update(latency=[[0, 0], [0, 4], [0, 7]]), "latency has 2 columns, expected 3"),
        (lambda d: d["layers"][1].update(latency=[0, 4, 7]), "dimension"),
        (lambda d: d["layers"][0].update(latency=[0, 5]), "latency has shape"),
        (lambda d: d["layers"][1].update(latency=[[0, 0, 0], [0, -4, 6], [0, 7, 20]]), "negative"),
        (lambda d: d["layers"][1].update(latency=[[0, 0, 0], [0, float("nan"), 6], [0, 7, 20]]), "non-finite"),
        (lambda d: d["layers"][1].update(importance=[0, 10]), "importance has shape"),
        (lambda d: d["layers"][1].update(importance=[1, 10, 15]), r"importance\[0\]"),
        (lambda d: d["layers"][1].update(group=5), "group is 5"),
        (lambda d: d["layers"][1].update(prev_group=-1), "prev_group is -1"),
        (lambda d: d["layers"][1].update(block=2), "block is 2"),
        (lambda d: d["groups"][1].update(num_options=1), "num_options"),
        (lambda d: d["constraints"].update(stem={"group": 0, "forced_option": 3}), "forced_option"),
        (lambda d: d["constraints"].update(block_forced_kept=7), "block_forced_kept"),
        (lambda d: d["constraints"].update(option_zero_forbidden=False), "option_zero_forbidden"),
        (lambda d: d.update(effective_capacity=99), "effective_capacity"),
        (lambda d: d.update(latency_offset="x"), "latency_offset"),
        (lambda d: d["blocks"][1].update(id=5), "id is 5"),
        (lambda d: d.update(layers=[]), "layers"),
    ],
)
def test_validation_names_the_field(mutate, message: str) -> None:
    d = _tiny()
    mutate(d)
    with pytest.raises(InputError, match=message):
        load_problem(d)


def test_error_names_the_layer() -> None:
    d = _tiny()
    d["layers"][1]["latency"] = [[0, 0, 0], [0, 4, 6]]
    with pytest.raises(InputError, match=r"layer 'conv': latency has 2 rows, expected 3 \(num_options of group 'x'\)"):
        load_problem(d)


def test_missing_file_and_bad_json(tmp_path) -> None:
    with pytest.raises(InputError, match="cannot read"):
        load_problem(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_problem(bad)


def test_optional_fields_of_our_pipeline() -> None:
    d = _tiny()
    del d["constraints"]
    d["groups"].append({"name": "unprunable", "num_options": 2})
    d["layers"].append({"name": "fc", "group": 2, "prev_group": None, "block": 0, "latency": [0, 3],
                        "importance": [0, 0.5], "in_objective": True, "latency_times_block": True})
    p = load_problem(d)
    assert p.stem is None and p.forced_blocks == (0,)  # the official model always keeps block 0
    assert list(p.allowed_options(2)) == [1]
    assert p.evaluate([1, 1, 1], [1, 1]).objective == pytest.approx(10.5)
    d["constraints"] = {"block_forced_kept": None}
    assert load_problem(d).forced_blocks == ()


def test_json_round_trip_preserves_everything(tmp_path) -> None:
    for d in (_tiny(), random_instance(3, integral=False), chain_instance(5, 4, seed=1, block_size=2)):
        p = load_problem(d)
        path = tmp_path / "p.json"
        path.write_text(json.dumps(p.to_json()))
        q = load_problem(path)
        assert q.to_json() == p.to_json()
        assert q.extra == p.extra
        rng = np.random.default_rng(0)
        for _ in range(10):
            opts = [int(rng.integers(1, g.num_options)) for g in p.groups]
            blocks = [int(rng.integers(2)) for _ in p.blocks]
            assert q.evaluate(opts, blocks) == p.evaluate(opts, blocks)
    assert load_problem(_tiny()).to_json()["metadata"] == {"made_by": "test"}


def test_official_instance_matches_reference() -> None:
    ref = official_reference()
    for step in ("00", "05", "23"):
        p = load_problem(official_path(step))
        opt = ref[step]["optimum"]
        ev = p.evaluate(opt["options"], opt["blocks"])
        assert ev.feasible
        assert (ev.objective, ev.latency) == (opt["objective"], opt["latency"])
        assert p.to_json()["source"] == json.loads(official_path(step).read_text())["source"]


def test_inputs_are_not_mutated() -> None:
    d = _tiny()
    before = copy.deepcopy(d)
    load_problem(d)
    assert d == before
