"""Paths to the official MDP instances in shared/ (tests skip when the folder is absent)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

__all__ = ["OFFICIAL_DIR", "official_reference", "official_path"]

OFFICIAL_DIR = Path(__file__).resolve().parents[3] / "shared" / "benchmarks" / "mdp_official_resnet50"


def official_reference() -> dict:
    """reference_solutions.json's per-step records (skips the test when shared/ is absent)."""
    path = OFFICIAL_DIR / "reference_solutions.json"
    if not path.exists():
        pytest.skip(f"official instances not found at {OFFICIAL_DIR}")
    return json.loads(path.read_text())["steps"]


def official_path(step: str) -> Path:
    path = OFFICIAL_DIR / f"step_{step}.json"
    if not path.exists():
        pytest.skip(f"official instance {path} not found")
    return path
