"""The `mdp-minlp-instance/1` problem: loading, validation, exact evaluation and JSON round trip.

The format and the optimisation problem are defined in
``shared/benchmarks/mdp_official_resnet50/README.md``. In short, with one-hot ``x[g][i]`` per group
(option 0 forbidden) and binary ``z[b]`` per block::

    maximise   sum_{l in_objective} z[b(l)] * importance_l[x_g(l)]
    subject to latency_offset + sum_l (z[b(l)] if latency_times_block else 1)
                                       * latency_l[x_g(l)][x_p(l)]  <=  effective_capacity

``latency_l`` is a vector when the layer has no input group (``prev_group`` null).

Invariants of a loaded :class:`Problem` (checked by :func:`load_problem`): every latency table has
the shape (num_options of its group[, num_options of its input group]) and holds finite
non-negative numbers; every importance vector has length num_options of its group, is finite and
starts with 0; all indices are in range. Latencies are in the problem's own unit (the official
instances use integers of about microseconds per batch); the solver never converts them.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from mdp_trt.errors import InputError

__all__ = [
    "FORMAT",
    "Group",
    "Block",
    "Layer",
    "Evaluation",
    "Problem",
    "load_problem",
]

logger = logging.getLogger(__name__)

FORMAT = "mdp-minlp-instance/1"

# Float instances compare latency against the budget with this relative slack, so that a plan
# whose latency equals the budget up to summation order is not declared infeasible. Integral
# instances are compared exactly.
FLOAT_RELATIVE_TOLERANCE = 1e-9

# Top-level keys this module interprets; every other key is preserved verbatim by to_json().
_KNOWN_KEYS = frozenset(
    {
        "format",
        "name",
        "capacity",
        "extra_space",
        "effective_capacity",
        "latency_offset",
        "groups",
        "blocks",
        "layers",
        "constraints",
    }
)


@dataclass(frozen=True)
class Group:
    """A channel group: options 0..num_options-1 mean "keep that many units" (0 is forbidden)."""

    name: str
    num_options: int
    layers: tuple[str, ...] = ()
    channels_per_option: int | None = None


@dataclass(frozen=True)
class Block:
    """A residual block; ``z[id] = 0`` removes every layer that names it."""

    id: int
    name: str
    num_active_layers: int | None = None


@dataclass(frozen=True, eq=False)
class Layer:
    """One layer's contribution.

    ``latency`` has shape (num_options[group], num_options[prev_group]) or (num_options[group],)
    when ``prev_group`` is None; ``importance`` has shape (num_options[group],) with
    ``importance[0] == 0``. Both are float64 arrays (exact for integers below 2**53).
    """

    name: str
    group: int
    prev_group: int | None
    block: int
    latency: np.ndarray
    importance: np.ndarray
    in_objective: bool = True
    latency_times_block: bool = True

    def latency_at(self, option: int, prev_option: int | None) -> float:
        """The table entry for this layer's output option and its input group's option."""
        if self.prev_group is None:
            return float(self.latency[option])
        assert prev_option is not None
        return float(self.latency[option, prev_option])


@dataclass(frozen=True)
class Evaluation:
    """An assignment evaluated exactly (Python ints when the data are integral, else fsum floats).

    ``latency`` includes ``latency_offset``. ``feasible`` is True iff every constraint holds:
    option ranges, forced stem option, forced blocks and the latency budget; ``violations`` says
    which ones do not.
    """

    objective: int | float
    latency: int | float
    feasible: bool
    violations: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class Problem:
    """A validated `mdp-minlp-instance/1` problem (immutable; build with :func:`load_problem`).

    ``forced_blocks`` are the block ids whose variable is fixed to 1; ``stem`` is
    ``(group, forced_option)`` or None. ``integral`` is True when every latency, importance,
    offset and the capacity are integers, in which case evaluations are exact integers.
    ``extra`` holds unknown top-level fields, preserved by :meth:`to_json`.
    """

    name: str
    capacity: float
    extra_space: float
    latency_offset: float
    groups: tuple[Group, ...]
    blocks: tuple[Block, ...]
    layers: tuple[Layer, ...]
    stem: tuple[int, int] | None
    forced_blocks: tuple[int, ...]
    integral: bool
    constraints: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ budget
    @property
    def effective_capacity(self) -> float:
        """The right-hand side actually used: ``capacity + extra_space``."""
        return self.capacity + self.extra_space

    @property
    def latency_tolerance(self) -> float:
        """Slack allowed when comparing a latency with the budget (0 for integral problems)."""
        if self.integral:
            return 0.0
        return FLOAT_RELATIVE_TOLERANCE * max(1.0, abs(self.effective_capacity))

    def fits(self, latency: float) -> bool:
        """Whether a total latency (offset included) meets the budget."""
        return latency <= self.effective_capacity + self.latency_tolerance

    # ------------------------------------------------------------------ sizes
    @property
    def num_groups(self) -> int:
        return len(self.groups)

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def allowed_options(self, group: int) -> range:
        """Options group ``group`` may take (option 0 is forbidden; the stem is forced)."""
        if self.stem is not None and self.stem[0] == group:
            return range(self.stem[1], self.stem[1] + 1)
        return range(1, self.groups[group].num_options)

    def active_blocks(self) -> frozenset[int]:
        """Block ids that at least one layer names (the others affect nothing)."""
        return frozenset(layer.block for layer in self.layers)

    def block_is_free(self, block: int) -> bool:
        """Whether the solver may choose ``z[block]`` (active and not forced kept)."""
        return block in self.active_blocks() and block not in self.forced_blocks

    # ------------------------------------------------------------------ views
    def with_blocks_kept(self) -> Problem:
        """The same problem with every block forced kept: channels only."""
        return replace(self, forced_blocks=tuple(block.id for block in self.blocks))

    def with_output_only_latency(self) -> Problem:
        """The same problem where a layer's latency depends on its output width only: every
        entry of a layer with an input group is its widest-input entry."""
        def output_only(layer: Layer) -> Layer:
            if layer.prev_group is None:
                return layer
            latency = np.repeat(layer.latency[:, -1:], layer.latency.shape[1], axis=1)
            latency.setflags(write=False)
            return replace(layer, latency=latency)
        return replace(self, layers=tuple(output_only(layer) for layer in self.layers))

    def with_metadata(self, **entries: Any) -> Problem:
        """The same problem with ``entries`` added to its ``metadata`` (kept by to_json)."""
        metadata = {**self.extra.get("metadata", {}), **entries}
        return replace(self, extra={**self.extra, "metadata": metadata})

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, options: Sequence[int], blocks: Sequence[int]) -> Evaluation:
        """Objective, latency and feasibility of an assignment, independent of any solver.

        ``options`` has one entry per group (problem order), ``blocks`` one 0/1 entry per block id.
        Raises InputError when the lengths or an option index are out of range (such a plan
        cannot be evaluated at all); constraint violations only make ``feasible`` False.
        """
        options = [int(o) for o in options]
        blocks = [int(b) for b in blocks]
        if len(options) != self.num_groups:
            raise InputError(
                f"plan has {len(options)} options, problem {self.name!r} has {self.num_groups} groups"
            )
        if len(blocks) != self.num_blocks:
            raise InputError(
                f"plan has {len(blocks)} block flags, problem {self.name!r} has {self.num_blocks} blocks"
            )
        for g, (opt, grp) in enumerate(zip(options, self.groups)):
            if not 0 <= opt < grp.num_options:
                raise InputError(
                    f"option {opt} of group {g} ({grp.name!r}) is out of range 0..{grp.num_options - 1}"
                )
        for b, flag in enumerate(blocks):
            if flag not in (0, 1):
                raise InputError(f"block {b} flag is {flag}, expected 0 or 1")

        violations: list[str] = []
        for g, opt in enumerate(options):
            if opt == 0:
                violations.append(f"group {g} ({self.groups[g].name!r}) takes forbidden option 0")
        if self.stem is not None and options[self.stem[0]] != self.stem[1]:
            violations.append(
                f"stem group {self.stem[0]} takes option {options[self.stem[0]]}, forced {self.stem[1]}"
            )
        for b in self.forced_blocks:
            if blocks[b] != 1:
                violations.append(f"block {b} ({self.blocks[b].name!r}) is forced kept")

        lat_terms: list[float] = [self.latency_offset]
        obj_terms: list[float] = []
        for layer in self.layers:
            z = blocks[layer.block]
            prev = None if layer.prev_group is None else options[layer.prev_group]
            lat = layer.latency_at(options[layer.group], prev)
            if not layer.latency_times_block or z:
                lat_terms.append(lat)
            if layer.in_objective and z:
                obj_terms.append(float(layer.importance[options[layer.group]]))
        if self.integral:
            latency: int | float = sum(int(v) for v in lat_terms)
            objective: int | float = sum(int(v) for v in obj_terms)
        else:
            latency = math.fsum(lat_terms)
            objective = math.fsum(obj_terms)
        if not self.fits(latency):
            violations.append(f"latency {latency} exceeds the budget {self.effective_capacity}")
        return Evaluation(objective, latency, not violations, tuple(violations))

    # ------------------------------------------------------------------ JSON
    def to_json(self) -> dict[str, Any]:
        """The problem as an `mdp-minlp-instance/1` dict; ``load_problem(p.to_json())`` equals p."""

        def num(v: float) -> int | float:
            return int(v) if self.integral or float(v).is_integer() else float(v)

        def arr(a: np.ndarray) -> list[Any]:
            if self.integral:
                return a.astype(np.int64).tolist()
            return a.tolist()

        out: dict[str, Any] = {"format": FORMAT, "name": self.name}
        out.update(self.extra)
        out["capacity"] = num(self.capacity)
        out["extra_space"] = num(self.extra_space)
        out["effective_capacity"] = num(self.effective_capacity)
        if self.latency_offset:
            out["latency_offset"] = num(self.latency_offset)
        out["groups"] = [
            {
                "name": g.name,
                "layers": list(g.layers),
                "num_options": g.num_options,
                **({"channels_per_option": g.channels_per_option} if g.channels_per_option is not None else {}),
            }
            for g in self.groups
        ]
        out["blocks"] = [
            {
                "id": b.id,
                "name": b.name,
                **({"num_active_layers": b.num_active_layers} if b.num_active_layers is not None else {}),
            }
            for b in self.blocks
        ]
        out["layers"] = [
            {
                "name": layer.name,
                "group": layer.group,
                "prev_group": layer.prev_group,
                "block": layer.block,
                "latency": arr(layer.latency),
                "importance": layer.importance.tolist()
                if not self.integral
                else layer.importance.astype(np.int64).tolist(),
                "in_objective": layer.in_objective,
                "latency_times_block": layer.latency_times_block,
            }
            for layer in self.layers
        ]
        constraints = dict(self.constraints)
        constraints["one_option_per_group"] = True
        constraints["option_zero_forbidden"] = True
        constraints["block_forced_kept"] = (
            None
            if not self.forced_blocks
            else self.forced_blocks[0]
            if len(self.forced_blocks) == 1
            else list(self.forced_blocks)
        )
        constraints["stem"] = None if self.stem is None else {"group": self.stem[0], "forced_option": self.stem[1]}
        out["constraints"] = constraints
        return out


# ---------------------------------------------------------------------------------------------
# loading and validation


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _require(d: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in d:
        raise InputError(f"{where}: missing field {key!r}")
    return d[key]


def _finite_number(v: Any, where: str) -> float:
    if not _is_num(v) or not math.isfinite(float(v)):
        raise InputError(f"{where} must be a finite number, got {v!r}")
    return float(v)


def _index(v: Any, size: int, where: str, *, nullable: bool = False) -> int | None:
    if v is None and nullable:
        return None
    if not _is_int(v) or not 0 <= int(v) < size:
        raise InputError(f"{where} is {v!r}, expected an index in 0..{size - 1}")
    return int(v)


def _read_source(source: str | Path | Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    if isinstance(source, Mapping):
        return dict(source), "<dict>"
    path = Path(source)
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputError(f"cannot read problem file {str(path)!r}: {exc.strerror or exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object at the top level")
    return data, str(path)


def _load_groups(raw: Any, origin: str) -> tuple[Group, ...]:
    if not isinstance(raw, list) or not raw:
        raise InputError(f"{origin}: 'groups' must be a non-empty list")
    groups = []
    for g, item in enumerate(raw):
        where = f"{origin}: group {g}"
        if not isinstance(item, Mapping):
            raise InputError(f"{where}: expected an object")
        name = _require(item, "name", where)
        n = _require(item, "num_options", f"{where} ({name!r})")
        if not _is_int(n) or int(n) < 2:
            raise InputError(
                f"{where} ({name!r}): num_options is {n!r}, expected an integer >= 2 "
                "(option 0 is forbidden, so a group needs at least one real option)"
            )
        cpo = item.get("channels_per_option")
        groups.append(
            Group(
                name=str(name),
                num_options=int(n),
                layers=tuple(str(x) for x in item.get("layers", ()) or ()),
                channels_per_option=int(cpo) if _is_int(cpo) else None,
            )
        )
    return tuple(groups)


def _load_blocks(raw: Any, origin: str) -> tuple[Block, ...]:
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        raise InputError(f"{origin}: 'blocks' must be a list")
    blocks = []
    for b, item in enumerate(raw):
        where = f"{origin}: block {b}"
        if not isinstance(item, Mapping):
            raise InputError(f"{where}: expected an object")
        bid = item.get("id", b)
        if bid != b:
            raise InputError(f"{where}: id is {bid!r}, expected {b} (ids are positions in 'blocks')")
        active = item.get("num_active_layers")
        blocks.append(Block(id=b, name=str(item.get("name", f"block{b}")), num_active_layers=active if _is_int(active) else None))
    return tuple(blocks)


def _array(raw: Any, where: str, field_name: str) -> np.ndarray:
    try:
        arr = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{where}: {field_name} is not a numeric (rectangular) array ({exc})") from exc
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{where}: {field_name} holds a non-finite value")
    return arr


def _load_layer(item: Any, idx: int, groups: tuple[Group, ...], nblocks: int, origin: str) -> Layer:
    if not isinstance(item, Mapping):
        raise InputError(f"{origin}: layer {idx}: expected an object")
    name = str(item.get("name", f"#{idx}"))
    where = f"{origin}: layer {name!r}"
    g = _index(_require(item, "group", where), len(groups), f"{where}: group")
    p = _index(item.get("prev_group"), len(groups), f"{where}: prev_group", nullable=True)
    if nblocks == 0:
        raise InputError(f"{where}: block is {item.get('block')!r} but the problem has no blocks")
    b = _index(_require(item, "block", where), nblocks, f"{where}: block")
    assert g is not None and b is not None
    grp = groups[g]
    lat = _array(_require(item, "latency", where), where, "latency")
    if p is None:
        if lat.shape != (grp.num_options,):
            raise InputError(
                f"{where}: latency has shape {list(lat.shape)}, expected a vector of "
                f"{grp.num_options} entries (num_options of group {grp.name!r}; prev_group is null)"
            )
    else:
        prev = groups[p]
        if lat.ndim != 2:
            raise InputError(
                f"{where}: latency has {lat.ndim} dimension(s), expected a "
                f"{grp.num_options}x{prev.num_options} matrix (group {grp.name!r} x prev_group {prev.name!r})"
            )
        if lat.shape[0] != grp.num_options:
            raise InputError(
                f"{where}: latency has {lat.shape[0]} rows, expected {grp.num_options} "
                f"(num_options of group {grp.name!r})"
            )
        if lat.shape[1] != prev.num_options:
            raise InputError(
                f"{where}: latency has {lat.shape[1]} columns, expected {prev.num_options} "
                f"(num_options of prev_group {prev.name!r})"
            )
    if np.any(lat < 0):
        raise InputError(f"{where}: latency holds a negative value ({lat.min()})")
    imp = _array(_require(item, "importance", where), where, "importance")
    if imp.shape != (grp.num_options,):
        raise InputError(
            f"{where}: importance has shape {list(imp.shape)}, expected a vector of "
            f"{grp.num_options} entries (num_options of group {grp.name!r})"
        )
    if imp[0] != 0:
        raise InputError(f"{where}: importance[0] is {imp[0]}, expected 0 (keeping nothing scores nothing)")
    in_obj = item.get("in_objective", True)
    times_block = item.get("latency_times_block", True)
    if not isinstance(in_obj, bool) or not isinstance(times_block, bool):
        raise InputError(f"{where}: in_objective and latency_times_block must be booleans")
    lat.setflags(write=False)
    imp.setflags(write=False)
    return Layer(name, g, p, b, lat, imp, in_obj, times_block)


def load_problem(source: str | Path | Mapping[str, Any]) -> Problem:
    """Load and validate an `mdp-minlp-instance/1` problem from a path, a JSON string path or a dict.

    Raises InputError naming the file, the layer/group and the field on any inconsistency.
    Accepts instances written by our own pipeline as well as the official ones: float or int
    data, absent ``constraints.stem`` / ``block_forced_kept``, an optional ``latency_offset``
    (constant latency of the unprunable rest of the graph), unknown top-level fields (kept).
    """
    data, origin = _read_source(source)
    fmt = data.get("format")
    if fmt != FORMAT:
        raise InputError(f"{origin}: format is {fmt!r}, expected {FORMAT!r}")
    groups = _load_groups(data.get("groups"), origin)
    blocks = _load_blocks(data.get("blocks"), origin)
    raw_layers = data.get("layers")
    if not isinstance(raw_layers, list) or not raw_layers:
        raise InputError(f"{origin}: 'layers' must be a non-empty list")
    layers = tuple(_load_layer(item, i, groups, len(blocks), origin) for i, item in enumerate(raw_layers))

    if "capacity" not in data:
        raise InputError(f"{origin}: missing field 'capacity' (the latency budget)")
    capacity = _finite_number(data["capacity"], f"{origin}: capacity")
    extra_space = _finite_number(data.get("extra_space", 0) or 0, f"{origin}: extra_space")
    # May be negative: the calibrated rest-of-graph constant is negative when the per-layer
    # tables overestimate the layers inside the whole model (e.g. per-cell layout conversions).
    offset = _finite_number(data.get("latency_offset", 0) or 0, f"{origin}: latency_offset")
    if data.get("effective_capacity") is not None:
        eff = _finite_number(data["effective_capacity"], f"{origin}: effective_capacity")
        if abs(eff - (capacity + extra_space)) > 1e-9 * max(1.0, abs(eff)):
            raise InputError(
                f"{origin}: effective_capacity {eff} != capacity + extra_space ({capacity + extra_space})"
            )

    constraints = data.get("constraints") or {}
    if not isinstance(constraints, Mapping):
        raise InputError(f"{origin}: 'constraints' must be an object")
    for flag in ("one_option_per_group", "option_zero_forbidden"):
        if constraints.get(flag, True) is not True:
            raise InputError(f"{origin}: constraints.{flag} must be true (the only supported model)")
    stem: tuple[int, int] | None = None
    raw_stem = constraints.get("stem")
    if raw_stem is not None:
        if not isinstance(raw_stem, Mapping):
            raise InputError(f"{origin}: constraints.stem must be an object or null")
        sg = _index(raw_stem.get("group"), len(groups), f"{origin}: constraints.stem.group")
        assert sg is not None
        so = raw_stem.get("forced_option", groups[sg].num_options - 1)
        if not _is_int(so) or not 1 <= int(so) < groups[sg].num_options:
            raise InputError(
                f"{origin}: constraints.stem.forced_option is {so!r}, expected 1..{groups[sg].num_options - 1}"
            )
        stem = (sg, int(so))
    # The official model always states b[0] = 1 (block 0 holds the layers outside residual
    # blocks), so an absent field means block 0; an explicit null means no forced block.
    raw_forced = constraints.get("block_forced_kept", 0) if "block_forced_kept" in constraints else 0
    if raw_forced is None:
        forced_list: list[Any] = []
    elif isinstance(raw_forced, list):
        forced_list = raw_forced
    else:
        forced_list = [raw_forced]
    if not blocks:
        forced_list = []
    forced = tuple(
        sorted({int(_index(f, len(blocks), f"{origin}: constraints.block_forced_kept") or 0) for f in forced_list})
    )

    integral = all(float(v).is_integer() for v in (capacity, extra_space, offset)) and all(
        np.all(np.mod(layer.latency, 1) == 0) and np.all(np.mod(layer.importance, 1) == 0) for layer in layers
    )
    extra = {k: v for k, v in data.items() if k not in _KNOWN_KEYS}
    known_constraints = {"one_option_per_group", "option_zero_forbidden", "block_forced_kept", "stem"}
    constraints_extra = {k: v for k, v in constraints.items() if k not in known_constraints}
    return Problem(
        name=str(data.get("name", Path(origin).stem if origin != "<dict>" else "problem")),
        capacity=capacity,
        extra_space=extra_space,
        latency_offset=offset,
        groups=groups,
        blocks=blocks,
        layers=layers,
        stem=stem,
        forced_blocks=forced,
        integral=integral,
        constraints=constraints_extra,
        extra=extra,
    )
