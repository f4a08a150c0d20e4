import pytest

from mdp_trt.prediction.calibration import (SCALE_LIMITS, correct_layers, fit_calibration,
                                         layer_ratios, probe_options)
from mdp_trt.latency.tables import LatencyTables
from mdp_trt.passes import analyze
from tests.onnx_graphs import load, projection_skip, residual_identity


def test_one_point_is_the_constant_through_the_original():
    cal = fit_calibration([(40.0, 50.0)])
    assert (cal.scale, cal.offset_ms) == (1.0, 10.0) and cal.predict(20.0) == 30.0


def test_two_points_give_the_line_through_both():
    # Layers 10% slower in the model than alone, plus 2 ms the tables never see.
    cal = fit_calibration([(40.0, 46.0), (20.0, 24.0)])
    assert cal.scale == pytest.approx(1.1) and cal.offset_ms == pytest.approx(2.0)
    assert cal.predict(40.0) == pytest.approx(46.0) and cal.note is None


def test_a_probe_too_close_to_the_original_falls_back_to_the_constant():
    cal = fit_calibration([(40.0, 50.0), (39.0, 30.0)])
    assert cal.scale == 1.0 and cal.offset_ms == pytest.approx(10.0) and "span" in cal.note


@pytest.mark.parametrize("points, clamped", [
    ([(40.0, 50.0), (20.0, 49.0)], SCALE_LIMITS[0]),  # slope 0.05: a disturbed measurement
    # slope 4, clamped to 3 through the original: offset -70 ms, so a scale alone
    ([(40.0, 50.0), (20.0, -30.0)], 50.0 / 40.0),
])
def test_implausible_slopes_are_clamped_through_the_original_and_say_so(points, clamped):
    cal = fit_calibration(points)
    assert cal.scale == clamped and "clamped" in cal.note and cal.offset_ms >= 0
    assert cal.predict(40.0) == pytest.approx(50.0)
    assert SCALE_LIMITS[0] < 1.0 < SCALE_LIMITS[1]


def test_a_negative_offset_becomes_a_scale_through_the_original():
    # slope 2 is plausible, but its offset of -30 ms would predict -10 ms for a 10 ms table sum
    cal = fit_calibration([(40.0, 50.0), (20.0, 10.0)])
    assert (cal.scale, cal.offset_ms) == (1.25, 0.0) and "offset -30.000 ms < 0" in cal.note
    assert cal.predict(40.0) == pytest.approx(50.0) and cal.predict(1.0) > 0


def test_calibration_needs_a_point():
    with pytest.raises(ValueError, match="at least"):
        fit_calibration([])


def test_tables_scale_cell_by_cell():
    tables = LatencyTables("fake", {}, 4, {"a": [[0.0, 1.0], [2.0, 4.0]]})
    assert tables.scaled(1.5).tables == {"a": [[0.0, 1.5], [3.0, 6.0]]}
    assert tables.tables == {"a": [[0.0, 1.0], [2.0, 4.0]]}


def test_the_probe_halves_prunable_groups_and_keeps_the_rest(tmp_path):
    model, path = load(projection_skip(), tmp_path)
    analysis = analyze(model, str(path))
    options = probe_options(analysis, group_size=2)
    for group, option in zip(analysis.groups, options):
        full = len(group.options(2)) - 1
        assert option == (max(1, round(full / 2)) if group.prunable else full)
    assert options != [len(g.options(2)) - 1 for g in analysis.groups]


def test_no_probe_where_nothing_is_prunable(tmp_path):
    model, path = load(residual_identity(), tmp_path)
    analysis = analyze(model, str(path))
    group_size = max(g.channels for g in analysis.groups)  # one unit per group: nothing to cut
    assert probe_options(analysis, group_size) is None


def test_layer_ratios_pair_each_layer_cell_with_its_in_model_time():
    # original: a 4 ms cell runs 3.4 ms in the model; probe: its 1 ms cell runs 1 ms
    ratios = layer_ratios([({"a": 4.0, "b": 2.0}, {"a": 3.4, "b": 2.2}),
                           ({"a": 1.0, "b": 2.0}, {"a": 1.0, "b": 2.0})])
    assert ratios["a"] == [[1.0, 1.0], [4.0, pytest.approx(0.85)]]
    assert ratios["b"] == [[2.0, pytest.approx(1.05)]]  # not narrowed: one point, averaged


def test_implausible_ratios_are_dropped_with_a_warning(caplog):
    ratios = layer_ratios([({"a": 1.0, "b": 1.0, "c": 0.0}, {"a": 30.0, "b": 1.1, "c": 0.1})])
    assert set(ratios) == {"b"}
    assert "layer a" in caplog.text and "layer c" in caplog.text


def test_cells_are_corrected_by_the_ratio_interpolated_on_their_time():
    tables = LatencyTables("fake", {}, 4, {"a": [[0.0, 1.0, 2.5], [0.5, 4.0, 6.0]],
                                           "b": [[0.0, 2.0]]})
    corrected = correct_layers(tables, {"a": [[1.0, 1.0], [4.0, 0.85]]})
    assert [v for row in corrected.tables["a"] for v in row] == pytest.approx(
        [0.0, 1.0, 2.5 * 0.925, 0.5, 3.4, 6.0 * 0.85])
    assert corrected.tables["b"] == [[0.0, 2.0]] and tables.tables["a"][1][1] == 4.0
    assert correct_layers(tables, None) is tables
    # below the narrowest point the ratio tends to 1 (a vanishing layer runs as it does alone)
    evicted = correct_layers(tables, {"b": [[2.0, 2.0]]}).tables["b"]
    assert evicted == [[0.0, 4.0]]
    assert correct_layers(LatencyTables("fake", {}, 4, {"b": [[1.0]]}), {"b": [[2.0, 2.0]]}
                          ).tables["b"] == [[1.5]]


