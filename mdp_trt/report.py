"""The Report of a prune run (``report.json``; fields are a contract, see docs/interfaces.md) and
the typed records it is made of: how a plan was solved, each closed-loop round, the profile."""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from mdp_trt.latency.protocol import Ratio
from mdp_trt.latency.tables import LatencyTables
from mdp_trt.latency.tables.overhead import describe_overhead
from mdp_trt.latency.tables.surface import describe as describe_surface
from mdp_trt.passes import Verification
from mdp_trt.prediction import Calibration
from mdp_trt.solve.formulate import Decoded

__all__ = ["Report", "SolveOutcome", "Candidate", "Round", "ProfileSummary", "format_summary"]

FORMAT = "mdp-report/1"


@dataclass(frozen=True)
class SolveOutcome:
    """How a plan was solved (report.json's ``solver`` and each round's): the pruning
    ``method``, the solver's ``name``, its ``status``, time and ``bound``."""

    method: str
    name: str
    status: str
    seconds: float
    bound: float | None

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ProfileSummary:
    """What the latency tables took: cells measured by this run and found in the cache, of the
    ``cells_needed`` of the full grid, wall seconds, and the fitted surface's ``SurfaceReport``
    (JSON; None for measured cells). ``cells``: how they were chosen ("all", "adaptive
    surface", "adaptive staircase", "interpolate K"); ``held_back_mean``/``held_back_max``: the
    tables' relative error on held-back cells (None for full tables); ``call_overhead_ms``: the
    per-call overhead taken out of every cell (0: none)."""

    cells_measured: int
    cells_cached: int
    seconds: float
    surface: dict | None = None
    cells_needed: int = 0
    cells: str = "all"
    held_back_mean: float | None = None
    held_back_max: float | None = None
    call_overhead_ms: float = 0.0

    @classmethod
    def of(cls, tables: LatencyTables) -> ProfileSummary:
        cells = (f"adaptive {tables.adaptive['design']}" if tables.adaptive else
                 f"interpolate {tables.interpolation['step']}" if tables.interpolation else "all")
        error = tables.held_back_error or (None, None)
        return cls(tables.cells_measured, tables.cells_cached, tables.seconds, tables.surface,
                   tables.cells_needed, cells, *error, tables.call_overhead_ms)

    def describe(self) -> str:
        """The summary's line on it (after "profile")."""
        timed = self.cells_measured + self.cells_cached
        line = (f"{self.cells_measured} cells measured, {self.cells_cached} cached"
                + (f" ({self.cells}: {timed} of {self.cells_needed} cells, "
                   f"{timed / self.cells_needed:.0%})" if self.cells_needed else "")
                + f", {self.seconds:.1f} s")
        if self.held_back_mean is not None:
            line += (f"; held-back error mean {100 * self.held_back_mean:.1f}%, max "
                     f"{100 * self.held_back_max:.1f}%")
        if fit := describe_surface(self.surface):
            line += f"; {fit}"
        if self.call_overhead_ms:
            line += f"; {describe_overhead(self.call_overhead_ms)}"
        return line

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Candidate:
    """A plan solved for one target, cut, verified and saved: its channels and blocks
    (``decoded``, from the per-group ``options``), its calibrated table sum and the
    calibration's offset (their sum is the prediction), its objective, and how the solver and
    the numerical check went."""

    decoded: Decoded
    options: tuple[int, ...]
    tables_ms: float
    offset_ms: float
    objective: float
    solver: SolveOutcome
    verification: Verification

    @property
    def predicted_ms(self) -> float:
        return self.tables_ms + self.offset_ms


@dataclass(frozen=True)
class Round:
    """One closed-loop round: the ``plan`` solved for ``target_ms`` and staged in ``folder``
    (moved into the output when adopted, removed otherwise), timed with the original:
    ``measured_ms`` in the machine state of the baseline, ``original_ms`` the original's time
    then, ``ratio`` the plan's to the original. ``warning`` when the figure stayed implausible;
    ``narrowest`` when the target was the latency model's narrowest plan. ``windows``: the
    ratio of each time it was timed with the original; the figures are the slowest window's
    (prune._confirmed)."""

    folder: Path
    plan: Candidate
    target_ms: float
    measured_ms: float
    original_ms: float
    ratio: Ratio
    warning: str | None = None
    narrowest: bool = False
    adopted: bool = False
    windows: tuple[float, ...] = ()

    @property
    def predicted_ms(self) -> float:
        return self.plan.predicted_ms

    def to_json(self) -> dict:
        """The round as report.json lists it: how it was solved, its target and latencies."""
        return {**self.plan.solver.to_json(), "target_ms": self.target_ms,
                "predicted_ms": self.predicted_ms, "measured_ms": self.measured_ms,
                "original_ms": self.original_ms, "ratio": self.ratio.to_json(),
                "windows": list(self.windows), "adopted": self.adopted}


