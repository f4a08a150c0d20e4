import pytest

from mdp_trt.latency.protocol import Measurement
from mdp_trt.latency.tables import Cell
from mdp_trt.latency.tables.staircase import StaircaseDesign, differ

from tests.latency.fixtures import conv_sig

SIG = conv_sig(512, 512, 14)
DW = conv_sig(512, 512, 14, group=512)
WIDTHS = range(16, 513, 16)  # 32 widths: a 32 x 32 table of 1 024 cells


def stairs(o, i):
    """A GPU-like staircase: out channels in tiles of 64, in channels in tiles of 128."""
    return 0.01 * -(-o // 64) * (1 + -(-i // 128))


def timing(latency, spread=0.01):
    def measure(cell):
        value = latency(cell.out_channels, cell.in_channels)
        return Measurement(value, spread, 5, value, value)
    return measure


def run(cells, measure):
    design = StaircaseDesign(cells)
    known, rounds = {}, 0
    while wanted := design.next_cells(known):
        assert not any(c.key() in known for c in wanted)
        rounds += 1
        known.update({c.key(): measure(c) for c in wanted})
    return design, known, rounds


def m(ms, spread=0.0):
    return Measurement(ms, spread, 5, ms, ms)


def test_cells_differ_by_more_than_the_floor_and_half_their_spread():
    assert not differ(m(1.0), m(1.015)) and differ(m(1.0), m(1.03))
    assert not differ(m(1.0, spread=0.1), m(1.04)) and differ(m(1.0, spread=0.1), m(1.06))


def test_a_staircase_is_filled_exactly_from_a_fraction_of_its_cells():
    cells = [Cell(SIG, o, i) for o in WIDTHS for i in WIDTHS]
    design, known, rounds = run(cells, timing(stairs))
    values = design.fill(known)
    assert all(values[c.key()] == stairs(c.out_channels, c.in_channels) for c in cells)
    assert len(known) < 0.15 * len(cells) and rounds <= 4
    report = design.report(known, rounds).to_json()
    assert report["design"] == "staircase" and report["cells_timed"] == len(known)
    assert report["held_back"] > 0 and report["max_rel_error"] == 0.0
    # a second run, every cell it asks for cached, asks for nothing
    assert design.next_cells(known) == []


def test_the_steps_are_found_between_the_coarse_cells():
    # coarse widths 16, 80, 144, ...: the tile edge (64 | 80) lies between 16 and 80, so 48
    # then 64 are timed, and 32, between two equal cells, is not
    cells = [Cell(SIG, o, 512) for o in WIDTHS]
    design, known, _ = run(cells, timing(stairs))
    assert {o for _, o, _ in known if o <= 80} == {16, 48, 64, 80}
    assert design.fill(known)[Cell(SIG, 32, 512).key()] == stairs(32, 512)


def test_a_gradual_rise_is_timed_not_flattened():
    cells = [Cell(SIG, o, i) for o in WIDTHS[:8] for i in WIDTHS[:8]]
    ramp = lambda o, i: 0.01 * o * i  # noqa: E731 - every neighbour differs
    design, known, _ = run(cells, timing(ramp))
    values = design.fill(known)
    assert all(values[c.key()] == pytest.approx(ramp(c.out_channels, c.in_channels))
               for c in cells)


def test_depthwise_staircases_stay_on_the_diagonal():
    cells = [Cell(DW, w, w) for w in WIDTHS]
    design, known, _ = run(cells, timing(lambda o, i: 0.01 * -(-o // 128)))
    assert all(o == i for _, o, i in known) and len(known) < len(cells) / 2
    assert design.fill(known)[Cell(DW, 144, 144).key()] == 0.02
