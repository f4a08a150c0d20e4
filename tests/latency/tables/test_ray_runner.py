import importlib.util
import sys

import numpy as np
import pytest

from mdp_trt.errors import BackendUnavailable
from mdp_trt.latency.tables.cache import LatencyCache
from mdp_trt.latency.tables.drift import DriftPolicy
from mdp_trt.latency.protocol import DeviceFingerprint
from mdp_trt.latency.tables.ray_runner import chunk_cells, measure_chunk, ray_measure_cells
from mdp_trt.latency.backends.registry import get_backend
from mdp_trt.latency.tables import Cell, plan_cells, profile_tables, required_cells

from tests.latency.fixtures import FakeBackend, LoadedBackend, conv_sig, small_analysis

RAY_MISSING = importlib.util.find_spec("ray") is None
needs_ray = pytest.mark.skipif(RAY_MISSING, reason="ray is not installed (pip install 'mdp-trt[ray]')")
OPTIONS = {"threads": 1}


def test_without_ray_it_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes "import ray" fail
    with pytest.raises(BackendUnavailable, match="mdp-trt\\[ray\\]"):
        ray_measure_cells("ort-cpu", OPTIONS)


@pytest.fixture(scope="module")
def ray_cluster():
    if RAY_MISSING:
        pytest.skip("ray is not installed (pip install 'mdp-trt[ray]')")
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _cells(analysis, group_size):
    return required_cells(plan_cells(analysis, group_size))


def _rows(cache, fp, analysis, group_size):
    return {c.key(): cache.get(fp, c.signature, c.out_channels, c.in_channels)
            for c in _cells(analysis, group_size)}


def _drifts(cache, fp, analysis, group_size):
    return [cache.drift(fp, c.signature, c.out_channels, c.in_channels)
            for c in _cells(analysis, group_size)]


# small_analysis at group size 16 has 14 cells: two guarded chunks of 7 for two workers.
GUARD = DriftPolicy(every_cells=3)


@needs_ray
@pytest.mark.slow
def test_ray_profile_equals_the_local_one_and_resumes(ray_cluster, tmp_path):
    analysis = small_analysis(hw=16)
    backend = get_backend("ort-cpu", **OPTIONS)
    fp = backend.fingerprint()
    with LatencyCache(tmp_path / "local.sqlite") as cache:
        local = profile_tables(analysis, group_size=16, backend=backend, cache=cache,
                               progress=False, drift=GUARD)
        local_rows = _rows(cache, fp, analysis, 16)
    measure = ray_measure_cells("ort-cpu", OPTIONS)
    with LatencyCache(tmp_path / "ray.sqlite") as cache:
        remote = profile_tables(analysis, group_size=16, backend=backend, cache=cache,
                                progress=False, drift=GUARD, measure_cells=measure)
        remote_rows = _rows(cache, fp, analysis, 16)
        drifts = _drifts(cache, fp, analysis, 16)
        again = profile_tables(analysis, group_size=16, backend=backend, cache=cache,
                               progress=False, drift=GUARD, measure_cells=measure)
    assert None not in drifts and all(d >= 0 for d in drifts)
    assert set(remote.drift["workers"]) == {"0", "1"}
    # 7 cells in batches of 3: 4 references, more if the busy machine made a batch repeat.
    assert all(len(w["reference_ms"]) >= 4 for w in remote.drift["workers"].values())
    assert remote.drift["max_drift"] >= 0 and remote.drift["remeasured_cells"] >= 0
    assert remote.cells_measured == local.cells_measured > 0
    assert set(remote_rows) == set(local_rows) and None not in remote_rows.values()
    assert remote.tables.keys() == local.tables.keys() and remote.channels == local.channels
    ratios = [remote_rows[k].median_ms / local_rows[k].median_ms for k in local_rows]
    # Generous: two workers share two (busy) cores; the same cells must come out comparable.
    assert 0.5 < float(np.median(ratios)) < 2.0, ratios
    assert all(0.2 < r < 5.0 for r in ratios), ratios
    assert again.cells_measured == 0 and again.cells_cached == remote.cells_measured
    assert again.tables == remote.tables


