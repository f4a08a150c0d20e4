"""Fixtures shared across the test folders."""

import pytest


@pytest.fixture
def fast_prune(monkeypatch):
    """CLI prunes with short whole-model timing (the figures are not what is tested); options
    given to the fixture's ``set`` override the CLI's for the rest of the test."""
    from mdp_trt import cli

    real = cli._prune_options
    extra = {"measure_seconds": 0.2, "measure_rounds": 1, "compare_seconds": 3.0,
             "progress": False}
    monkeypatch.setattr(cli, "_prune_options", lambda **kw: real(**{**kw, **extra}))
    return extra
