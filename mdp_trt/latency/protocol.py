"""The latency backend contract: what every runtime (ORT CPU now, GPU runtimes later) provides.

A backend times two things with one protocol: a one-layer model at given channel widths (a cell
of a bilayer table) and a whole ONNX model (``bench``/``prune`` before and after). Using the same
session settings and the same timing loop for both is what makes "sum of cells + constant"
comparable with the measured end-to-end latency.

Backends are context managers. Activation is reentrant (a depth counter), so the pipeline can
hold a backend active across stages while each stage also says ``with backend:``; the runtime is
released when the outermost ``with`` exits. ``BackendBase`` owns that state machine; subclasses
implement only the ``*_impl`` hooks (the Polygraphy runner pattern).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from mdp_trt.analysis import Layer
from mdp_trt.errors import BackendUnavailable, InputError
from mdp_trt.signature import LayerSignature

__all__ = ["DeviceFingerprint", "Measurement", "Ratio", "Comparison", "LatencyBackend",
           "BackendBase", "Weights", "WEIGHTS"]

# Whether a cell is timed with its weights hot in cache or streamed from memory (as in the model)
Weights = Literal["hot", "cold"]
WEIGHTS: tuple[str, ...] = ("hot", "cold")


@dataclass(frozen=True)
class DeviceFingerprint:
    """What a measurement's meaning depends on, besides the layer itself.

    Two measurements are comparable only if their fingerprints are equal; the cache keys every
    row on ``key()``. ``device`` is a human description (e.g. ``"AMD EPYC, 2 cores"``),
    ``runtime``/``runtime_version`` the inference library, ``threads`` the intra-op thread count,
    ``precision`` the arithmetic the runtime is asked to use (e.g. ``"fp32"``).
    """

    backend: str
    device: str
    runtime: str
    runtime_version: str
    threads: int
    precision: str

    def key(self) -> str:
        """A stable text key (sorted compact JSON): equal fingerprints give equal keys."""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "DeviceFingerprint":
        return cls(**data)


@dataclass(frozen=True)
class Measurement:
    """The result of timing one thing ``repeats`` times (after warm-up).

    All times are milliseconds of wall clock per inference call. ``spread`` is the relative
    dispersion ``(p90 - p10) / median`` (0 for a perfectly steady measurement); ``p10_ms`` and
    ``p90_ms`` are the 10th and 90th percentiles. Invariant: ``p10_ms <= median_ms <= p90_ms``.
    """

    median_ms: float
    spread: float
    repeats: int
    p10_ms: float
    p90_ms: float

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "Measurement":
        return cls(**data)


@dataclass(frozen=True)
class Ratio:
    """A model's latency relative to a reference model timed together with it.

    ``value`` is the median of the per-round ratios (each round times both models once, see
    ``timing.time_interleaved``), ``low``/``high`` a 95% confidence interval for that median
    (distribution-free: order statistics of the rounds' ratios), ``rounds`` how many rounds.
    ``reliable``: the interval's half-width reached the timing policy's ``ratio_halfwidth``
    (relative) before its time ran out; an unreliable ratio is reported, never trusted.
    """

    value: float
    low: float
    high: float
    rounds: int
    reliable: bool

    @classmethod
    def within(cls, value: float, low: float, high: float, rounds: int,
               halfwidth: float) -> "Ratio":
        """The ratio, reliable when its interval's larger half is within ``halfwidth`` of it."""
        ratio = cls(value, low, high, rounds, reliable=False)
        return replace(ratio, reliable=ratio.halfwidth <= halfwidth)

    @property
    def halfwidth(self) -> float:
        """The interval's larger half, relative to the value."""
        return max(self.value - self.low, self.high - self.value) / self.value

    def to_json(self) -> dict:
        return {**asdict(self), "halfwidth": self.halfwidth}

    @classmethod
    def from_json(cls, data: dict) -> "Ratio":
        return cls(**{k: v for k, v in data.items() if k != "halfwidth"})


@dataclass(frozen=True)
class Comparison:
    """Models timed together: each one's measurement, and each after the first as a ``Ratio``
    to the first."""

    measurements: list[Measurement]
    ratios: list[Ratio]


@runtime_checkable
class LatencyBackend(Protocol):
    """A runtime that times one-layer models and whole ONNX models the same way.

    Besides timing, a backend states how its timings behave, for the stages that read them:
    ``weights`` (the cell weights mode, part of every cached cell's key), ``monotone_latency``,
    ``smooth_latency`` (how ``tables.bilayer.profile_tables`` cleans a table by default) and
    ``call_overhead`` (whether it takes a call's overhead out of the tables);
    ``BackendBase`` documents each and gives the defaults."""

    name: str
    weights: Weights
    monotone_latency: bool
    smooth_latency: bool
    call_overhead: bool

    def available(self) -> str | None:
        """None when the backend can run here; otherwise why not and what to install."""
        ...

    def __enter__(self) -> "LatencyBackend": ...

    def __exit__(self, *exc_info: object) -> None: ...

    def fingerprint(self) -> DeviceFingerprint: ...

    def measure_layer(self, sig: LayerSignature, out_channels: int, in_channels: int) -> Measurement:
        """Latency of the layer ``sig`` with ``out_channels`` outputs and ``in_channels`` inputs
        (both >= 1 and at most the signature's full widths), at its real resolution and batch."""
        ...

    def measure_model(self, path: str | Path, *, batch: int | None = None) -> Measurement:
        """End-to-end latency of the ONNX model at ``path``; input shapes come from the model
        (``batch`` fills a symbolic leading dimension)."""
        ...

    def measure_models(self, paths: Sequence[str | Path], *, batch: int | None = None
                       ) -> Comparison:
        """``measure_model`` of several models that are to be compared, and each one's ratio to
        the first with its confidence interval, timed so that a change of the machine's speed
        during the timing falls on all of them alike where the backend can (CPU: interleaved
        blocks, until the intervals are narrow enough or the policy's time is up)."""
        ...

    def layer_shares(self, path: str | Path, layers: Sequence[Layer]) -> dict[str, float] | None:
        """Each of ``layers``' share of the run time of the model at ``path``, or None where the
        runtime cannot tell (see ``BackendBase.layer_shares``)."""
        ...


_SEQUENTIAL_ROUNDS = 3  # BackendBase.measure_models
# A ratio is reliable when its 95% interval is within +-2% of it (MODEL_POLICY.ratio_halfwidth)
RATIO_HALFWIDTH = 0.02


class BackendBase:
    """Reentrant activation with state checks; subclasses implement the ``*_impl`` hooks.
    ``threads``: the runtime's intra-op threads (host threads for GPU runtimes)."""

    name: str = ""
    # How cells are timed: "hot" (weights cached between runs) or "cold" (streamed from memory,
    # as inside a model larger than the last-level cache; ort-cpu only). Cells of one
    # fingerprint are cached and looked up per mode (tables.bilayer.profile_tables).
    weights: Weights = "hot"
    # Whether latency never falls as channels grow on this device (CPUs: True); then table
    # cells that dip below a narrower neighbour are noise, and profile_tables smooths them away
    # unless told otherwise. False keeps them: GPU kernels tile channels.
    monotone_latency: bool = False
    # Whether one layer's latency is a smooth function of its widths here (CPUs: True); then
    # profile_tables' tables are a surface fitted to the measured cells (tables/surface.py),
    # not the cells. False: GPU latency is a staircase in the widths.
    smooth_latency: bool = False
    # Whether each timed cell includes a per-call overhead (binding, executor start, dispatch)
    # that a model pays once, not per layer: every runtime does; then profile_tables takes the
    # time of an almost empty cell out of every entry (tables/overhead.py).
    call_overhead: bool = False

    def __init__(self, threads: int = 1) -> None:
        if threads < 1:
            raise InputError(f"`threads` must be at least 1, got {threads}", parameters=("threads",))
        self.threads = threads
        self._depth = 0

    @property
    def active(self) -> bool:
        return self._depth > 0

    def available(self) -> str | None:
        """None when the backend can run here; otherwise why not and what to install."""
        return None

    def activate(self) -> None:
        if self._depth == 0:
            # get_backend checks first; this guards direct construction.
            reason = self.available()
            if reason is not None:
                raise BackendUnavailable(f"backend {self.name!r} cannot run here: {reason}")
            self._activate_impl()
        self._depth += 1

    def deactivate(self) -> None:
        if self._depth == 0:
            raise RuntimeError(f"backend {self.name!r} deactivated more often than activated")
        self._depth -= 1
        if self._depth == 0:
            self._deactivate_impl()

    def __enter__(self):
        self.activate()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.deactivate()

    def measure_models(self, paths: Sequence[str | Path], *, batch: int | None = None
                       ) -> Comparison:
        """One after the other, in ``_SEQUENTIAL_ROUNDS`` rounds whose order alternates: right
        for GPU runtimes, whose timed device no other process of the host slows down between
        two timings (CPU runtimes override this to interleave). Each model's measurement is its
        least disturbed round; a ratio's interval is the range of the rounds' ratios."""
        models = range(len(paths))
        rounds: list[list[Measurement]] = []
        for index in range(_SEQUENTIAL_ROUNDS if paths else 0):
            timed = {k: self.measure_model(paths[k], batch=batch)
                     for k in (models if index % 2 == 0 else reversed(models))}
            rounds.append([timed[k] for k in models])
        best = [min((r[k] for r in rounds), key=lambda m: m.median_ms) for k in models]
        ratios = []
        for k in models[1:]:
            values = sorted(r[k].median_ms / r[0].median_ms for r in rounds)
            ratios.append(Ratio.within(values[len(values) // 2], values[0], values[-1],
                                       len(values), RATIO_HALFWIDTH))
        return Comparison(best, ratios)

    def layer_shares(self, path: str | Path, layers: Sequence[Layer]) -> dict[str, float] | None:
        """Each of ``layers``' share of the run time of the model at ``path`` (its analysed
        layers; time inside the model / the profiled run's time), from the runtime's per-node
        profiler; None where the runtime has none (then calibration scales all layers alike).
        Shares, not milliseconds: the machine's speed while profiling cancels, and the
        per-layer calibration (``prune``) sets them against the model's measured time."""
        return None

    def _require_active(self) -> None:
        if not self.active:
            raise RuntimeError(
                f"backend {self.name!r} is not active: use it inside 'with backend:' "
                "(activation loads the runtime)"
            )

    def _activate_impl(self) -> None:
        """Load the runtime; called on the outermost activation only."""

    def _deactivate_impl(self) -> None:
        """Release the runtime; called when the outermost ``with`` exits."""