@needs_ray
@pytest.mark.slow
def test_workers_with_another_fingerprint_are_refused(ray_cluster, tmp_path):
    analysis = small_analysis(hw=8)
    backend = get_backend("ort-cpu", **OPTIONS)
    other = DeviceFingerprint(**{**backend.fingerprint().to_json(), "device": "another CPU"})
    measure = ray_measure_cells("ort-cpu", OPTIONS, workers=1, expected=other)
    with LatencyCache(tmp_path / "c.sqlite") as cache:
        with pytest.raises(BackendUnavailable, match="differs from the local"):
            profile_tables(analysis, group_size=16, backend=backend, cache=cache,
                           progress=False, measure_cells=measure)
        assert not cache.get_many(backend.fingerprint(), analysis.layers[0].signature)


@needs_ray
@pytest.mark.slow
def test_ray_cells_carry_no_drift_without_a_guard(ray_cluster, tmp_path):
    analysis = small_analysis(hw=8)
    backend = get_backend("ort-cpu", **OPTIONS)
    with LatencyCache(tmp_path / "c.sqlite") as cache:
        tables = profile_tables(analysis, group_size=16, backend=backend, cache=cache,
                                progress=False, drift=None,
                                measure_cells=ray_measure_cells("ort-cpu", OPTIONS))
        assert _drifts(cache, backend.fingerprint(), analysis, 16) == [None] * 14
    assert tables.drift["max_drift"] == 0.0 and tables.drift["remeasured_cells"] == 0
    assert all(w["reference_ms"] == [] for w in tables.drift["workers"].values())


@pytest.fixture
def spawns(monkeypatch) -> list[int]:
    """The actor count of every ``RayCells._spawn`` (a cluster's costly start)."""
    from mdp_trt.latency.tables.ray_runner import RayCells

    counts: list[int] = []
    spawn = RayCells._spawn
    monkeypatch.setattr(RayCells, "_spawn",
                        lambda self, count: counts.append(count) or spawn(self, count))
    return counts


def _cell_list(n):
    return [Cell(conv_sig(32, 32, 8), k + 1, 8) for k in range(n)]


def test_unguarded_chunks_are_single_cells():
    cells = _cell_list(10)
    assert chunk_cells(cells, None, 2) == [[c] for c in cells]
    # Too few cells for one guarded batch: the guard would not run either.
    assert chunk_cells(cells, DriftPolicy(every_cells=10), 2) == [[c] for c in cells]


@pytest.mark.parametrize("n, workers, every, sizes", [
    (14, 2, 3, [7, 7]),
    (1000, 4, 64, [125] * 8),  # 6 chunks of 3 batches would idle two workers at the end
    (130, 2, 64, [65, 65]),
    (129, 2, 64, [129]),  # two chunks of 64 and 65 cells: the first would go unguarded
    (200, 8, 64, [67, 67, 66]),  # 8 chunks would be too short to guard
    (11, 1, 2, [6, 5]),
])
def test_guarded_chunks_are_a_few_batches_each_longer_than_one(n, workers, every, sizes):
    cells = _cell_list(n)
    chunks = chunk_cells(cells, DriftPolicy(every_cells=every), workers)
    assert [len(c) for c in chunks] == sizes
    assert [c for chunk in chunks for c in chunk] == cells


def test_a_worker_slowed_for_one_batch_measures_it_again():
    # Calls 6-9 run 50% slow: the second batch of 3 cells and the reference after it.
    backend = LoadedBackend(lambda n: 1.5 if 6 <= n <= 9 else 1.0)
    cells = _cell_list(7)
    chunk = measure_chunk(backend, cells, DriftPolicy(every_cells=3, tolerance=0.1), "3")
    assert chunk.worker == "3" and [c for c, _, _ in chunk.cells] == cells
    assert chunk.log.remeasured_cells == 3 and chunk.log.max_drift == pytest.approx(0.5)
    assert [(out, in_) for out, in_ in backend.calls if out].count((4, 8)) == 2
    # Each cell keeps its quiet timing, taken when the reference read the quiet speed.
    assert [m.median_ms for _, m, _ in chunk.cells] == pytest.approx([k / 10 for k in range(1, 8)])
    assert [d for _, _, d in chunk.cells] == [0.0] * 7


