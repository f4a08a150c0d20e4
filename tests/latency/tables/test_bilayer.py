import json

import pytest

from mdp_trt.analysis import Analysis, ChannelGroup, Layer
from mdp_trt.errors import InputError
from mdp_trt.latency.tables.cache import LatencyCache
from mdp_trt.latency.backends.ort_cpu import OrtCpuBackend
from mdp_trt.latency.protocol import Measurement
from mdp_trt.latency.tables import Cell, LatencyTables, plan_cells, profile_tables, required_cells
from mdp_trt.latency.backends.timing import TimingPolicy

from tests.latency.fixtures import (FakeBackend, SmoothBackend, conv_sig, fake_latency,
                                    small_analysis)


def profile(analysis, backend, cache, group_size=8):
    return profile_tables(analysis, group_size=group_size, backend=backend, cache=cache,
                          progress=False)


def test_tables_have_one_row_per_output_option_and_one_column_per_input_option(tmp_path):
    analysis = small_analysis()
    with LatencyCache(tmp_path / "c.sqlite") as cache:
        tables = profile(analysis, FakeBackend(), cache)
    assert set(tables.tables) == {layer.name for layer in analysis.layers}
    stem = tables.tables["stem"]
    assert len(stem) == 5 and all(len(row) == 2 for row in stem)  # graph input: [0, value]
    conv = tables.tables["b0.conv2"]
    assert len(conv) == 5 and all(len(row) == 5 for row in conv)
    fc = tables.tables["fc"]
    assert len(fc) == 2 and len(fc[0]) == 5  # logits unprunable: one real row
    for matrix in tables.tables.values():
        assert all(v == 0.0 for v in matrix[0])
        assert all(row[0] == 0.0 for row in matrix)
        assert all(v > 0 for row in matrix[1:] for v in row[1:])
    assert tables.channels["stem"] == [[0, 8, 16, 24, 32], [0, 3]]
    assert tables.channels["fc"] == [[0, 10], [0, 8, 16, 24, 32]]


def test_rows_are_output_widths_and_columns_input_widths(tmp_path):
    analysis = small_analysis()
    with LatencyCache(tmp_path / "c.sqlite") as cache:
        tables = profile(analysis, FakeBackend(), cache)
    sig = analysis.layer("b0.conv1").signature
    assert tables.layer_latency("b0.conv1", 1, 3) == fake_latency(sig, 8, 24)
    assert tables.layer_latency("b0.conv1", 3, 1) == fake_latency(sig, 24, 8)
    stem = analysis.layer("stem").signature
    assert tables.layer_latency("stem", 2, 1) == fake_latency(stem, 16, 3)
    with pytest.raises(IndexError, match="stem"):
        tables.layer_latency("stem", 2, 2)
    with pytest.raises(KeyError, match="nope"):
        tables.layer_latency("nope", 1, 1)


def test_depthwise_cells_use_the_surviving_width(tmp_path):
    analysis = small_analysis()
    with LatencyCache(tmp_path / "c.sqlite") as cache:
        tables = profile(analysis, FakeBackend(), cache)
    sig = analysis.layer("dw").signature
    dw = tables.tables["dw"]
    for i in range(1, 5):
        for j in range(1, 5):
            width = 8 * min(i, j)
            assert dw[i][j] == fake_latency(sig, width, width)


def test_equal_signatures_share_cells_and_the_cell_list_is_deterministic():
    analysis = small_analysis()
    cells = required_cells(plan_cells(analysis, 8))
    keys = [c.key() for c in cells]
    assert len(keys) == len(set(keys))
    # stem 4x1, inner 4x4 (shared by both blocks), outer 4x4 (shared), dw 4 widths, fc 1x4
    assert len(cells) == 4 + 16 + 16 + 4 + 4
    assert keys == [c.key() for c in required_cells(plan_cells(small_analysis(), 8))]
    assert (cells[0].out_channels, cells[0].in_channels) == (8, 3)  # analysis order, row-major
    assert (cells[4].out_channels, cells[4].in_channels) == (8, 8)
    assert (cells[5].out_channels, cells[5].in_channels) == (8, 16)


def test_second_profile_measures_nothing_new(tmp_path):
    analysis = small_analysis()
    path = tmp_path / "c.sqlite"
    first_backend = FakeBackend()
    with LatencyCache(path) as cache:
        first = profile(analysis, first_backend, cache)
    assert first.cells_measured == len(first_backend.calls) == 44 and first.cells_cached == 0
    second_backend = FakeBackend()
    with LatencyCache(path) as cache:
        second = profile(analysis, second_backend, cache)
    assert second.cells_measured == 0 and second.cells_cached == 44
    assert second_backend.calls == [] and second_backend.activations == 0
    assert second.tables == first.tables
    # A different device fingerprint (here: thread count) must not reuse those cells.
    with LatencyCache(path) as cache:
        other = profile(analysis, FakeBackend(threads=2), cache)
    assert other.cells_measured == 44


