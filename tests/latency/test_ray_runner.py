import importlib.util
import sys

import numpy as np
import pytest

from mdp_trt.errors import BackendUnavailable
from mdp_trt.latency.cache import LatencyCache
from mdp_trt.latency.protocol import DeviceFingerprint
from mdp_trt.latency.ray_runner import ray_measure_cells
from mdp_trt.latency.registry import get_backend
from mdp_trt.latency.tables import plan_cells, profile_tables, required_cells

from .fixtures import small_analysis

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


def _rows(cache, fp, analysis, group_size):
    cells = required_cells(plan_cells(analysis, group_size))
    return {(c.signature.key(), c.out_channels, c.in_channels): cache.get(
        fp, c.signature, c.out_channels, c.in_channels) for c in cells}


@needs_ray
@pytest.mark.slow
def test_ray_profile_equals_the_local_one_and_resumes(ray_cluster, tmp_path):
    analysis = small_analysis(hw=16)
    backend = get_backend("ort-cpu", **OPTIONS)
    fp = backend.fingerprint()
    with LatencyCache(tmp_path / "local.sqlite") as cache:
        local = profile_tables(analysis, group_size=16, backend=backend, cache=cache,
                               progress=False, drift=None)
        local_rows = _rows(cache, fp, analysis, 16)
    measure = ray_measure_cells("ort-cpu", OPTIONS)
    with LatencyCache(tmp_path / "ray.sqlite") as cache:
        remote = profile_tables(analysis, group_size=16, backend=backend, cache=cache,
                                progress=False, measure_cells=measure)
        remote_rows = _rows(cache, fp, analysis, 16)
        again = profile_tables(analysis, group_size=16, backend=backend, cache=cache,
                               progress=False, measure_cells=measure)
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


def test_cells_measured_elsewhere_are_cached_as_they_arrive(tmp_path):
    from .fixtures import FakeBackend

    backend = FakeBackend()
    seen = []

    def elsewhere(cells):
        with backend:  # stands in for a remote worker with the same fingerprint
            for cell in reversed(cells):  # any completion order
                seen.append(cell)
                yield cell, backend.measure_layer(cell.signature, cell.out_channels,
                                                  cell.in_channels)

    with LatencyCache(tmp_path / "c.sqlite") as cache, LatencyCache(tmp_path / "d.sqlite") as ref:
        tables = profile_tables(small_analysis(), group_size=16, backend=backend, cache=cache,
                                progress=False, measure_cells=elsewhere)
        local = profile_tables(small_analysis(), group_size=16, backend=FakeBackend(), cache=ref,
                               progress=False)
    assert tables.cells_measured == len(seen) == local.cells_measured
    assert tables.tables == local.tables

    def short(cells):
        yield from list(elsewhere(cells))[:1]

    with LatencyCache(tmp_path / "e.sqlite") as cache:
        with pytest.raises(RuntimeError, match="returned 1 of"):
            profile_tables(small_analysis(), group_size=16, backend=backend, cache=cache,
                           progress=False, measure_cells=short)
