import numpy as np
import pytest

from mdp_trt.latency.tables.interpolate import CoarsePlan, bilinear, coarse_axis, monotone_grid
from mdp_trt.latency.tables import Cell

from tests.latency.fixtures import conv_sig

SIG = conv_sig(64, 64, 8)
DW = conv_sig(64, 64, 8, group=64)
WIDTHS = range(8, 65, 8)


def table_cells(sig=SIG):
    if sig.depthwise:
        return [Cell(sig, w, w) for w in WIDTHS]
    return [Cell(sig, o, i) for o in WIDTHS for i in WIDTHS]


def test_coarse_axis_takes_every_kth_width_plus_the_full_one():
    assert coarse_axis([8, 16, 24, 32, 40, 48, 56, 64], 3) == (8, 32, 56, 64)
    assert coarse_axis([8, 16, 24, 32, 40, 48, 56, 64], 7) == (8, 64)
    assert coarse_axis([3], 4) == (3,)
    assert coarse_axis([16, 8, 8], 1) == (8, 16)
    with pytest.raises(ValueError):
        coarse_axis([8], 0)


def test_monotone_grid_keeps_monotone_data_and_repairs_noise():
    good = np.add.outer(np.arange(4.0), 2 * np.arange(3.0))
    assert np.array_equal(monotone_grid(good), good)
    noisy = good.copy()
    noisy[1, 1] = 10.0  # one inflated cell
    fixed = monotone_grid(noisy)
    assert np.all(np.diff(fixed, axis=0) >= 0) and np.all(np.diff(fixed, axis=1) >= 0)
    assert np.array_equal(monotone_grid(np.array([1.0, 3.0, 2.0, 4.0])), [1.0, 2.5, 2.5, 4.0])


def test_bilinear_is_exact_on_bilinear_data_and_refuses_extrapolation():
    out_grid, in_grid = np.array([8.0, 32.0, 64.0]), np.array([8.0, 40.0, 64.0])
    f = lambda o, i: 0.1 + 0.02 * o + 0.03 * i + 0.001 * o * i  # noqa: E731
    grid = np.array([[f(o, i) for i in in_grid] for o in out_grid])
    for o in (8, 20, 33, 64):
        for i in (8, 17, 40, 63):
            assert bilinear(out_grid, in_grid, grid, o, i) == pytest.approx(f(o, i))
    with pytest.raises(ValueError, match="outside"):
        bilinear(out_grid, in_grid, grid, 72, 8)


def latency(o, i):
    return 0.05 + 0.001 * o * i + 0.002 * (o + i)  # bilinear in the widths


def test_coarse_tables_are_exact_on_bilinear_latency_and_measure_far_fewer_cells():
    cells = table_cells()
    plan = CoarsePlan(cells, step=3, holdout=2)
    measure = plan.to_measure()
    assert len(measure) == 4 * 4 + 2  # grid 8,32,56,64 on both axes, plus the held-back cells
    medians = {c.key(): latency(c.out_channels, c.in_channels) for c in measure}
    values = plan.fill(medians)
    assert set(values) == {c.key() for c in cells}
    for c in cells:
        assert values[c.key()] == pytest.approx(latency(c.out_channels, c.in_channels))
    report = plan.report(medians)
    assert (report.cells_grid, report.cells_interpolated, report.held_back) == (16, 48, 2)
    assert report.max_rel_error == pytest.approx(0.0, abs=1e-12)


def test_held_back_error_is_the_relative_error_of_the_interpolant():
    cells = table_cells()
    plan = CoarsePlan(cells, step=7, holdout=1)  # grid 8, 64: corners only
    held = [c for c in plan.to_measure() if c.out_channels not in (8, 64)
            or c.in_channels not in (8, 64)]
    assert len(held) == 1
    # Quadratic latency: the corner-only bilinear interpolant overestimates inside.
    quad = lambda o, i: 0.01 * o * o + i  # noqa: E731
    medians = {c.key(): quad(c.out_channels, c.in_channels) for c in plan.to_measure()}
    o, i = held[0].out_channels, held[0].in_channels
    s = (o - 8) / 56
    predicted = (1 - s) * quad(8, i) + s * quad(64, i)
    report = plan.report(medians)
    assert report.held_back == 1
    assert report.mean_rel_error == pytest.approx(abs(predicted - quad(o, i)) / quad(o, i))
    assert report.max_rel_error == report.mean_rel_error > 0.05
    assert report.worst == [SIG.key(), o, i]
    assert plan.fill(medians)[held[0].key()] == pytest.approx(predicted)