def test_an_interrupted_profile_keeps_every_finished_cell(tmp_path):
    analysis = small_analysis()
    path = tmp_path / "c.sqlite"
    with LatencyCache(path) as cache:
        with pytest.raises(KeyboardInterrupt):
            profile(analysis, FakeBackend(fail_after=10), cache)
    with LatencyCache(path) as cache:
        assert len(cache) == 10
        resumed = profile(analysis, FakeBackend(), cache)
    assert resumed.cells_cached == 10 and resumed.cells_measured == 34


def test_tables_json_round_trip(tmp_path):
    with LatencyCache(tmp_path / "c.sqlite") as cache:
        tables = profile(small_analysis(), FakeBackend(), cache)
    again = LatencyTables.from_json(json.loads(json.dumps(tables.to_json())))
    assert again == tables
    with pytest.raises(InputError, match="format"):
        LatencyTables.from_json({**tables.to_json(), "format": "something-else/9"})


def test_inconsistent_analysis_is_an_input_error():
    analysis = small_analysis()
    groups = list(analysis.groups)
    groups[1] = ChannelGroup(1, "b0.mid", 48, ("b0.conv1",), ("b0.conv2",))
    broken = Analysis(analysis.model, analysis.input_shape, analysis.layers, tuple(groups), ())
    with pytest.raises(InputError, match="b0.conv1.*48"):
        plan_cells(broken, 8)
    lost = Analysis(analysis.model, analysis.input_shape,
                    analysis.layers + (Layer("x", "Conv", "x.w", 9, 0, None, conv_sig(8, 32, 4)),),
                    analysis.groups, ())
    with pytest.raises(InputError, match="'x'.*group 9"):
        plan_cells(lost, 8)
    with pytest.raises(InputError, match="`group_size`"):
        plan_cells(analysis, 0)


def test_grouped_conv_with_incompatible_group_size_is_refused_before_measuring():
    sig = conv_sig(32, 32, 4, group=4)
    analysis = Analysis("g.onnx", (1, 32, 4, 4), (Layer("g", "Conv", "g.w", 0, None, None, sig),),
                        (ChannelGroup(0, "g", 32, ("g",), ()),), ())
    with pytest.raises(InputError, match="multiple of 4"):
        plan_cells(analysis, 6)
    assert len(required_cells(plan_cells(analysis, 8))) == 4


def test_profile_on_onnx_runtime(tmp_path):
    analysis = small_analysis(hw=8)
    backend = OrtCpuBackend(cell_policy=TimingPolicy(warmup_runs=1, warmup_s=0.0,
                                                     budget_s=0.002, min_repeats=5))
    with LatencyCache(tmp_path / "c.sqlite") as cache:
        tables = profile(analysis, backend, cache, group_size=16)
        assert len(cache) == tables.cells_measured + 1  # and the overhead cell
    assert tables.backend == "ort-cpu" and tables.fingerprint["runtime"] == "onnxruntime"
    assert tables.cells_measured == len(required_cells(plan_cells(analysis, 16)))
    assert all(v > 0 for m in tables.tables.values() for row in m[1:] for v in row[1:])


