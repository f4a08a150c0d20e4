"""A cell's per-call overhead is taken out of every table entry (tables/overhead.py)."""

import pytest

from mdp_trt.latency.backends.ort_cpu import OrtCpuBackend
from mdp_trt.latency.backends.timing import TimingPolicy
from mdp_trt.latency.protocol import Measurement
from mdp_trt.latency.tables import LatencyTables, profile_tables
from mdp_trt.latency.tables.cache import LatencyCache
from mdp_trt.latency.tables.overhead import FLOOR, OVERHEAD_CELL, net_of_overhead
from mdp_trt.report import ProfileSummary

from tests.latency.fixtures import FakeBackend, fake_latency, small_analysis

CALL_MS = 0.5


class CallingBackend(FakeBackend):
    """Every cell costs its fake latency plus a call of ``CALL_MS``; the overhead cell almost
    only the call."""

    call_overhead = True

    def measure_layer(self, sig, out_channels, in_channels) -> Measurement:
        m = super().measure_layer(sig, out_channels, in_channels)
        work = 0.001 if (sig, out_channels, in_channels) == (
            OVERHEAD_CELL.signature, OVERHEAD_CELL.out_channels, OVERHEAD_CELL.in_channels) else m.median_ms
        value = work + CALL_MS
        return Measurement(value, 0.01, 5, value, value)


def profile(backend, cache, **kw) -> LatencyTables:
    return profile_tables(small_analysis(), group_size=8, backend=backend, cache=cache,
                          progress=False, surface=False, monotone=False, **kw)


def test_every_entry_loses_the_call_once_and_the_cell_is_cached_apart_from_the_counts(tmp_path):
    analysis = small_analysis()
    with LatencyCache(tmp_path / "c.sqlite") as cache:
        backend = CallingBackend()
        tables = profile(backend, cache)
        timed = len(backend.calls)
        again_backend = CallingBackend()
        again = profile(again_backend, cache)
        cached = len(cache)
    assert tables.call_overhead_ms == pytest.approx(CALL_MS + 0.001)
    sig = analysis.layer("b0.conv1").signature
    # (work + call) - (call + 0.001): the work, to the overhead cell's own work
    assert tables.layer_latency("b0.conv1", 2, 3) == pytest.approx(fake_latency(sig, 16, 24) - 0.001)
    # the overhead cell counts in no total
    assert tables.cells_measured == timed - 1 == cached - 1 and tables.cells_cached == 0
    assert again.cells_measured == 0 and again.cells_cached == tables.cells_measured
    assert again_backend.calls == [] and again.tables == tables.tables
    assert "call's overhead (501.0 us) taken out" in ProfileSummary.of(tables).describe()
    assert LatencyTables.from_json(tables.to_json()).call_overhead_ms == tables.call_overhead_ms


def test_no_entry_falls_below_its_floor():
    key = ("sig", 8, 8)
    assert net_of_overhead({key: 1.0}, 0.3) == {key: pytest.approx(0.7)}
    assert net_of_overhead({key: 0.5}, 0.6) == {key: FLOOR * 0.5}


def test_backends_without_a_call_overhead_and_cold_cells_are_left_as_timed(tmp_path):
    with LatencyCache(tmp_path / "c.sqlite") as cache:
        plain = profile(FakeBackend(), cache)
    assert plain.call_overhead_ms == 0.0
    cold = CallingBackend()
    cold.weights = "cold"  # a replicated layer spreads the call over its copies
    with LatencyCache(tmp_path / "d.sqlite") as cache:
        tables = profile(cold, cache)
    assert tables.call_overhead_ms == 0.0 and OVERHEAD_CELL.signature not in {c[0] for c in cold.calls}
    sig = small_analysis().layer("b0.conv1").signature
    assert tables.layer_latency("b0.conv1", 2, 3) == pytest.approx(fake_latency(sig, 16, 24) + CALL_MS)


def test_onnx_runtime_cells_lose_the_time_of_an_almost_empty_call(tmp_path):
    backend = OrtCpuBackend(cell_policy=TimingPolicy(warmup_runs=1, warmup_s=0.0, budget_s=0.002,
                                                     min_repeats=5))
    sig = small_analysis().layer("b0.conv1").signature
    with LatencyCache(tmp_path / "c.sqlite") as cache:
        tables = profile(backend, cache)
        overhead = cache.get_many(backend.fingerprint(), OVERHEAD_CELL.signature)
        cell = cache.get_many(backend.fingerprint(), sig)[(16, 24)].median_ms
    assert 0 < tables.call_overhead_ms == overhead[(1, 1)].median_ms < 1.0  # microseconds
    assert tables.layer_latency("b0.conv1", 2, 3) == pytest.approx(
        max(cell - tables.call_overhead_ms, FLOOR * cell))
