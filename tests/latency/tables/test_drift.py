import logging

import pytest

from mdp_trt.latency.tables.drift import (QUIET_MIN_REFS, DriftHistory, DriftLog, DriftPolicy,
                                          measure_guarded,
                                   workers_record)
from mdp_trt.latency.protocol import Measurement

from tests.latency.fixtures import LoadedBackend, conv_sig

SIG = conv_sig(32, 32, 8)


def cells(n):
    return [(SIG, k + 1, 8) for k in range(n)]


def run(backend, n, policy, clock=lambda: 0.0):
    stored = {}
    log = measure_guarded(backend, cells(n), lambda i, m, d: stored.__setitem__(i, (m, d)),
                          policy=policy, clock=clock)
    return log, stored


def test_a_quiet_machine_costs_one_reference_timing_per_batch():
    backend = LoadedBackend(lambda n: 1.0)
    log, stored = run(backend, 10, DriftPolicy(every_cells=4))
    assert log == DriftLog((1.0,) * 4, 0, 0)
    assert backend.calls == [(0, 0), *[(k, 8) for k in range(1, 5)], (0, 0),
                             *[(k, 8) for k in range(5, 9)], (0, 0), (9, 8), (10, 8), (0, 0)]
    assert {i: m.median_ms for i, (m, _) in stored.items()} == {i: (i + 1) / 10 for i in range(10)}
    assert all(d == 0.0 for _, d in stored.values())


def test_a_slowdown_is_detected_and_its_batch_measured_again(caplog):
    # Calls 7..11 run 50% slow: the second batch (calls 7-10) and the reference after it.
    backend = LoadedBackend(lambda n: 1.5 if 7 <= n <= 11 else 1.0)
    with caplog.at_level(logging.WARNING):
        log, stored = run(backend, 8, DriftPolicy(every_cells=4, tolerance=0.1))
    assert log.reference_ms == (1.0, 1.0, 1.5, 1.0, 1.0)  # a fresh one opens the repeat
    assert log.remeasured_cells == 4 and log.unresolved_batches == 0
    assert log.max_drift == pytest.approx(0.5)
    assert backend.calls[6:13] == [(5, 8), (6, 8), (7, 8), (8, 8), (0, 0), (0, 0), (5, 8)]
    # The faster re-measurement replaced the inflated one, timed after a quiet reference.
    assert {i: m.median_ms for i, (m, _) in stored.items()} == pytest.approx(
        {i: (i + 1) / 10 for i in range(8)})
    assert stored[4][1] == 0.0
    assert "50% above its quiet 1.000 ms" in caplog.text and "cells 5-8" in caplog.text


def test_a_first_reference_taken_under_load_makes_the_first_batch_suspect():
    backend = LoadedBackend(lambda n: 1.3 if n <= 3 else 1.0)
    log, stored = run(backend, 6, DriftPolicy(every_cells=3, tolerance=0.1))
    assert log.reference_ms == (1.3, 1.0, 1.0, 1.0, 1.0)
    assert log.remeasured_cells == 3
    assert stored[0][0].median_ms == pytest.approx(0.1)


def test_a_machine_that_stays_loaded_is_not_waited_out_forever(caplog):
    # Quiet for the first batch (calls 1-4), loaded from then on.
    backend = LoadedBackend(lambda n: 1.0 if n <= 4 else 2.0)
    with caplog.at_level(logging.WARNING):
        log, stored = run(backend, 4, DriftPolicy(every_cells=2, tolerance=0.1, max_attempts=2))
    assert log.unresolved_batches == 1 and log.remeasured_cells == 2
    # batch 1: cells, reference; batch 2: cells, reference, then a fresh reference, the cells
    # again, a reference -- and no more
    assert len(backend.calls) == 1 + (2 + 1) + (2 + 1 + 1 + 2 + 1)
    assert "stays loaded" in caplog.text
    assert stored[2][0].median_ms == pytest.approx(0.6)


def test_batches_also_close_after_every_s_seconds():
    now = [0.0]

    def clock():
        now[0] += 10.0  # every look at the clock: 10 s later
        return now[0]

    backend = LoadedBackend(lambda n: 1.0)
    log, _ = run(backend, 9, DriftPolicy(every_cells=5, every_s=25.0), clock=clock)
    # A batch opens at t; before its 2nd, 3rd, 4th cell the clock reads t+10, t+20 (< 25 s: go
    # on), t+30: close. So batches of 3 cells, not the 5 that every_cells allows.
    refs = [k for k, c in enumerate(backend.calls) if c == (0, 0)]
    assert refs == [0, 4, 8, 12] and len(log.reference_ms) == 4


def test_short_profiles_are_not_guarded():
    backend = LoadedBackend(lambda n: 1.0)
    log, stored = run(backend, 3, DriftPolicy(every_cells=3))
    assert log == DriftLog() and (0, 0) not in backend.calls
    assert all(d is None for _, d in stored.values())
    assert log.to_json() == {"reference_ms": [], "remeasured_cells": 0, "unresolved_batches": 0,
                             "max_drift": 0.0}


def test_no_policy_means_no_guard():
    backend = LoadedBackend(lambda n: 1.0)
    log, _ = run(backend, 50, None)
    assert log == DriftLog() and len(backend.calls) == 50


def test_policy_is_validated():
    with pytest.raises(ValueError):
        DriftPolicy(tolerance=0)