@dataclass(frozen=True)
class Report:
    model: str
    backend: str
    device: dict
    threads: int
    group_size: int
    importance: str
    baseline_latency_ms: float
    budget_ms: float
    budget_fraction: float
    predicted_latency_ms: float
    predicted_tables_ms: float  # sum of the kept layers' table entries, calibrated (Calibration.apply)
    predicted_offset_ms: float  # calibration offset (prediction/calibration.py)
    measured_latency_ms: float
    fps_before: float
    fps_after: float
    removed_blocks: list[str]
    kept_channels: dict[str, list[int]]  # group name -> [kept, original]
    objective: float
    solver: SolveOutcome  # of the adopted plan
    profile: ProfileSummary
    verification: Verification  # of the adopted plan (report.json: the figures, not "passed")
    timings: dict[str, float]  # seconds per stage
    rounds: list[Round] = field(default_factory=list)  # one per solve/measure round
    calibration: Calibration | None = None  # the latency model's (prediction/calibration.py)
    max_options: int | None = None  # options per group at most (None: group_size everywhere)
    calib: str | None = None  # the calibration data of taylor importance (--calib-data)
    weights: str = "hot"  # how table cells were timed (ort-cpu: "cold" streams the weights)
    resumed: list[str] = field(default_factory=list)  # stages taken from an earlier run (--resume)
    tolerance: float = 0.03  # a plan measured up to this fraction over the budget is adopted
    # "met": measured within budget x (1 + tolerance) on a reliable ratio; "unreliable": within
    # it, but the ratio's 95% interval stayed wider than the timing policy allows; "over": the
    # fastest plan measured misses it (both exit 5 unless --allow-over)
    budget_status: str = "met"
    measurement: dict = field(default_factory=dict)  # the adopted plan's Ratio to the original
    warnings: list[str] = field(default_factory=list)  # sanity checks that did not pass
    # LayerNorms whose channels the plan cut (--prune-embedding): the verification's reference
    # normalises them over the kept channels (passes/masking.py)
    renormalised: list[str] = field(default_factory=list)

    @property
    def within_budget(self) -> bool:
        return self.measured_latency_ms <= self.budget_ms

    def to_json(self) -> dict:
        return {"format": FORMAT, **{f.name: _json(getattr(self, f.name)) for f in fields(self)}}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1))


def _json(value):
    """A field of the report as report.json holds it: records by their own ``to_json``, lists
    item by item, plain values copied (the JSON never shares the report's lists)."""
    if isinstance(value, Verification):
        # A reported plan always passed (verify raises otherwise): the figures are the news.
        return {k: v for k, v in value.to_json().items() if k != "passed"}
    if hasattr(value, "to_json"):
        return value.to_json()
    if isinstance(value, list):
        return [_json(item) for item in value]
    return copy.deepcopy(value)


def format_summary(report: Report) -> str:
    """A short human summary (plain text, a few lines)."""
    channels_before = sum(v[1] for v in report.kept_channels.values())
    channels_after = sum(v[0] for v in report.kept_channels.values())
    error = (report.predicted_latency_ms - report.measured_latency_ms) / report.measured_latency_ms
    # prune adopts a plan up to its tolerance over the budget: say by how much
    over = ("within budget" if report.within_budget else
            f"OVER budget by {report.measured_latency_ms / report.budget_ms - 1:.1%}"
            + (f", beyond the {report.tolerance:.0%} tolerance"
               if report.budget_status == "over" else ""))
    if report.budget_status == "unreliable":
        over += ", NOT CONFIRMED: the timing did not settle"
    ratio = report.measurement
    lines = [
        f"backend {report.backend} ({report.threads} thread{'s' * (report.threads != 1)}), "
        f"group size {report.group_size}"
        f"{f' (at most {report.max_options} options per group)' if report.max_options else ''}, "
        f"importance {report.importance}",
        f"latency  {report.baseline_latency_ms:8.2f} ms -> {report.measured_latency_ms:8.2f} ms "
        f"(budget {report.budget_ms:.2f} ms = {report.budget_fraction:.0%} of baseline; "
        f"{over})",
        f"FPS      {report.fps_before:8.1f}    -> {report.fps_after:8.1f}    "
        f"(x{report.fps_after / report.fps_before:.2f})",
        *([f"measured {ratio['value']:.4f} x the original, 95% interval [{ratio['low']:.4f}, "
           f"{ratio['high']:.4f}] over {ratio['rounds']} interleaved rounds"
           f"{'' if ratio['reliable'] else ' (too wide: unreliable)'}"
           f"{_windows(ratio.get('windows', ()))}"] if ratio else []),
        f"predicted {report.predicted_latency_ms:.2f} ms = tables {report.predicted_tables_ms:.2f} "
        f"(x{report.calibration.scale if report.calibration else 1.0:.3f} calibrated) + offset "
        f"{report.predicted_offset_ms:.2f}; error vs measured {error:+.1%}",
        f"removed  {len(report.removed_blocks)} block(s){': ' if report.removed_blocks else ''}"
        f"{', '.join(report.removed_blocks)}; channels {channels_after}/{channels_before} kept",
        f"solver   {report.solver.name} {report.solver.status} in "
        f"{report.solver.seconds * 1000:.0f} ms; verification max rel diff "
        f"{report.verification.max_rel_diff:.1e} over {report.verification.inputs} inputs"
        + (f" (reference: the original with {len(report.renormalised)} LayerNorms normalising "
           "over the kept channels)" if report.renormalised else ""),
        *([f"rounds   {len(report.rounds)} solve/measure rounds; the adopted plan was solved for "
           f"a {next(r.target_ms for r in report.rounds if r.adopted):.2f} ms target"]
          if len(report.rounds) > 1 else []),
        f"profile  {report.profile.describe()}",
        *([f"resumed  {', '.join(report.resumed)} from the earlier run"] if report.resumed else []),
        *(f"WARNING  {warning}" for warning in report.warnings),
    ]
    return "\n".join(lines)


def _windows(ratios) -> str:
    """The summary's note on the adopted plan's confirmation windows (prune._confirmed)."""
    if len(ratios) < 2:
        return ""
    return (f"; the slowest of {len(ratios)} timings spread over time "
            f"({', '.join(f'{r:.4f}' for r in ratios)})")
