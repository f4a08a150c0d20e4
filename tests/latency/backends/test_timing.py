import pytest

from mdp_trt.latency.backends import timing
import numpy as np

from mdp_trt.latency.protocol import Comparison
from mdp_trt.latency.backends.timing import (CELL_POLICY, MODEL_POLICY, TimingPolicy, median_interval,
                                   summarise, time_interleaved, time_runs)


class FakeClock:
    """Stands in for the timing module's clock: a call 'takes' exactly what it sleeps, so the
    policy's decisions do not depend on how busy the test machine is."""

    def __init__(self) -> None:
        self.ns = 0

    def perf_counter_ns(self) -> int:
        return self.ns

    def sleep(self, seconds: float) -> None:
        self.ns += round(seconds * 1e9)


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(timing, "time", fake)
    return fake


def test_summarise_percentiles_and_spread():
    m = summarise(list(range(1, 12)))  # 1..11 ms
    assert m.median_ms == 6.0
    assert m.p10_ms == pytest.approx(2.0)
    assert m.p90_ms == pytest.approx(10.0)
    assert m.spread == pytest.approx(8.0 / 6.0)
    assert m.repeats == 11
    with pytest.raises(ValueError):
        summarise([])


def test_slow_calls_get_the_minimum_repeat_count(clock):
    calls = []
    policy = TimingPolicy(warmup_runs=1, warmup_s=0.0, budget_s=0.001, min_repeats=4,
                          max_repeats=50, retries=0)
    m = time_runs(lambda: (calls.append(1), clock.sleep(0.002)), policy)
    assert m.repeats == 4
    assert len(calls) == 1 + 4
    assert m.median_ms == pytest.approx(2.0)


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


def test_a_disturbed_series_is_timed_again_and_the_lowest_median_kept(clock):
    # Warm-up (1 run) and the first series alternate 12 ms / 2 ms: the spread is high, so a
    # second series runs; from then on every call is a steady 2 ms.
    calls = []

    def run():
        calls.append(1)
        clock.sleep(0.012 if len(calls) <= 7 and len(calls) % 2 else 0.002)

    policy = TimingPolicy(warmup_runs=1, warmup_s=0.0, budget_s=0.0, min_repeats=6,
                          max_repeats=6, max_spread=0.9, retries=3)
    m = time_runs(run, policy)
    assert len(calls) == 1 + 6 + 6  # one retry, then steady
    assert m.median_ms == pytest.approx(2.0) and m.repeats == 6


def test_retries_are_bounded(clock):
    calls = []

    def run():
        calls.append(1)
        clock.sleep(0.003 if len(calls) % 2 else 0.0)

    policy = TimingPolicy(warmup_runs=1, warmup_s=0.0, budget_s=0.0, min_repeats=4,
                          max_repeats=4, max_spread=0.1, retries=2)
    time_runs(run, policy)
    assert len(calls) == 1 + 3 * 4


def test_interleaved_runs_alternate_in_blocks_and_each_gets_its_repeats(clock):
    order = []
    runs = [lambda: (order.append("a"), clock.sleep(0.001)),
            lambda: (order.append("b"), clock.sleep(0.002))]
    policy = TimingPolicy(warmup_runs=2, warmup_s=0.0, budget_s=0.0, min_repeats=12,
                          max_repeats=12, block_s=0.0045)
    compared = time_interleaved(runs, policy)
    a, b = compared.measurements
    # Blocks of 4 (a) and 2 (b) timed calls, each opened by one untimed call; 6 rounds give b
    # its 12 runs (and a 24); the order within a round alternates.
    assert order[:4] == ["a", "a", "b", "b"]  # warm-up
    rounds = order[4:]
    assert rounds[:16] == ["a"] * 5 + ["b"] * 3 + ["b"] * 3 + ["a"] * 5
    assert rounds.count("a") == 6 * 5 and rounds.count("b") == 6 * 3
    assert (a.repeats, b.repeats) == (24, 12)
    assert (a.median_ms, b.median_ms) == pytest.approx((1.0, 2.0))
    (ratio,) = compared.ratios
    assert (ratio.value, ratio.low, ratio.high, ratio.rounds) == pytest.approx((2.0, 2.0, 2.0, 6))
    assert ratio.reliable  # steady: no round beyond the six needed for an interval


