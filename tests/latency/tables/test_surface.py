import numpy as np
import pytest

from mdp_trt.latency.tables.cache import LatencyCache
from mdp_trt.latency.tables.surface import surface_values
from mdp_trt.latency.tables import Cell, LatencyTables, profile_tables

from tests.latency.fixtures import FakeBackend, conv_sig, fake_latency, small_analysis

SIG = conv_sig(64, 64, 8)
DW = conv_sig(64, 64, 8, group=64)
WIDTHS = range(8, 65, 8)


def truth(o, i):
    return 0.05 + 0.002 * (o + i) + 0.0004 * o * i + 2e-6 * o * o * i  # biquadratic


def grid_cells(sig=SIG):
    return [Cell(sig, o, i) for o in WIDTHS for i in WIDTHS]


def exact(cells):
    return {c.key(): truth(c.out_channels, c.in_channels) for c in cells}


def test_a_biquadratic_latency_is_reproduced_exactly():
    cells = grid_cells()
    values, report = surface_values(cells, exact(cells), fallback={})
    for c in cells:
        assert values[c.key()] == pytest.approx(truth(c.out_channels, c.in_channels), rel=1e-9)
    assert report.fitted == 1 and report.kept == 0
    assert report.mean_rel_residual == pytest.approx(0.0, abs=1e-9)


def test_the_surface_is_closer_to_the_true_latency_than_noisy_cells():
    cells = grid_cells()
    rng = np.random.default_rng(0)
    noisy = {k: v * float(np.exp(rng.normal(0, 0.2))) for k, v in exact(cells).items()}
    values, report = surface_values(cells, noisy, fallback=noisy)
    true = exact(cells)
    raw_error = np.mean([abs(noisy[k] / true[k] - 1) for k in true])
    fit_error = np.mean([abs(values[k] / true[k] - 1) for k in true])
    assert fit_error < raw_error / 3
    # What the surface leaves out is the noise: its residual is about the noise's size.
    assert report.mean_rel_residual == pytest.approx(raw_error, rel=0.35)


def test_cells_left_unmeasured_get_the_surface_of_the_measured_ones():
    cells = grid_cells()
    measured = {c.key(): truth(c.out_channels, c.in_channels) for c in cells
                if c.out_channels % 16 == 8 or c.in_channels % 24 == 16}
    values, _ = surface_values(cells, measured, fallback={})
    assert set(values) == {c.key() for c in cells}
    for c in cells:
        assert values[c.key()] == pytest.approx(truth(c.out_channels, c.in_channels), rel=1e-9)


def test_a_depthwise_signature_is_fitted_along_its_single_width():
    cells = [Cell(DW, w, w) for w in WIDTHS]
    measured = {c.key(): 0.01 + 0.001 * c.out_channels + 1e-5 * c.out_channels ** 2
                for c in cells}
    values, report = surface_values(cells, measured, fallback={})
    assert report.fitted == 1
    assert all(values[k] == pytest.approx(v, rel=1e-9) for k, v in measured.items())


def test_too_few_cells_or_a_surface_that_goes_negative_keep_the_measurements():
    few = [Cell(SIG, o, 64) for o in (8, 16, 24)]  # 3 cells: a line needs 4 for 2 terms
    # 2 x 2 widths: a line in one width would fit 4 cells but drop the other width's effect.
    square_sig = conv_sig(32, 32, 4)
    square = [Cell(square_sig, o, i) for o in (16, 32) for i in (16, 32)]
    steep_sig = conv_sig(64, 64, 4)
    # Latency rising steeply from out=32: its extrapolation to out=8 is below zero.
    steep = [Cell(steep_sig, o, 64) for o in range(32, 65, 4)]
    steep_measured = {c.key(): float(c.out_channels - 30) for c in steep}
    unmeasured = Cell(steep_sig, 8, 64)
    measured = {**{c.key(): 1.0 + c.out_channels for c in few}, **steep_measured,
                **{c.key(): c.out_channels * c.in_channels / 100 for c in square}}
    fallback = {**measured, unmeasured.key(): 0.5}
    values, report = surface_values(few + steep + [unmeasured] + square, measured, fallback)
    assert report.fitted == 0 and report.kept == 3 and report.mean_rel_residual is None
    assert values == fallback


def wobble(out_channels, in_channels):
    """A reproducible lognormal factor (sd 0.2) per cell: measurement noise."""
    rng = np.random.default_rng(1000 * out_channels + in_channels)
    return float(np.exp(rng.normal(0.0, 0.2)))


class NoisyCpu(FakeBackend):
    """fake_latency (linear in the widths) times ``wobble``, on a backend that declares smooth
    latency as the CPU ones do."""

    smooth_latency = True

    def measure_layer(self, sig, out_channels, in_channels):
        m = super().measure_layer(sig, out_channels, in_channels)
        value = m.median_ms * wobble(out_channels, in_channels)
        return type(m)(value, m.spread, m.repeats, value, value)


def test_a_smooth_backend_gets_surface_tables_and_the_cache_keeps_the_cells(tmp_path):
    analysis = small_analysis()
    with LatencyCache(tmp_path / "c.sqlite") as cache:
        fitted = profile_tables(analysis, group_size=4, backend=NoisyCpu(), cache=cache,
                                progress=False)
        cells = profile_tables(analysis, group_size=4, backend=NoisyCpu(), cache=cache,
                               progress=False, surface=False)
    assert cells.surface is None and fitted.surface["fitted"] >= 1
    assert 0.08 < fitted.surface["mean_rel_residual"] < 0.25  # the wobble's size
    sig = analysis.layer("b0.conv2").signature
    assert cells.layer_latency("b0.conv2", 2, 3) == pytest.approx(
        wobble(8, 12) * fake_latency(sig, 8, 12))
    errors = {name: [abs(t.layer_latency("b0.conv2", o, i) / fake_latency(sig, 4 * o, 4 * i) - 1)
                     for o in range(1, 9) for i in range(1, 9)]
              for name, t in (("fitted", fitted), ("cells", cells))}
    assert np.mean(errors["fitted"]) < 0.7 * np.mean(errors["cells"])
    assert LatencyTables.from_json(fitted.to_json()).surface == fitted.surface


def test_interpolated_surface_tables_report_the_surface_error_on_held_back_cells(tmp_path):
    with LatencyCache(tmp_path / "c.sqlite") as cache:
        tables = profile_tables(small_analysis(), group_size=8, backend=NoisyCpu(),
                                cache=cache, progress=False, interpolate=2, holdout=2)
    report = tables.interpolation
    assert tables.surface is not None and report["held_back"] > 0
    # Held-back cells carry their wobble; a surface fitted without them is off by about that
    # much, which the report must show (a report of the cells' own values would say zero).
    assert report["mean_rel_error"] > 0.02
