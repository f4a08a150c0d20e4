import numpy as np
import pytest

from mdp_trt.latency.protocol import Measurement
from mdp_trt.latency.tables import Cell
from mdp_trt.latency.tables.adaptive import (MAX_SHARE, AdaptiveDesign, SignatureDesign,
                                             describe)

from tests.latency.fixtures import conv_sig, smooth_latency

SIG = conv_sig(128, 128, 8)
DW = conv_sig(128, 128, 8, group=128)
WIDTHS = range(8, 129, 8)  # 16 widths: a 16 x 16 table of 256 cells
CELLS = [Cell(SIG, o, i) for o in WIDTHS for i in WIDTHS]
CAP = int(MAX_SHARE * len(CELLS))  # 64


def timing(latency, spread=0.01):
    """Measurements of ``latency(out, in)`` that report ``spread``."""
    def measure(cell):
        value = latency(cell.out_channels, cell.in_channels)
        return Measurement(value, spread, 5, value, value)
    return measure


def noisy(sd):
    """``smooth_latency`` times a reproducible lognormal factor of sd ``sd`` per cell."""
    def latency(o, i):
        return smooth_latency(o, i) * float(np.exp(np.random.default_rng([o, i]).normal(0, sd)))
    return latency


def bump(o, i, centre=(64, 104), height=0.3, width=6.0):
    """``smooth_latency`` with a narrow 30% bump no biquadratic follows."""
    distance = (o - centre[0]) ** 2 + (i - centre[1]) ** 2
    return smooth_latency(o, i) * (1 + height * np.exp(-distance / (2 * width ** 2)))


def run(cells, measure, known=None):
    """The design's rounds until it asks for nothing: (known, every round's cells)."""
    design = SignatureDesign(cells)
    known = dict(known or {})
    rounds = []
    while wanted := design.next_cells(known):
        assert not any(c.key() in known for c in wanted)
        rounds.append(wanted)
        known.update({c.key(): measure(c) for c in wanted})
    return known, rounds


def lattice(design):
    return {(c.out_channels, c.in_channels) for c, on in zip(design.cells, design.lattice) if on}


def test_the_first_design_is_a_lean_lattice_plus_held_back_cells_and_deterministic():
    design = SignatureDesign(CELLS)
    assert len(design.first) == 18  # 2 cells per term of the biquadratic
    assert lattice(design) == {(o, i) for o in (8, 48, 88, 128) for i in (8, 48, 88, 128)}
    held = {(c.out_channels, c.in_channels) for c in design.first} - lattice(design)
    assert len(held) == 2
    assert SignatureDesign(list(CELLS)).first == design.first
    assert design.next_cells({}) == list(design.first)
    # a depthwise conv's design lies on its diagonal: 4 lattice widths and 2 more
    diagonal = SignatureDesign([Cell(DW, w, w) for w in WIDTHS])
    assert len(diagonal.first) == 6 and diagonal.lattice.sum() == 4
    assert all(c.out_channels == c.in_channels for c in diagonal.first)
    # a table no larger than the design is timed whole
    small = [Cell(SIG, o, i) for o in (8, 16, 24, 32) for i in (8, 16, 24, 32)]
    assert sorted(SignatureDesign(small).first, key=Cell.key) == sorted(small, key=Cell.key)


def test_an_exact_surface_is_settled_by_the_first_design():
    known, rounds = run(CELLS, timing(smooth_latency))
    assert len(rounds) == 1 and len(known) == 18
    check = SignatureDesign(CELLS).held_back(known)
    assert check.settled and max(map(abs, check.errors)) < 1e-9


def test_noise_stops_at_its_level_and_the_held_back_error_shows_it():
    # the cells reporting 1% spread, though they scatter 5%: the fit's scatter sets the level
    known, _ = run(CELLS, timing(noisy(0.05), spread=0.01))
    check = SignatureDesign(CELLS).held_back(known)
    assert len(known) < CAP and check.settled
    assert 0.02 < np.mean(np.abs(check.errors)) <= check.noise < 0.1


def test_a_bump_draws_cells_around_it_until_the_cap():
    known, rounds = run(CELLS, timing(bump))
    assert len(known) == CAP and len(rounds) > 2
    check = SignatureDesign(CELLS).held_back(known)
    assert not check.settled and max(map(abs, check.errors)) > 0.15
    timed = {(o, i) for _, o, i in known}
    # every neighbour of the bump's peak was timed; without the bump none would be
    assert {(56, 104), (72, 104), (64, 96), (64, 112)} <= timed
    exact, _ = run(CELLS, timing(smooth_latency))
    assert not {(56, 104), (72, 104), (64, 96), (64, 112)} & {(o, i) for _, o, i in exact}


def test_the_design_is_deterministic_and_a_second_run_asks_for_nothing():
    known, rounds = run(CELLS, timing(bump))
    again, rounds_again = run(CELLS, timing(bump))
    assert rounds == rounds_again
    assert SignatureDesign(CELLS).next_cells(known) == []


def test_cached_cells_are_free_design_and_held_back_cells():
    measure = timing(noisy(0.03), spread=0.06)
    cached = {c.key(): measure(c) for c in CELLS if (c.out_channels, c.in_channels) in
              {(16, 16), (8, 8), (120, 64)}}  # (8, 8) is on the lattice
    design = SignatureDesign(CELLS)
    first = design.next_cells(cached)
    assert len(first) == 17 and not any(c.key() in cached for c in first)
    known = {**cached, **{c.key(): measure(c) for c in first}}
    held = {(c.out_channels, c.in_channels) for c in design.held_back(known).cells}
    assert {(16, 16), (120, 64)} <= held and (8, 8) not in held


def test_a_signature_whose_surface_cannot_be_fitted_gets_every_cell():
    def zero_at_a_corner(o, i):
        return 0.0 if (o, i) == (8, 8) else smooth_latency(o, i)

    known, rounds = run(CELLS, timing(zero_at_a_corner))
    assert len(known) == len(CELLS) and len(rounds) == 2


def test_the_report_pools_every_signature_and_says_what_was_capped():
    cells = CELLS + [Cell(DW, w, w) for w in WIDTHS]
    measure = timing(bump)
    design = AdaptiveDesign(cells)
    known, rounds = {}, 0
    while wanted := design.next_cells(known):
        rounds += 1
        known.update({c.key(): measure(c) for c in wanted})
    report = design.report(known, rounds).to_json()
    assert report["design"] == "surface" and report["signatures"] == 2
    assert report["cells_needed"] == 256 + 16 and report["cells_timed"] == len(known)
    assert report["rounds"] == rounds and report["capped"] == 1 and report["complete"] == 0
    assert report["held_back"] > 2 and report["max_rel_error"] > 0.15
    assert report["worst"][0] == SIG.key()
    line = describe(report)
    assert f"{len(known)} of 272 cells" in line and "1 signature(s) stopped at the cap" in line
    assert describe(None) is None
