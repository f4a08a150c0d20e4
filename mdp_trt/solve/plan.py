"""The solver's answer, `mdp-plan/1`: chosen option per group, kept blocks, status and bound."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from mdp_trt.errors import InputError

__all__ = ["PLAN_FORMAT", "PlanStatus", "Plan"]

PLAN_FORMAT = "mdp-plan/1"

PlanStatus = Literal["optimal", "feasible", "infeasible", "time_limit"]
_STATUSES: tuple[str, ...] = get_args(PlanStatus)


@dataclass(frozen=True)
class Plan:
    """A solver result.

    Invariants: ``options`` has one entry per group (problem order) and ``blocks`` one 0/1 entry
    per block id. ``objective`` and ``latency`` are those of this assignment (latency includes
    the problem's ``latency_offset``, in the problem's units). ``bound`` is a proven upper bound on
    the optimum (equal to ``objective`` when ``status == "optimal"``, None when no bound is
    known). When ``status == "infeasible"`` no assignment meets the budget: ``objective`` and
    ``bound`` are None, ``min_latency`` is the smallest achievable latency and
    ``options``/``blocks`` achieve it (when the solver knows such an assignment).
    ``solve_seconds`` is wall time.
    """

    solver: str
    status: PlanStatus
    objective: int | float | None
    bound: int | float | None
    latency: int | float | None
    options: tuple[int, ...]
    blocks: tuple[int, ...]
    solve_seconds: float
    min_latency: int | float | None = None
    notes: tuple[str, ...] = ()
    format: str = PLAN_FORMAT
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in _STATUSES:
            raise InputError(f"plan status {self.status!r} is not one of {', '.join(_STATUSES)}")

    @classmethod
    def infeasible(cls, solver: str, *, latency: int | float | None, options, blocks,
                   seconds: float, note: str) -> Plan:
        """No assignment meets the budget; ``latency`` is the smallest achievable one (None when
        the solver could not establish it) and ``options``/``blocks`` reach it."""
        return cls(solver=solver, status="infeasible", objective=None, bound=None,
                   latency=latency, options=tuple(options), blocks=tuple(blocks),
                   solve_seconds=seconds, min_latency=latency, notes=(note,))

    @property
    def gap(self) -> float | None:
        """Relative optimality gap ``(bound - objective) / |bound|`` (0 when optimal)."""
        if self.objective is None or self.bound is None:
            return None
        if self.status == "optimal":
            return 0.0
        denom = abs(self.bound) if self.bound else 1.0
        return max(0.0, (self.bound - self.objective) / denom)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``Plan.from_json(p.to_json()) == p``)."""
        out: dict[str, Any] = {
            "format": self.format,
            "solver": self.solver,
            "status": self.status,
            "objective": self.objective,
            "bound": self.bound,
            "gap": self.gap,
            "latency": self.latency,
            "min_latency": self.min_latency,
            "options": list(self.options),
            "blocks": list(self.blocks),
            "solve_seconds": self.solve_seconds,
            "notes": list(self.notes),
        }
        out.update(self.extra)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Plan:
        """Read a plan dict; unknown fields land in ``extra``. Raises InputError when malformed."""
        if data.get("format") != PLAN_FORMAT:
            raise InputError(f"plan format is {data.get('format')!r}, expected {PLAN_FORMAT!r}")
        try:
            known = {
                "solver": str(data["solver"]),
                "status": data["status"],
                "objective": data.get("objective"),
                "bound": data.get("bound"),
                "latency": data.get("latency"),
                "options": tuple(int(o) for o in data["options"]),
                "blocks": tuple(int(b) for b in data["blocks"]),
                "solve_seconds": float(data["solve_seconds"]),
                "min_latency": data.get("min_latency"),
                "notes": tuple(str(n) for n in data.get("notes", ())),
            }
        except KeyError as exc:
            raise InputError(f"plan: missing field {exc.args[0]!r}") from exc
        except (TypeError, ValueError) as exc:
            raise InputError(f"plan: malformed field ({exc})") from exc
        reserved = set(known) | {"format", "gap"}
        extra = {k: v for k, v in data.items() if k not in reserved}
        return cls(**known, extra=extra)
