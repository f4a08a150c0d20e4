"""The accuracy study end to end, as CI runs it: ``benchmarks/accuracy.py --quick`` (the 8x8
digits, three methods incl. Torch-Pruning, two seeds), then the same command again, which must
redo nothing and print the same table."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

for module, why in (("torch", "fine-tuning"), ("torch_pruning", "the Torch-Pruning baseline"),
                    ("sklearn", "the 8x8 digits"), ("scipy", "the paired intervals")):
    pytest.importorskip(module, reason=f"{why} needs {module} (pip install 'mdp-trt[bench]')")

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "accuracy.py"


def _quick(out: Path) -> str:
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(out),
                           "--cache", str(out / "latency-cache")],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _table(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("| 0.5 |")]


@pytest.mark.slow
def test_the_quick_study_runs_resumes_and_reports_every_method(tmp_path):
    first = _quick(tmp_path)
    rows = _table(first)
    assert [row.split(" | ")[1] for row in rows] == ["mdp", "uniform", "torch-pruning"]
    for row in rows:  # re-timed ratio, own ratio and two seeds' mean +- sd on every row
        assert "not run" not in row and "(2)" in row, row
    # MDP's comparison: the paired difference to the best baseline at its latency, or, where
    # this run's timing left no baseline at MDP's latency (a noisy CI host), the table says so
    versus = rows[0].split(" | ")[-1]
    assert re.match(r"(vs [a-z-]+: [+-]\d|no baseline (at this latency|reaches)|MDP's row is not at)",
                    versus), rows[0]
    folder = tmp_path / "runs" / "accuracy-digits"
    records = sorted(folder.rglob("*.json"))
    stamps = {p: p.stat().st_mtime_ns for p in records}
    data = json.loads((tmp_path / "accuracy.json").read_text())["digits"]
    assert data["settings"]["split_seed"] == 20261207
    assert set(data["retime"]["ratios"]) == {"mdp-0.5", "uniform-0.5", "torch-pruning-0.5"}
    assert (tmp_path / "accuracy_pareto.png").stat().st_size > 0

    again = _quick(tmp_path)
    assert _table(again) == rows
    assert {p: p.stat().st_mtime_ns for p in records} == stamps  # nothing was redone
    assert sorted(folder.rglob("*.json")) == records