def test_profile_tables_guards_long_profiles_and_records_the_drift_in_the_cache(tmp_path):
    from mdp_trt.latency.tables.cache import LatencyCache
    from mdp_trt.latency.tables import profile_tables

    from tests.latency.fixtures import small_analysis

    backend = LoadedBackend(lambda n: 1.0)
    with LatencyCache(tmp_path / "c.sqlite") as cache:
        tables = profile_tables(small_analysis(), group_size=4, backend=backend, cache=cache,
                                progress=False, drift=DriftPolicy(every_cells=50))
        assert tables.cells_measured > 100
        assert tables.drift["reference_ms"] == [1.0] * (1 + -(-tables.cells_measured // 50))
        sig = small_analysis().layer("b0.conv1").signature
        assert cache.drift(backend.fingerprint(), sig, 4, 4) == 0.0


def test_a_machine_that_scatters_on_its_own_widens_the_tolerance(caplog):
    # Every series scatters by 30% (p10..p90) even on a quiet VM: a reference 20% above its
    # fastest is within that jitter and must not trigger re-measurement.
    class Jittery(LoadedBackend):
        def measure_layer(self, sig, out_channels, in_channels):
            m = super().measure_layer(sig, out_channels, in_channels)
            return Measurement(m.median_ms, 0.3, 5, m.median_ms * 0.9, m.median_ms * 1.2)

    backend = Jittery(lambda n: 1.2 if n == 6 else 1.0)
    with caplog.at_level(logging.WARNING):
        log, _ = run(backend, 8, DriftPolicy(every_cells=4, tolerance=0.08))
    assert log.remeasured_cells == 0 and "loaded" not in caplog.text
    assert log.max_drift == pytest.approx(0.2)


def test_one_fast_reference_does_not_become_the_quiet_speed(caplog):
    # The first closing reference catches a state the machine does not keep (1.0); every other
    # one reads 1.2. Once QUIET_MIN_REFS references exist, 1.2 is the quiet speed and batches pass.
    backend = LoadedBackend(lambda n: 1.0 if n == 4 else 1.2)
    with caplog.at_level(logging.WARNING):
        log, _ = run(backend, 40, DriftPolicy(every_cells=2, tolerance=0.1, max_attempts=2))
    assert QUIET_MIN_REFS == 5
    assert log.unresolved_batches == 1  # only while fewer than 5 references exist
    assert caplog.text.count("stays loaded") == 1


def test_a_fast_opening_reference_is_not_the_quiet_speed(caplog):
    # The opening reference follows idle set-up (0.8: turbo clocks, warm caches); profiling
    # then runs at 1.0 throughout. Nothing is re-measured.
    backend = LoadedBackend(lambda n: 0.8 if n == 1 else 1.0)
    with caplog.at_level(logging.WARNING):
        log, _ = run(backend, 12, DriftPolicy(every_cells=4, tolerance=0.1))
    assert log.remeasured_cells == 0 and "loaded" not in caplog.text


def test_workers_record_compares_references_within_each_worker():
    quiet, slowed = DriftLog((1.0, 1.0)), DriftLog((2.0, 2.5, 2.0), remeasured_cells=3)
    record = workers_record({"1": [quiet, slowed], "0": [DriftLog((2.0, 2.0))]})
    # Worker 0 runs at 2.0 throughout: slower than worker 1, but not drifting.
    assert record["workers"]["0"]["max_drift"] == 0.0
    assert record["workers"]["1"]["reference_ms"] == [1.0, 1.0, 2.0, 2.5, 2.0]
    assert record["max_drift"] == pytest.approx(1.5)
    assert record["remeasured_cells"] == 3 and record["unresolved_batches"] == 0
    assert list(record["workers"]) == ["0", "1"]
    assert workers_record({}) == {"max_drift": 0.0, "remeasured_cells": 0,
                                  "unresolved_batches": 0, "workers": {}}


def test_a_short_later_round_is_guarded_by_the_quiet_speed_of_the_earlier_ones():
    # Round 1 (8 cells, guarded) sees a quiet 1.0 ms reference; round 2 has 2 cells, fewer than
    # a batch, and runs under a 50% slowdown that ends after its closing reference.
    slow = set(range(12, 16))  # round 2's opening reference, its 2 cells, its closing reference
    backend = LoadedBackend(lambda n: 1.5 if n in slow else 1.0)
    history, stored = DriftHistory(), {}
    policy = DriftPolicy(every_cells=4, tolerance=0.1)
    first = measure_guarded(backend, cells(8), lambda i, m, d: None, policy=policy,
                            clock=lambda: 0.0, history=history)
    assert first.reference_ms == (1.0, 1.0, 1.0)
    second = measure_guarded(backend, cells(2), lambda i, m, d: stored.__setitem__(i, m),
                             policy=policy, clock=lambda: 0.0, history=history)
    assert second.reference_ms == (1.5, 1.5, 1.0, 1.0)  # this round's only
    assert second.remeasured_cells == 2
    assert history.reference_ms == [*first.reference_ms, *second.reference_ms]
    assert {i: m.median_ms for i, m in stored.items()} == pytest.approx({0: 0.1, 1: 0.2})
    # without the history the same short round is not guarded: its cells stay inflated
    alone = measure_guarded(LoadedBackend(lambda n: 1.5), cells(2), lambda i, m, d: None,
                            policy=policy)
    assert alone == DriftLog()
