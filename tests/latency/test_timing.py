import time

import pytest

from mdp_trt.latency.timing import CELL_POLICY, MODEL_POLICY, TimingPolicy, summarise, time_runs


def test_summarise_percentiles_and_spread():
    m = summarise(list(range(1, 12)))  # 1..11 ms
    assert m.median_ms == 6.0
    assert m.p10_ms == pytest.approx(2.0)
    assert m.p90_ms == pytest.approx(10.0)
    assert m.spread == pytest.approx(8.0 / 6.0)
    assert m.repeats == 11
    with pytest.raises(ValueError):
        summarise([])


def test_slow_calls_get_the_minimum_repeat_count():
    calls = []
    policy = TimingPolicy(warmup_runs=1, warmup_s=0.0, budget_s=0.001, min_repeats=4,
                          max_repeats=50, retries=0)
    m = time_runs(lambda: (calls.append(1), time.sleep(0.002)), policy)
    assert m.repeats == 4
    assert len(calls) == 1 + 4
    assert m.median_ms >= 2.0


def test_fast_calls_are_capped_at_the_maximum_repeat_count():
    calls = []
    policy = TimingPolicy(warmup_runs=3, warmup_s=0.0, budget_s=10.0, min_repeats=4,
                          max_repeats=25, retries=0)
    m = time_runs(lambda: calls.append(1), policy)
    assert m.repeats == 25
    assert len(calls) == 3 + 25
    assert 0 < m.p10_ms <= m.median_ms <= m.p90_ms


def test_policies_are_validated_and_models_get_more_runs_than_cells():
    with pytest.raises(ValueError):
        TimingPolicy(min_repeats=10, max_repeats=5)
    assert MODEL_POLICY.min_repeats >= 30 and MODEL_POLICY.budget_s >= 3.0
    assert CELL_POLICY.min_repeats >= 5 and CELL_POLICY.budget_s <= 0.2


def test_a_disturbed_series_is_timed_again_and_the_lowest_median_kept():
    # Warm-up (1 run) and the first series alternate 12 ms / 2 ms: the spread is high, so a
    # second series runs; from then on every call is a steady 2 ms.
    calls = []

    def run():
        calls.append(1)
        time.sleep(0.012 if len(calls) <= 7 and len(calls) % 2 else 0.002)

    policy = TimingPolicy(warmup_runs=1, warmup_s=0.0, budget_s=0.0, min_repeats=6,
                          max_repeats=6, max_spread=0.9, retries=3)
    m = time_runs(run, policy)
    assert len(calls) == 1 + 6 + 6  # one retry, then steady
    assert m.median_ms < 6.0 and m.repeats == 6


def test_retries_are_bounded():
    calls = []

    def run():
        calls.append(1)
        time.sleep(0.003 if len(calls) % 2 else 0.0)

    policy = TimingPolicy(warmup_runs=1, warmup_s=0.0, budget_s=0.0, min_repeats=4,
                          max_repeats=4, max_spread=0.1, retries=2)
    time_runs(run, policy)
    assert len(calls) == 1 + 3 * 4
