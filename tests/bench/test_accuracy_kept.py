"""``benchmarks/accuracy.py`` keeps the data sets it did not run from the previous accuracy.json
(their run folders are gone on a fresh clone) and renders them as they were rendered."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"


def _script():
    spec = importlib.util.spec_from_file_location("accuracy_script", ROOT / "benchmarks" / "accuracy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _table_lines(text: str, dataset: str) -> list[str]:
    section = text.split(f"## {dataset}:", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| 0.")]


def test_a_study_not_run_is_rendered_from_the_stored_json_as_committed(tmp_path):
    accuracy = _script()
    stored = json.loads((RESULTS / "accuracy.json").read_text())
    (tmp_path / "accuracy.json").write_text(json.dumps({"mnist": stored["mnist"]}))
    kept = accuracy.kept_studies(tmp_path / "accuracy.json", run={})
    assert list(kept) == ["mnist"] and kept["mnist"]["kept"]
    config = kept["mnist"]["config"]
    assert config.budgets == (0.2, 0.4, 0.5, 0.6, 0.8) and config.seeds == (0, 1, 2, 3, 4)
    text = accuracy.markdown(kept, "--datasets digits")
    committed = (RESULTS / "accuracy.md").read_text()
    assert _table_lines(text, "mnist") == _table_lines(committed, "mnist")
    assert "not run by the command above" in text


def test_a_data_set_run_now_or_of_another_model_is_not_kept(tmp_path, capsys):
    accuracy = _script()
    stored = json.loads((RESULTS / "accuracy.json").read_text())
    stored["digits"]["settings"]["model_sha256"] = "0" * 16  # the model file was retrained since
    (tmp_path / "accuracy.json").write_text(json.dumps(stored))
    others = {dataset: {} for dataset in stored if dataset != "digits"}  # run by this command
    assert accuracy.kept_studies(tmp_path / "accuracy.json", run=others) == {}
    assert "digits study has other settings" in capsys.readouterr().err
    assert accuracy.kept_studies(tmp_path / "nothing.json", run={}) == {}


def test_mdp_is_compared_with_its_importance_ablation_beside_the_best_baseline():
    accuracy = _script()

    def row(method, seeds, ratio=0.5, marked=False):
        return {"method": method, "by_seed": dict(enumerate(seeds)), "ratio": ratio,
                "marked": marked, "accuracy_mean": sum(seeds) / len(seeds)}

    rows = [row("mdp", [0.95, 0.96, 0.97]), row("uniform", [0.90, 0.91, 0.92]),
            row("mdp@magnitude", [0.93, 0.95, 0.95])]
    verdict = accuracy._versus_best(rows)
    # the ablation is no baseline: MDP is compared with uniform, and with the ablation beside it
    assert verdict.startswith("vs uniform: +5.00 [")
    assert "; vs mdp@magnitude: +1.67 [" in verdict


def test_a_transformer_study_says_which_heads_and_mlp_channels_each_model_kept(tmp_path):
    from mdp_trt.bench.study import StudyConfig, StudyRuns
    from mdp_trt.bench.study_sets import STUDY_MODELS

    accuracy = _script()
    config = StudyConfig(dataset="mnist-vit", model=STUDY_MODELS["mnist-vit"], module=None,
                         budgets=(0.5,), methods=("mdp", "uniform"), seeds=(0,), folder=tmp_path)
    kept = {f"blocks.{i}.attn.qkv": [48 if i else 16, 64] for i in range(4)}
    kept |= {f"blocks.{i}.mlp.fc1": [128, 256] for i in range(4)} | {"patch_embed.proj": [64, 64], "head": [10, 10]}
    runs = StudyRuns(baseline={}, pruned={
        "mdp-0.5": {"kept_channels": kept, "removed_blocks": ["blocks.0.attn", "blocks.3.mlp"]},
        "uniform-0.5": {"infeasible": "no plan"}})
    lines = accuracy._structure(config, runs)
    # heads of 16 channels: block 0's attention is gone, 3 x 3 heads kept in the others; block
    # 3's MLP is gone; the infeasible row has no model to describe
    assert lines[-1] == "| 0.5 | mdp | 9/16 | 384/1024 | 2 |"
    assert not any("uniform" in line for line in lines)