def test_progress_bar_goes_to_stderr(tmp_path, capsys):
    with LatencyCache(tmp_path / "c.sqlite") as cache:
        profile_tables(small_analysis(), group_size=16, backend=FakeBackend(), cache=cache,
                       progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "profiling fake" in captured.err and "cells" in captured.err


def test_a_gemm_after_a_flatten_reads_spatial_columns_per_channel(tmp_path):
    from dataclasses import replace

    from mdp_trt.signature import LayerSignature

    analysis = small_analysis()
    layers = [replace(l, in_stride=4, signature=LayerSignature("Gemm", 10, 32 * 4))
              if l.name == "fc" else l for l in analysis.layers]
    analysis = replace(analysis, layers=tuple(layers))
    with LatencyCache(tmp_path / "c.sqlite") as cache:
        tables = profile(analysis, FakeBackend(), cache)
    assert tables.channels["fc"] == [[0, 10], [0, 32, 64, 96, 128]]


class DippingBackend(FakeBackend):
    """fake_latency, except that every cell at out=16 reads 60% fast (noise a solver would
    exploit); monotone_latency as a CPU backend declares it."""

    monotone_latency = True
    dip_at, factor = 16, 0.4

    def measure_layer(self, sig, out_channels, in_channels):
        m = super().measure_layer(sig, out_channels, in_channels)
        if out_channels != self.dip_at:
            return m
        value = self.factor * m.median_ms
        return type(m)(value, m.spread, m.repeats, value, value)


def _is_monotone(matrix):
    rows = [row[1:] for row in matrix[1:]]
    return (all(a <= b for row in rows for a, b in zip(row, row[1:]))
            and all(a <= b for col in zip(*rows) for a, b in zip(col, col[1:])))


def test_a_cpu_backend_gets_tables_without_dips_and_the_cache_keeps_the_raw_cells(tmp_path):
    analysis = small_analysis()
    with LatencyCache(tmp_path / "c.sqlite") as cache:
        smooth = profile(analysis, DippingBackend(), cache)
        raw = profile_tables(analysis, group_size=8, backend=DippingBackend(), cache=cache,
                             progress=False, monotone=False)
    assert smooth.monotone and not raw.monotone
    assert not _is_monotone(raw.tables["b0.conv2"]) and _is_monotone(smooth.tables["b0.conv2"])
    sig = analysis.layer("b0.conv2").signature
    assert raw.layer_latency("b0.conv2", 2, 2) == pytest.approx(0.4 * fake_latency(sig, 16, 16))
    # Away from the dip the envelope leaves monotone cells as measured.
    assert smooth.layer_latency("b0.conv2", 4, 4) == pytest.approx(fake_latency(sig, 32, 32))
    # Depthwise tables are smoothed along their single width, never mixed with empty cells.
    dw = analysis.layer("dw").signature
    assert smooth.tables["dw"][4][4] == pytest.approx(fake_latency(dw, 32, 32))
    assert smooth.tables["dw"][1][1] >= 0.4 * fake_latency(dw, 16, 16) > 0
    assert all(smooth.tables["dw"][k][k] <= smooth.tables["dw"][k + 1][k + 1] for k in range(1, 4))
    assert LatencyTables.from_json(smooth.to_json()).monotone


def test_a_gpu_backend_keeps_the_dips_it_measures(tmp_path):
    class GpuDipping(DippingBackend):
        monotone_latency = False

    with LatencyCache(tmp_path / "c.sqlite") as cache:
        tables = profile(small_analysis(), GpuDipping(), cache)
    assert not tables.monotone and not _is_monotone(tables.tables["b0.conv2"])


def test_interpolated_tables_of_a_cpu_backend_are_monotone_too(tmp_path):
    class GridDip(DippingBackend):
        # on the step-2 grid (8, 24, 32): a measured cell below out=8's, not an interpolated one
        dip_at, factor = 24, 0.3

    with LatencyCache(tmp_path / "c.sqlite") as cache:
        tables = profile_tables(small_analysis(), group_size=8, backend=GridDip(),
                                cache=cache, progress=False, interpolate=2, holdout=0)
    assert tables.monotone and tables.interpolation is not None
    assert _is_monotone(tables.tables["b0.conv2"])


def test_adaptive_cells_are_the_default_where_tables_are_a_surface_and_time_a_fraction(tmp_path):
    analysis = small_analysis()
    needed = len(required_cells(plan_cells(analysis, 2)))  # 560: 16 x 16 tables
    with LatencyCache(tmp_path / "c.sqlite") as cache:
        adaptive = profile(analysis, SmoothBackend(noise=0.03, spread=0.06), cache, group_size=2)
        full = profile_tables(analysis, group_size=2, backend=SmoothBackend(noise=0.03, spread=0.06),
                              cache=cache, progress=False, cells="all")
    assert adaptive.cells_measured < needed / 4 and adaptive.cells_cached == 0
    assert full.cells_measured + full.cells_cached == full.cells_needed == needed
    report = adaptive.adaptive
    assert report["design"] == "surface" and report["cells_needed"] == needed
    assert report["cells_timed"] == adaptive.cells_measured and report["rounds"] >= 1
    assert report["held_back"] > 0 and adaptive.held_back_error == (
        report["mean_rel_error"], report["max_rel_error"])
    assert full.adaptive is None and full.held_back_error is None
    # the adaptive surface is within the cells' 3% noise of the one fitted to every cell
    sig = analysis.layer("b0.conv2").signature
    for o in range(1, 17):
        for i in range(1, 17):
            assert adaptive.layer_latency("b0.conv2", o, i) == pytest.approx(
                full.layer_latency("b0.conv2", o, i), rel=0.03), sig


def test_all_cells_give_the_surface_of_every_measured_cell_as_before(tmp_path):
    from mdp_trt.latency.tables.interpolate import monotone_values
    from mdp_trt.latency.tables.surface import surface_values

    analysis = small_analysis()
    backend = SmoothBackend(noise=0.05)
    with LatencyCache(tmp_path / "c.sqlite") as cache:
        tables = profile_tables(analysis, group_size=4, backend=backend, cache=cache,
                                progress=False, cells="all", drift=None)
    cells = required_cells(plan_cells(analysis, 4))
    assert tables.cells_measured == len(backend.calls) == len(cells)
    with backend:
        measured = {c.key(): backend.measure_layer(c.signature, c.out_channels,
                                                   c.in_channels).median_ms for c in cells}
    values = monotone_values(cells, surface_values(cells, measured, measured)[0])
    layer = analysis.layer("b0.conv2")
    expected = values[Cell(layer.signature, 12, 20).key()]
    assert tables.layer_latency("b0.conv2", 3, 5) == expected


def test_a_second_adaptive_run_times_nothing(tmp_path):
    analysis = small_analysis()
    path = tmp_path / "c.sqlite"
    with LatencyCache(path) as cache:
        first = profile(analysis, SmoothBackend(noise=0.05), cache, group_size=2)
    backend = SmoothBackend(noise=0.05)
    with LatencyCache(path) as cache:
        second = profile(analysis, backend, cache, group_size=2)
    assert backend.calls == [] and backend.activations == 0
    assert second.cells_measured == 0 and second.cells_cached == first.cells_measured
    assert second.tables == first.tables and second.adaptive["rounds"] == 0
    assert second.adaptive["cells_timed"] == first.adaptive["cells_timed"]


def test_cells_is_all_or_adaptive_and_not_given_with_interpolate(tmp_path):
    with LatencyCache(tmp_path / "c.sqlite") as cache:
        with pytest.raises(InputError, match="`cells` 'some'"):
            profile_tables(small_analysis(), group_size=8, backend=FakeBackend(), cache=cache,
                           cells="some")
        with pytest.raises(InputError, match="`interpolate`"):
            profile_tables(small_analysis(), group_size=8, backend=FakeBackend(), cache=cache,
                           cells="all", interpolate=2)


def test_measured_tables_time_every_cell_unless_asked_for_adaptive_staircases(tmp_path):
    class Staircase(FakeBackend):
        """GPU-like: 8-channel output tiles, 16-channel input tiles (smooth_latency False)."""

        def measure_layer(self, sig, out_channels, in_channels):
            super().measure_layer(sig, out_channels, in_channels)
            value = 0.01 * -(-out_channels // 8) * (1 + -(-in_channels // 16))
            return Measurement(value, 0.01, 5, value, value)

    analysis = small_analysis()
    needed = len(required_cells(plan_cells(analysis, 2)))
    with LatencyCache(tmp_path / "c.sqlite") as cache:
        stairs = profile_tables(analysis, group_size=2, backend=Staircase(), cache=cache,
                                progress=False, cells="adaptive")
        full = profile_tables(analysis, group_size=2, backend=Staircase(), cache=cache,
                              progress=False)
    assert full.cells_measured + full.cells_cached == needed and full.adaptive is None
    assert stairs.cells_measured < needed / 4 and stairs.adaptive["design"] == "staircase"
    assert stairs.tables == full.tables and stairs.surface is None


def test_tables_json_keeps_the_adaptive_report_and_reads_files_without_it(tmp_path):
    with LatencyCache(tmp_path / "c.sqlite") as cache:
        tables = profile(small_analysis(), SmoothBackend(), cache, group_size=2)
    data = json.loads(json.dumps(tables.to_json()))
    assert LatencyTables.from_json(data) == tables and data["cells_needed"] == 560
    old = LatencyTables.from_json({k: v for k, v in data.items()
                                   if k not in ("cells_needed", "adaptive")})
    assert old.cells_needed == 0 and old.adaptive is None and old.tables == tables.tables


class _Pool:
    """A measure_cells with a costly start (as Ray's cluster): it counts starts and stops."""

    def __init__(self, backend) -> None:
        self.backend, self.rounds, self.entered, self.exited = backend, 0, 0, 0

    def __enter__(self):
        self.entered += 1
        return self

    def __exit__(self, *exc_info) -> None:
        self.exited += 1

    def __call__(self, cells, policy):
        from mdp_trt.latency.tables.bilayer import MeasuredChunk
        from mdp_trt.latency.tables.drift import DriftLog

        assert self.entered == 1 and self.exited == 0, "timed outside its context"
        self.rounds += 1
        with self.backend:
            yield MeasuredChunk("0", tuple(
                (c, self.backend.measure_layer(c.signature, c.out_channels, c.in_channels), None)
                for c in cells), DriftLog())


def test_a_measure_cells_context_serves_every_adaptive_round_and_is_left_at_the_end(tmp_path):
    pool = _Pool(SmoothBackend(noise=0.03, spread=0.06))
    with LatencyCache(tmp_path / "c.sqlite") as cache:
        tables = profile_tables(small_analysis(), group_size=2, backend=pool.backend, cache=cache,
                                progress=False, measure_cells=pool)
    assert tables.adaptive["rounds"] == pool.rounds > 1
    assert (pool.entered, pool.exited) == (1, 1)