def test_a_slow_spell_falls_on_interleaved_runs_alike(clock):
    # From its 90th call on, the machine runs 3x slower. Timed one after the other, the second
    # model takes the whole spell and reads 6x the first; interleaved, both medians move alike.
    calls = []

    def model(ms):
        def run():
            calls.append(1)
            clock.sleep(ms / 1000 * (3 if len(calls) >= 90 else 1))
        return run

    policy = TimingPolicy(warmup_runs=1, warmup_s=0.0, budget_s=0.0, min_repeats=80,
                          max_repeats=80, block_s=0.01, retries=0)
    compared = time_interleaved([model(1.0), model(2.0)], policy)
    fast, slow = compared.measurements
    assert slow.median_ms / fast.median_ms == pytest.approx(2.0, rel=0.25)
    assert compared.ratios[0].value == pytest.approx(2.0, rel=0.01)
    calls.clear()
    fast, slow = time_runs(model(1.0), policy), time_runs(model(2.0), policy)
    assert slow.median_ms / fast.median_ms > 4


def test_nothing_to_interleave_gives_nothing():
    assert time_interleaved([], MODEL_POLICY) == Comparison([], [])


def test_compared_models_are_compared_by_block_means_not_medians(clock):
    # A loaded machine gives this process 2/3 of a core, in slices of a few ms: a 30 ms call is
    # always interrupted (45 ms), a 0.1 ms call only every 20th time (by 1 ms). Medians say
    # 0.1/45 = 0.0022, the share of the machine each gets says 0.15/45 = 0.0033 = 0.1/30.
    calls = []

    def short():
        calls.append(1)
        clock.sleep((0.1 + (1.0 if len(calls) % 20 == 0 else 0.0)) / 1000)

    policy = TimingPolicy(warmup_runs=1, warmup_s=0.0, budget_s=0.0, min_repeats=1,
                          max_repeats=1, block_s=0.2, retries=0)
    compared = time_interleaved([lambda: clock.sleep(0.045), short], policy)
    long, fast = compared.measurements
    assert fast.median_ms / long.median_ms == pytest.approx(0.1 / 45)
    assert compared.ratios[0].value == pytest.approx(0.1 / 30, rel=0.01)


def test_rounds_go_on_until_the_interval_is_narrow_or_time_is_up(clock):
    rounds = []

    def noisy(spread):
        def run():
            rounds.append(1)
            clock.sleep(0.002 * (1 + spread * (-1) ** (len(rounds) // 5)))
        return run

    policy = TimingPolicy(warmup_runs=1, warmup_s=0.0, budget_s=0.0, min_repeats=1,
                          max_repeats=1, block_s=0.01, retries=0, ratio_halfwidth=0.02,
                          compare_s=2.0)
    steady = time_interleaved([lambda: clock.sleep(0.002), noisy(0.0)], policy)
    assert steady.ratios[0].reliable and steady.ratios[0].rounds == 6
    start = clock.ns
    shaky = time_interleaved([lambda: clock.sleep(0.002), noisy(0.3)], policy)
    assert not shaky.ratios[0].reliable and shaky.ratios[0].halfwidth > 0.02
    assert (clock.ns - start) / 1e9 >= 2.0 and shaky.ratios[0].rounds > 6


def test_median_interval_is_the_binomial_order_statistics():
    assert median_interval(np.arange(10.0)) == (1.0, 8.0)
    assert median_interval(np.arange(100.0)) == (39.0, 60.0)
    assert median_interval(np.arange(5.0)) == (0.0, 4.0)  # too few for better than the range
