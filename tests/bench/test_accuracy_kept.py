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
    assert accuracy.kept_studies(tmp_path / "accuracy.json", run={"mnist": {}}) == {}
    assert "digits study has other settings" in capsys.readouterr().err
    assert accuracy.kept_studies(tmp_path / "nothing.json", run={}) == {}
