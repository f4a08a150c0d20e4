"""Under CI=true a test skipped for a missing file or package fails; GPU-only skips stay skips."""

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

TESTS = '''
import pytest

def test_missing_file():
    pytest.skip("benchmarks/instances/x.json is missing")

def test_needs_gpu():
    pytest.skip("torch-cuda: no CUDA device")

def test_runs():
    pass
'''


@pytest.fixture
def suite(pytester):
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text())
    pytester.makepyfile(TESTS)
    return pytester


def test_ci_turns_a_skip_for_a_missing_file_into_a_failure(suite, monkeypatch):
    monkeypatch.setenv("CI", "true")
    result = suite.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1, skipped=1)
    result.stdout.fnmatch_lines(["*skipped under CI=true (benchmarks/instances/x.json is missing)*"])


def test_outside_ci_a_skip_stays_a_skip(suite, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    suite.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1, skipped=2)
