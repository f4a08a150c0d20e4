"""Paths to the official MDP instances, which travel with the repository
(benchmarks/instances/mdp_official_resnet50: 30 problems and their proven optima, 1 MB), so the
solver tests run in any clone. A missing file is a broken checkout: the test fails, never skips."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["OFFICIAL_DIR", "official_reference", "official_path"]

OFFICIAL_DIR = (Path(__file__).resolve().parents[2] / "benchmarks" / "instances"
                / "mdp_official_resnet50")


def official_reference() -> dict:
    """reference_solutions.json's per-step records."""
    return json.loads((OFFICIAL_DIR / "reference_solutions.json").read_text())["steps"]


def official_path(step: str) -> Path:
    path = OFFICIAL_DIR / f"step_{step}.json"
    assert path.is_file(), f"official instance {path} missing from the checkout"
    return path