def test_a_chunk_without_a_policy_is_unguarded():
    backend = LoadedBackend(lambda n: 1.0)
    chunk = measure_chunk(backend, _cell_list(7), None, "0")
    assert [d for _, _, d in chunk.cells] == [None] * 7
    assert chunk.log.reference_ms == () and len(backend.calls) == 7


def test_profile_tables_caches_each_cell_with_its_workers_drift(tmp_path):
    # Two workers of the same device model; the second is slowed during its second batch.
    workers = [LoadedBackend(lambda n: 1.0), LoadedBackend(lambda n: 1.5 if 6 <= n <= 9 else 1.0)]

    def elsewhere(cells, policy):
        for k, chunk in enumerate(chunk_cells(cells, policy, 2)):
            yield measure_chunk(workers[k % 2], chunk, policy, str(k % 2))

    analysis = small_analysis()
    policy = DriftPolicy(every_cells=3, tolerance=0.1)
    with LatencyCache(tmp_path / "c.sqlite") as cache, LatencyCache(tmp_path / "d.sqlite") as ref:
        tables = profile_tables(analysis, group_size=16, backend=LoadedBackend(lambda n: 1.0),
                                cache=cache, progress=False, drift=policy,
                                measure_cells=elsewhere)
        local = profile_tables(analysis, group_size=16, backend=LoadedBackend(lambda n: 1.0),
                               cache=ref, progress=False, drift=policy)
        assert _drifts(cache, workers[0].fingerprint(), analysis, 16) == [0.0] * 14
    assert tables.tables == local.tables  # the slowed batch's timings were replaced
    assert tables.drift["max_drift"] == pytest.approx(0.5)
    assert tables.drift["remeasured_cells"] == 3 and tables.drift["unresolved_batches"] == 0
    assert {k: w["remeasured_cells"] for k, w in tables.drift["workers"].items()} == {"0": 0,
                                                                                     "1": 3}


def test_cells_measured_elsewhere_are_cached_as_they_arrive(tmp_path):
    backend = FakeBackend()
    seen = []

    def elsewhere(cells, policy):
        with backend:  # stands in for remote workers with the same fingerprint
            for cell in reversed(cells):  # any completion order
                seen.append(cell)
                yield measure_chunk(backend, [cell], policy, "0")

    with LatencyCache(tmp_path / "c.sqlite") as cache, LatencyCache(tmp_path / "d.sqlite") as ref:
        tables = profile_tables(small_analysis(), group_size=16, backend=backend, cache=cache,
                                progress=False, measure_cells=elsewhere)
        local = profile_tables(small_analysis(), group_size=16, backend=FakeBackend(), cache=ref,
                               progress=False)
    assert tables.cells_measured == len(seen) == local.cells_measured
    assert tables.tables == local.tables

    def short(cells, policy):
        yield from list(elsewhere(cells, policy))[:1]

    with LatencyCache(tmp_path / "e.sqlite") as cache:
        with pytest.raises(RuntimeError, match="returned 1 of"):
            profile_tables(small_analysis(), group_size=16, backend=backend, cache=cache,
                           progress=False, measure_cells=short)


@needs_ray
@pytest.mark.slow
def test_the_actors_serve_every_round_until_closed(ray_cluster, spawns):
    cells = _cell_list(3)
    with ray_measure_cells("ort-cpu", OPTIONS, workers=1) as measure:
        first = [c for chunk in measure(cells[:2], None) for c in chunk.cells]
        second = [c for chunk in measure(cells[2:], None) for c in chunk.cells]
        assert len(measure._actors) == 1
    assert [c for c, _, _ in first + second] == cells and spawns == [1]
    assert measure._actors == [] and ray_cluster.is_initialized()  # not the caller's cluster


@needs_ray
@pytest.mark.slow
def test_no_more_actors_start_than_the_first_round_has_chunks(ray_cluster, spawns):
    with ray_measure_cells("ort-cpu", OPTIONS) as measure:  # the cluster has room for 2
        assert len([c for chunk in measure(_cell_list(1), None) for c in chunk.cells]) == 1
    assert spawns == [1]