def test_a_per_layer_calibration_applies_ratios_then_scale_and_serialises_them():
    tables = LatencyTables("fake", {}, 4, {"a": [[0.0, 1.0], [0.0, 4.0]]})
    cal = fit_calibration([(3.4, 5.0), (1.0, 2.0)], {"a": [[1.0, 1.0], [4.0, 0.85]]})
    assert cal.scale == pytest.approx(1.25) and cal.predict(3.4) == pytest.approx(5.0)
    assert cal.apply(tables).tables["a"][1][1] + cal.offset_ms == pytest.approx(5.0)
    assert cal.to_json()["layers"] == {"a": [[1.0, 1.0], [4.0, 0.85]]}



def _product_tables(tmp_path):
    """A small model with a shortcut conv, its analysis, and tables in which every cell is
    0.1 ms x its (out option) x (in option), at group size 4: full width is the last option."""
    model, path = load(projection_skip(), tmp_path)
    analysis = analyze(model, str(path))
    sizes = [len(g.options(4)) for g in analysis.groups]
    tables = LatencyTables("fake", {}, 4, {
        layer.name: [[0.1 * o * i for i in range(sizes[layer.in_group] if layer.in_group
                                                  is not None else 2)]
                     for o in range(sizes[layer.out_group])] for layer in analysis.layers})
    return model, analysis, tables


def test_calibration_sets_each_layers_share_of_the_run_against_the_measured_time(tmp_path):
    from mdp_trt.prediction.calibration import calibration_through
    from mdp_trt.prediction.plan_latency import layer_cells

    _, analysis, tables = _product_tables(tmp_path)
    sizes = [len(g.options(4)) for g in analysis.groups]
    full = [n - 1 for n in sizes]
    half = [max(1, (n - 1) // 2) for n in sizes]
    # each layer's share of the run: 1.5 x its full-width cell over the original's 10 ms
    shares = {name: 0.15 * cell for name, cell in layer_cells(analysis, tables, full).items()}
    calibration = calibration_through(analysis, tables, [(full, 10.0, shares), (half, 4.0, shares)])
    for options, measured in ((full, 10.0), (half, 4.0)):
        cells = layer_cells(analysis, tables, options)
        for name, cell in cells.items():
            # the layer ran its share of the model's measured time inside it, whatever the
            # machine's speed while it was profiled
            ratio = shares[name] * measured / cell
            assert pytest.approx([cell, ratio]) in calibration.layers[name]
    assert calibration.predict(0.0) == pytest.approx(calibration.offset_ms)

def _calibrated(tmp_path, probe_timings):
    """``calibrate`` (two-point) on a small model whose cells are 0.1 ms x out option x in
    option, the original measured at its table sum; ``probe_timings(table_sum)`` lists the
    probe's successive timings given its table sum. Returns (calibration, probe paths timed)."""
    from mdp_trt.graph import save_model
    from mdp_trt.importance import score_channels
    from mdp_trt.prediction.calibration import calibrate
    from mdp_trt.prediction.plan_latency import table_sum

    model, analysis, tables = _product_tables(tmp_path)
    sizes = [len(g.options(4)) for g in analysis.groups]
    timings = iter(probe_timings(table_sum(analysis, tables, probe_options(analysis, 4))))
    timed = []

    def measure(probe_path):
        timed.append(probe_path)
        return next(timings)

    calibration = calibrate(
        model, analysis, score_channels(model, analysis, progress=False), tables, group_size=4,
        baseline_ms=table_sum(analysis, tables, [n - 1 for n in sizes]), measure=measure,
        folder=tmp_path / "probe", original=save_model(model, tmp_path / "original.onnx"),
        mode="two-point", layer_shares=lambda path, layers: None)
    return calibration, timed


def test_a_scale_far_out_of_range_times_the_probe_again_and_keeps_the_faster(tmp_path, caplog):
    # the first timing disturbed (slower than the original: a negative slope), the second as
    # the tables say (scale 1)
    calibration, timed = _calibrated(tmp_path, lambda probe_sum: [100.0, probe_sum])
    assert len(timed) == 2 and timed[0] == timed[1]
    assert "timing the probe again" in caplog.text
    assert not calibration.clamped and calibration.scale == pytest.approx(1.0)


def test_a_scale_that_stays_out_of_range_is_clamped_with_a_note(tmp_path):
    calibration, timed = _calibrated(tmp_path, lambda probe_sum: [100.0, 90.0])
    assert len(timed) == 2
    assert calibration.clamped and "clamped" in calibration.note


def test_a_plausible_scale_times_the_probe_once(tmp_path):
    calibration, timed = _calibrated(tmp_path, lambda probe_sum: [probe_sum * 1.1])
    assert len(timed) == 1 and not calibration.clamped