def test_interpolated_tables_are_monotone_even_from_a_noisy_grid():
    cells = table_cells()
    plan = CoarsePlan(cells, step=2, holdout=0)
    rng = np.random.default_rng(0)
    medians = {c.key(): latency(c.out_channels, c.in_channels) * rng.uniform(0.7, 1.3)
               for c in plan.to_measure()}
    values = plan.fill(medians)
    table = np.array([[values[Cell(SIG, o, i).key()] for i in WIDTHS] for o in WIDTHS])
    off_grid = np.ones_like(table, dtype=bool)
    off_grid[::2, ::2] = False
    off_grid[-1, ::2] = off_grid[::2, -1] = False
    off_grid[-1, -1] = False
    # Grid cells keep their measurement; the interpolated ones come from the repaired grid.
    smooth = np.where(off_grid, table, np.nan)
    assert np.all(np.isnan(np.diff(smooth, axis=0)) | (np.diff(smooth, axis=0) >= -1e-12))
    assert np.all(np.isnan(np.diff(smooth, axis=1)) | (np.diff(smooth, axis=1) >= -1e-12))


def test_depthwise_grids_stay_on_the_diagonal():
    cells = table_cells(DW)
    plan = CoarsePlan(cells, step=3, holdout=1)
    measure = plan.to_measure()
    assert all(c.out_channels == c.in_channels for c in measure)
    assert [c.out_channels for c in measure[:4]] == [8, 32, 56, 64]
    medians = {c.key(): 0.01 * c.out_channels for c in measure}
    values = plan.fill(medians)
    assert values[Cell(DW, 40, 40).key()] == pytest.approx(0.4)
    assert plan.report(medians).max_rel_error == pytest.approx(0.0, abs=1e-12)


def test_cached_off_grid_cells_are_held_back_for_free():
    cells = table_cells()
    cached = [Cell(SIG, 16, 16).key(), Cell(SIG, 24, 48).key()]
    plan = CoarsePlan(cells, step=3, holdout=2, cached=cached)
    measure = plan.to_measure()
    assert len(measure) == 16 + 2
    assert {c.key() for c in measure[16:]} == set(cached)


def test_a_bad_step_is_an_input_error():
    from mdp_trt.errors import InputError

    with pytest.raises(InputError, match="`interpolate`"):
        CoarsePlan(table_cells(), step=0)


def test_profile_tables_with_interpolation_times_fewer_cells_and_reports_the_error(tmp_path):
    import json

    from mdp_trt.latency.tables.cache import LatencyCache
    from mdp_trt.latency.tables import LatencyTables, plan_cells, profile_tables, required_cells

    from tests.latency.fixtures import FakeBackend, small_analysis

    analysis = small_analysis(hw=8)
    with LatencyCache(tmp_path / "c.sqlite") as cache:
        full_backend = FakeBackend()
        full = profile_tables(analysis, group_size=4, backend=full_backend, cache=cache,
                              progress=False)
    with LatencyCache(tmp_path / "coarse.sqlite") as cache:
        backend = FakeBackend()
        coarse = profile_tables(analysis, group_size=4, backend=backend, cache=cache,
                                progress=False, interpolate=3, drift=None)
    needed = len(required_cells(plan_cells(analysis, 4)))
    assert coarse.cells_measured == len(backend.calls) < needed / 2 < full.cells_measured
    report = coarse.interpolation
    assert report["step"] == 3 and report["held_back"] > 0
    # fake_latency is linear in both widths, so interpolation is exact up to rounding.
    assert report["max_rel_error"] < 1e-9
    for name, table in full.tables.items():
        assert np.allclose(coarse.tables[name], table, rtol=1e-12)
    assert LatencyTables.from_json(json.loads(json.dumps(coarse.to_json()))) == coarse
    assert full.interpolation is None
