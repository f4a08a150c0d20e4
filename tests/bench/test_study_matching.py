"""The study's equal-latency matching: which rows are pruned again, for which reference, and that
a row pruned again is fine-tuned again (the records carry the model's digest)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mdp_trt.bench import study
from mdp_trt.bench.study import MATCH, StudyConfig, references, run_key, unmatched


def _config(tmp_path: Path, budgets=(0.4, 0.5), methods=("mdp", "halp", "uniform"),
            match_rounds: int = 2) -> StudyConfig:
    return StudyConfig(dataset="digits", model=tmp_path / "model.onnx", module=None,
                       budgets=budgets, methods=methods, seeds=(0, 1), folder=tmp_path / "study",
                       match_rounds=match_rounds)


def _ratios(values: dict[str, float], unreliable: tuple[str, ...] = ()) -> dict[str, dict]:
    return {k: {"value": v, "low": v, "high": v, "reliable": k not in unreliable}
            for k, v in values.items()}


def test_each_budget_is_referred_to_the_median_of_its_rows(tmp_path):
    config = _config(tmp_path)
    ratios = _ratios({"mdp-0.4": 0.406, "halp-0.4": 0.392, "uniform-0.4": 0.400,
                      "mdp-0.5": 0.486, "halp-0.5": 0.490})  # uniform-0.5 had no model
    assert references(ratios, config) == pytest.approx({0.4: 0.400, 0.5: 0.488})


def test_rows_further_than_half_the_match_from_the_reference_are_pruned_again(tmp_path):
    config = _config(tmp_path)
    ratios = _ratios({"mdp-0.4": 0.400, "halp-0.4": 0.400 * (1 + MATCH / 2) + 1e-4,
                      "uniform-0.4": 0.400 * (1 - MATCH / 2) + 1e-4,  # just inside
                      "mdp-0.5": 0.490, "halp-0.5": 0.491, "uniform-0.5": 0.404})
    off = unmatched(ratios, config, {})
    assert off == pytest.approx({"halp-0.4": 0.400, "uniform-0.5": 0.490})


def test_matching_ends_at_the_rounds_cap_or_when_a_method_gives_the_same_model(tmp_path):
    ratios = _ratios({"mdp-0.5": 0.490, "halp-0.5": 0.491, "uniform-0.5": 0.404})
    config = _config(tmp_path, budgets=(0.5,))
    tried = {"same_model": False}
    assert unmatched(ratios, config, {"uniform-0.5": {"matching": [tried]}}) == pytest.approx(
        {"uniform-0.5": 0.490})
    assert unmatched(ratios, config, {"uniform-0.5": {"matching": [tried] * 3}}) == {}
    assert unmatched(ratios, config, {"uniform-0.5": {"matching": [{"same_model": True}]}}) == {}
    assert unmatched(ratios, _config(tmp_path, budgets=(0.5,), match_rounds=0), {}) == {}


def test_a_single_row_at_a_budget_is_its_own_reference(tmp_path):
    config = _config(tmp_path, budgets=(0.2,))
    assert unmatched(_ratios({"mdp-0.2": 0.23}), config, {}) == {}


def test_a_fine_tuning_record_counts_only_for_the_model_it_tuned(tmp_path):
    config = _config(tmp_path)
    run = config.folder / "runs" / run_key("mdp", 0.4)
    run.mkdir(parents=True)
    model = run / "pruned.onnx"
    model.write_bytes(b"first model")
    record = {"method": "mdp", "budget": 0.4, "model": str(model.relative_to(config.folder))}
    (run / "prune.json").write_text(json.dumps(record))
    assert not study._finetune_done(config, "mdp-0.4", 0)  # no fine-tuning record yet
    (run / "seed-0.json").write_text(json.dumps({"seed": 0, "model_sha256": study._digest(model)}))
    assert study._finetune_done(config, "mdp-0.4", 0)
    model.write_bytes(b"pruned again for matching")
    assert not study._finetune_done(config, "mdp-0.4", 0)
    (run / "seed-1.json").write_text(json.dumps({"seed": 1}))  # a record without its model's digest
    assert not study._finetune_done(config, "mdp-0.4", 1)


def test_a_row_is_pruned_again_for_the_reference_with_its_bias_corrected(tmp_path, monkeypatch):
    config = _config(tmp_path)
    run = config.folder / "runs" / run_key("halp", 0.5)
    run.mkdir(parents=True)
    (run / "pruned.onnx").write_bytes(b"first")
    record = {"method": "halp", "budget": 0.5, "target": 0.5, "own_ratio": 0.495,
              "model": "runs/halp-0.5/pruned.onnx"}
    calls = []

    def prune_again(config_, method, budget, target, splits, tolerance, model=b"second"):
        calls.append((method, budget, target, tolerance))
        (run / "pruned.onnx").write_bytes(model)
        return {"method": method, "budget": budget, "target": target, "own_ratio": 0.25,
                "model": "runs/halp-0.5/pruned.onnx"}

    monkeypatch.setattr(study, "_prune_run", prune_again)
    runs = study.StudyRuns(baseline={}, pruned={"halp-0.5": record},
                           retime={"ratios": _ratios({"mdp-0.5": 0.49, "uniform-0.5": 0.49,
                                                      "halp-0.5": 0.52})})
    again = study._rematched(config, "halp-0.5", runs, 0.49, splits=None)
    # aimed from its own measurement (0.495 of the original), not from its budget (0.5), with
    # prune's window [1 - 2 t, 1 + t] x budget centred on the reference
    t = config.tolerance / 2
    assert calls == [("halp", 0.5, pytest.approx(0.495 * 0.49 / 0.52 / (1 - t / 2)),
                      pytest.approx(t))]
    aim, target = 0.495 * 0.49 / 0.52, calls[0][2]
    low, high = target * (1 - 2 * t) / aim - 1, target * (1 + t) / aim - 1
    assert low == pytest.approx(-high, abs=1e-4) and high < MATCH / 2
    assert again["matching"][0]["retimed_ratio"] == 0.52 and not again["matching"][0]["same_model"]
    assert json.loads((run / "prune.json").read_text()) == again  # on disk: resumable

    monkeypatch.setattr(study, "_prune_run", lambda *a: prune_again(*a, model=b"second"))
    runs.pruned["halp-0.5"] = again
    third = study._rematched(config, "halp-0.5", runs, 0.49, splits=None)
    assert [t["same_model"] for t in third["matching"]] == [False, True]
    assert unmatched(runs.retime["ratios"], config, {"halp-0.5": again}) == {"halp-0.5": 0.49}
    assert unmatched(runs.retime["ratios"], config, {"halp-0.5": third}) == {}


def test_an_unreliable_ratio_is_no_reason_to_prune_again(tmp_path):
    config = _config(tmp_path, budgets=(0.5,))
    values = {"mdp-0.5": 0.490, "halp-0.5": 0.491, "uniform-0.5": 0.404}
    assert unmatched(_ratios(values, unreliable=("uniform-0.5",)), config, {}) == {}
    assert unmatched(_ratios(values), config, {}) == pytest.approx({"uniform-0.5": 0.490})


def test_a_re_timing_with_an_unreliable_ratio_is_repeated_a_few_times():
    shaky = {"ratios": _ratios({"mdp-0.5": 0.49}, unreliable=("mdp-0.5",))}
    assert not study._settled(shaky | {"tries": 1})
    assert study._settled(shaky | {"tries": study.RETIME_TRIES})
    assert study._settled({"ratios": _ratios({"mdp-0.5": 0.49}), "tries": 1})


def test_the_common_re_timing_runs_under_the_study_s_own_time_limit(tmp_path, monkeypatch):
    config = _config(tmp_path, budgets=(0.5,))
    config = study.replace(config, retime_seconds=123.0)
    config.folder.mkdir()
    for name in ("model.onnx", "a.onnx"):
        (tmp_path / name).write_bytes(name.encode())
    seen = {}

    def backend(name, *, threads, model_policy):
        seen["policy"] = model_policy
        raise RuntimeError("stop here")

    monkeypatch.setattr(study, "get_backend", backend)
    with pytest.raises(RuntimeError, match="stop here"):
        study._retimed(config, {"mdp-0.5": {"model": "../a.onnx"}})
    assert seen["policy"].compare_s == 123.0
    assert seen["policy"].ratio_halfwidth == study.MODEL_POLICY.ratio_halfwidth


def test_a_study_folder_timed_on_another_machine_is_not_resumed_here(tmp_path):
    config = _config(tmp_path)
    config.folder.mkdir()
    config.model.write_bytes(b"model")
    (config.folder / "baseline.json").write_text(json.dumps({
        "settings": config.settings(),
        "fingerprint": {"device": "another CPU, 2 cores", "runtime": "onnxruntime",
                        "runtime_version": "1.0"}}))
    with pytest.raises(study.InputError, match="timed on another CPU, 2 cores.*this machine is"):
        study._baseline(config, None, print)


def test_a_re_timing_limit_that_is_not_positive_is_refused_before_anything_runs(tmp_path):
    config = study.replace(_config(tmp_path), retime_seconds=0.0)
    config.model.write_bytes(b"model")
    with pytest.raises(study.InputError, match="time limit must be positive, got 0 s"):
        config.check()


def test_a_method_scored_by_another_importance_is_a_study_method_of_its_own(tmp_path, monkeypatch):
    config = _config(tmp_path, methods=("mdp", "mdp@magnitude"))
    config.model.write_bytes(b"model")
    config.check()
    assert study.scored_by("mdp@magnitude", config) == ("mdp", "magnitude")
    assert study.scored_by("mdp", config) == ("mdp", config.importance) == ("mdp", "taylor")
    for wrong in ("torch-pruning@magnitude", "mdp@weights", "nope"):
        with pytest.raises(study.InputError, match=rf"unknown method\(s\) {wrong}.*METHOD@IMPORTANCE"):
            study.replace(config, methods=(wrong,)).check()

    seen = {}

    def prune(model, folder, options):  # what the study hands mdp-trt's prune
        seen.update(method=options.method, importance=options.importance,
                    calib=options.calib_data, budget=(options.budget, options.budget_ms))
        raise study.InfeasibleBudget("stop here", min_latency=0.7)

    monkeypatch.setattr("mdp_trt.prune.prune", prune)
    record = study._prune_run(config, "mdp@magnitude", 0.5, 0.48, splits=None, tolerance=0.01)
    # a ratio to the original timed beside each plan, never milliseconds of another minute
    assert seen == {"method": "mdp", "importance": "magnitude", "calib": None, "budget": (0.48, None)}
    assert record["method"] == "mdp@magnitude" and record["infeasible"] == "stop here"


def test_a_study_folder_pruned_for_millisecond_budgets_is_not_resumed(tmp_path):
    config = _config(tmp_path)
    path = config.folder / "runs" / run_key("mdp", 0.5) / "prune.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"method": "mdp", "budget": 0.5, "budget_ms": 0.1,
                                "measured_ms": 0.1, "model": "runs/mdp-0.5/prune/pruned.onnx"}))
    with pytest.raises(study.InputError, match="budget in milliseconds.*new folder"):
        study._pruned(config, "mdp", 0.5, splits=None)
