"""The accuracy study: at the same measured latency on one runtime, which pruned model is the
most accurate? (``benchmarks/accuracy.py`` runs it; ``--quick`` in CI.)

For one trained model and its data set (split once: ``study_sets``):
1. the original is timed once (the table's reference figure);
2. every (method, budget) is pruned once for ``b x`` the original: mdp-trt's methods by
   ``prune --budget b`` (its closed loop re-solves until the plan's latency, timed paired with
   the original, meets the budget), Torch-Pruning by bisecting its ratio on its model's latency
   timed paired with the original (``bench/torch_pruning.py``). Budgets are ratios to the
   original timed beside it, not milliseconds of step 1: a VM whose speed drifts by 20-30%
   between minutes (the Zen 3 one, 2026-12-07) made a millisecond budget land at 0.64 of the
   original for a 0.5 budget;
3. all pruned models are re-timed in one interleaved session with the original, so every row's
   latency comes from the same machine state (``retime.json``: the common measured ratio);
   a re-timing with an unreliable ratio (a busy host) is repeated, up to ``RETIME_TRIES``;
   a row reliably more than ``MATCH / 2`` away from its budget's reference (the median of the
   budget's rows) is pruned again for the reference, with the bias of its own measurement
   corrected and a tighter tolerance, and all are re-timed, until the rows agree or a row has
   had its ``match_rounds`` (a method whose plans skip the reference, such as uniform
   pruning's wide steps, gives the same model again and is left marked);
4. every pruned model is fine-tuned once per seed (distillation from the original on the
   training part, the seed drawing the batch order) and scored on the test part, which nothing
   else ever reads; the validation part is scored beside it for choices.
Each finished step is a file under the study folder and is never redone, so an interrupted
study resumes where it stopped; the runs' settings are checked against the folder's.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from mdp_trt.bench.accuracy import evaluate_accuracy
from mdp_trt.bench.measure import benchmark_model, benchmark_models
from mdp_trt.bench.study_sets import SPLIT_SEED, STUDY_SETS
from mdp_trt.data.splits import Splits
from mdp_trt.errors import InfeasibleBudget, InputError
from mdp_trt.importance.methods import IMPORTANCE_METHODS
from mdp_trt.latency.backends.registry import get_backend
from mdp_trt.latency.backends.timing import MODEL_POLICY
from mdp_trt.outputs import write_text
from mdp_trt.solve.methods import METHODS

__all__ = ["MATCH", "STUDY_METHODS", "StudyConfig", "StudyRuns", "is_study_method", "off_reference",
           "references", "run_key", "run_study", "scored_by", "unmatched"]

TORCH_PRUNING = "torch-pruning"
STUDY_METHODS: tuple[str, ...] = (*METHODS, TORCH_PRUNING)
# A budget's rows compare at equal latency when their common re-timed ratios are within this of
# each other: each within half of it from the budget's reference.
MATCH = 0.03
RETIME_TRIES = 3  # timings of the same models while a ratio is unreliable (a busy host)


@dataclass(frozen=True)
class StudyConfig:
    dataset: str  # a key of STUDY_SETS
    model: Path  # the trained ONNX model
    module: Path | None  # its PyTorch checkpoint (``digit_resnet.save_checkpoint``): Torch-Pruning's input
    budgets: tuple[float, ...]
    methods: tuple[str, ...]
    seeds: tuple[int, ...]  # fine-tuning seeds
    folder: Path  # the study's runs (resumable)
    epochs: int = 3
    importance: str = "taylor"
    group_size: int = 8
    threads: int = 1
    cache: Path | None = None
    confirm_windows: int = 3  # prune's confirmation windows (fewer only in the quick variant)
    # How close to the budget a method's own measurement must land: prune's closed loop accepts
    # [1 - 2 t, 1 + t] x budget, Torch-Pruning's bisection 1 +- t; tighter than the 3% the rows
    # must agree within, because the common re-timing moves every ratio a little.
    tolerance: float = 0.015
    match_rounds: int = 3  # re-prunes a row may get to join its budget's reference latency
    # The common re-timing goes on until every ratio's interval is within +-2%, or this long: it
    # times every pruned model (~26) in one interleaved round of 0.1 s blocks, ~3 s a round, so
    # MODEL_POLICY's 30 s held ~10 rounds, too few for +-2% on the 0.2 ms 8x8-digits network
    # even on a quiet host (2026-12-07). It stops as soon as every ratio is reliable.
    retime_seconds: float = 180.0
    # Longest paired timing of one pruned model with the original while pruning (prune's
    # --compare-seconds, Torch-Pruning's bisection); it stops earlier once the ratio is +-2%.
    compare_seconds: float = MODEL_POLICY.compare_s

    def check(self) -> None:
        if self.dataset not in STUDY_SETS:
            raise InputError(f"unknown data set {self.dataset!r}; choose one of: {', '.join(STUDY_SETS)}")
        unknown = [m for m in self.methods if not is_study_method(m)]
        if unknown:
            raise InputError(f"unknown method(s) {', '.join(unknown)}; choose from: "
                             f"{', '.join(STUDY_METHODS)}, or an mdp-trt method scored by another "
                             f"importance than the study's: METHOD@IMPORTANCE (e.g. mdp@magnitude; "
                             f"importances: {', '.join(IMPORTANCE_METHODS)})")
        if TORCH_PRUNING in self.methods and (self.module is None or not self.module.is_file()):
            raise InputError(f"Torch-Pruning prunes the PyTorch module: {self.module} is missing "
                             "(models/train_digits.py writes it beside the ONNX model)")
        if not self.model.is_file():
            raise InputError(f"{self.model}: no such model file (models/train_digits.py trains it)")
        if self.retime_seconds <= 0:
            raise InputError(f"the re-timing's time limit must be positive, got "
                             f"{self.retime_seconds:g} s (--retime-seconds)")
        if self.compare_seconds <= 0:
            raise InputError(f"the paired timing's time limit must be positive, got "
                             f"{self.compare_seconds:g} s")
        if any(not 0 < b < 1 for b in self.budgets):
            raise InputError(f"budgets are fractions of the original latency in (0, 1), got {self.budgets}")

    def settings(self) -> dict:
        """What makes two runs comparable (a resumed study must not mix others in)."""
        return {"dataset": self.dataset, "split_seed": SPLIT_SEED, "model": self.model.name,
                "model_sha256": _digest(self.model), "epochs": self.epochs, "importance": self.importance,
                "group_size": self.group_size, "threads": self.threads}


@dataclass
class StudyRuns:
    baseline: dict
    pruned: dict[str, dict] = field(default_factory=dict)  # run key -> prune record
    retime: dict = field(default_factory=dict)
    finetuned: dict[str, dict[int, dict]] = field(default_factory=dict)  # run key -> seed -> record


def run_key(method: str, budget: float) -> str:
    return f"{method}-{budget:g}"


def scored_by(method: str, config: "StudyConfig") -> tuple[str, str]:
    """(mdp-trt method, importance) of a study method: ``mdp@magnitude`` is ``mdp`` scored by
    magnitude whatever the study's importance; a plain name uses the study's."""
    name, _, importance = method.partition("@")
    return name, importance or config.importance


def is_study_method(method: str) -> bool:
    """A name of STUDY_METHODS, or METHOD@IMPORTANCE of an mdp-trt method."""
    name, at, importance = method.partition("@")
    if not at:
        return name in STUDY_METHODS
    return name in METHODS and importance in IMPORTANCE_METHODS


def run_study(config: StudyConfig, *, progress: bool = True, log: Callable[[str], None] = print
              ) -> StudyRuns:
    """Runs every missing step of the study in ``config.folder``; returns all its records."""
    config.check()
    splits = STUDY_SETS[config.dataset](SPLIT_SEED)
    config.folder.mkdir(parents=True, exist_ok=True)
    runs = StudyRuns(baseline=_baseline(config, splits, log))
    keys = [(m, b) for b in config.budgets for m in config.methods]
    pending = ["prune" for m, b in keys if not _record(config, run_key(m, b)).is_file()]
    pending += ["re-time"] + ["fine-tune" for m, b in keys for s in config.seeds
                              if not _finetune_done(config, run_key(m, b), s)]
    with _Progress(pending, progress, log) as bar:
        for method, budget in keys:
            key = run_key(method, budget)
            runs.pruned[key] = bar.step(
                "prune", key, not _record(config, key).is_file(),
                lambda: _pruned(config, method, budget, splits))
        def retime() -> dict:
            record = bar.step("re-time", "every pruned model with the original", True,
                              lambda: _retimed(config, runs.pruned))
            while not _settled(record):
                log(f"re-timing again: {', '.join(_unreliable(record))} not reliable (a busy host?)")
                bar.expect("re-time", 1)
                record = bar.step("re-time", "every pruned model with the original, again", True,
                                  lambda: _retimed(config, runs.pruned))
            return record

        runs.retime = retime()
        run_keys = [run_key(m, b) for m, b in keys]

        def fine_tunes(redone: dict) -> int:  # pending, counting every seed of a run pruned again
            return sum(k in redone or not _finetune_done(config, k, s, runs.pruned[k])
                       for k in run_keys for s in config.seeds)

        while off := unmatched(runs.retime["ratios"], config, runs.pruned):
            bar.expect("match", len(off))
            bar.expect("re-time", 1)
            bar.expect("fine-tune", fine_tunes(off))
            for key, reference in off.items():
                runs.pruned[key] = bar.step(
                    "match", f"{key} for {reference:.3f} of the original", True,
                    lambda: _rematched(config, key, runs, reference, splits))
            runs.retime = retime()
        bar.expect("fine-tune", fine_tunes({}))
        for method, budget in keys:
            key = run_key(method, budget)
            for seed in config.seeds:
                record = runs.pruned[key]
                runs.finetuned.setdefault(key, {})[seed] = bar.step(
                    "fine-tune", f"{key} seed {seed}", not _finetune_done(config, key, seed, record),
                    lambda: _finetuned(config, key, record, seed, splits))
    return runs


def references(ratios: dict[str, dict], config: StudyConfig) -> dict[float, float]:
    """Each budget's reference ratio: the median of its rows' common re-timed ratios."""
    by_budget: dict[float, list[float]] = {}
    for method in config.methods:
        for budget in config.budgets:
            if (ratio := ratios.get(run_key(method, budget))) is not None:
                by_budget.setdefault(budget, []).append(ratio["value"])
    return {b: float(statistics.median(v)) for b, v in by_budget.items()}


def off_reference(ratio: float, reference: float) -> bool:
    """Whether a row's re-timed ratio is further than ``MATCH / 2`` from its budget's reference:
    not at equal latency with the budget's other rows."""
    return abs(ratio / reference - 1) > MATCH / 2


def unmatched(ratios: dict[str, dict], config: StudyConfig, pruned: dict[str, dict]
              ) -> dict[str, float]:
    """Rows to prune again, each with its budget's reference ratio: reliably re-timed further
    than ``MATCH / 2`` from it, with match rounds left and not known to have no plan nearer."""
    off = {}
    for budget, reference in references(ratios, config).items():
        for method in config.methods:
            key = run_key(method, budget)
            record, ratio = pruned.get(key, {}), ratios.get(key)
            tries = record.get("matching", [])
            # an unreliable ratio (a busy host) is no reason to prune again
            if (ratio is None or not ratio["reliable"]
                    or not off_reference(ratio["value"], reference)
                    or len(tries) >= config.match_rounds or any(t["same_model"] for t in tries)):
                continue
            off[key] = reference
    return off


def _baseline(config: StudyConfig, splits: Splits, log) -> dict:
    path = config.folder / "baseline.json"
    if path.is_file():
        record = json.loads(path.read_text())
        ours = config.settings()
        if record["settings"] != ours:
            differ = ", ".join(f"{k} {record['settings'].get(k)} (this run: {v})"
                               for k, v in ours.items() if record["settings"].get(k) != v)
            raise InputError(f"{config.folder} holds a study with other settings: {differ}; "
                             "give another folder or the same settings")
        here = get_backend("ort-cpu", threads=config.threads).fingerprint().to_json()
        if record["fingerprint"] != here:
            # its budgets are milliseconds of that machine, and re-timings must not mix two
            raise InputError(f"{config.folder} holds a study timed on {record['fingerprint']['device']} "
                             f"({record['fingerprint']['runtime']} "
                             f"{record['fingerprint']['runtime_version']}); this machine is "
                             f"{here['device']} ({here['runtime']} {here['runtime_version']}): "
                             "finish it there, or give another folder")
        return record
    with get_backend("ort-cpu", threads=config.threads) as backend:
        measured = benchmark_model(config.model, backend)
    record = {"settings": config.settings(), "baseline_ms": measured.latency_ms,
              "fingerprint": measured.fingerprint,
              "accuracy_test": evaluate_accuracy(config.model, splits.test),
              "accuracy_val": evaluate_accuracy(config.model, splits.val),
              "sizes": {"train": len(splits.train.y), "val": len(splits.val.y), "test": len(splits.test.y)},
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    write_text(path, json.dumps(record, indent=1))
    log(f"original: {record['baseline_ms']:.3f} ms, test accuracy {record['accuracy_test']:.2%}")
    return record


def _record(config: StudyConfig, key: str, seed: int | None = None) -> Path:
    """Where a run's prune record (or its fine-tuning record for ``seed``) is kept."""
    return config.folder / "runs" / key / ("prune.json" if seed is None else f"seed-{seed}.json")


def _cached(path: Path, make: Callable[[], dict]) -> dict:
    if path.is_file():
        return json.loads(path.read_text())
    record = make()
    write_text(path, json.dumps(record, indent=1))
    return record


def _pruned(config: StudyConfig, method: str, budget: float, splits: Splits) -> dict:
    path = _record(config, run_key(method, budget))
    record = _cached(path, lambda: _prune_run(config, method, budget, budget, splits, config.tolerance))
    if "model" in record and "own_ratio" not in record:
        raise InputError(f"{path} was pruned for a budget in milliseconds (a study folder from "
                         "before budgets were ratios to the original); start the study in a new "
                         "folder (--out)")
    return record


def _prune_run(config: StudyConfig, method: str, budget: float, target: float, splits: Splits,
               tolerance: float) -> dict:
    """Prunes for ``target`` x the original (a ratio: the budget, or a matching's aim); the
    record's ``own_ratio`` is the method's own measurement of its model against the original."""
    folder = config.folder / "runs" / run_key(method, budget)
    start = time.perf_counter()
    record = {"method": method, "budget": budget, "target": target}
    try:
        if method == TORCH_PRUNING:
            record.update(_torch_pruning(config, target, folder, tolerance))
        else:
            record.update(_mdp_trt(config, method, target, folder, splits, tolerance))
    except InfeasibleBudget as exc:
        record["infeasible"] = str(exc)
    record["seconds"] = time.perf_counter() - start
    return record


def _rematched(config: StudyConfig, key: str, runs: StudyRuns, reference: float,
               splits: Splits) -> dict:
    """The run ``key`` pruned again for ``reference`` x the original in the common re-timing:
    for its own measured latency scaled by reference / its re-timed ratio (so the bias of its
    own measurement against the common one is corrected, and a plan that landed far from its
    budget, a method's wide step, is aimed from where it landed), within half the usual
    tolerance, the window prune accepts centred on the reference. The record keeps the earlier attempts; one that gives the same model ends the
    matching."""
    record = runs.pruned[key]
    ratio = runs.retime["ratios"][key]["value"]
    before = {"target": record["target"], "own_ratio": record["own_ratio"],
              "retimed_ratio": ratio, "reference": reference,
              "model_sha256": _digest(config.folder / record["model"])}
    tolerance = config.tolerance / 2
    # prune accepts [1 - 2 t, 1 + t] x its budget: centred on the reference, a landing at
    # either end stays within MATCH / 2 of it
    target = record["own_ratio"] * reference / ratio / (1 - tolerance / 2)
    again = _prune_run(config, record["method"], record["budget"], target, splits, tolerance)
    if "model" not in again:  # infeasible when tightened: the earlier model stands
        again = record | {"matching_failed": again.get("infeasible")}
    before["same_model"] = _digest(config.folder / again["model"]) == before["model_sha256"]
    again["matching"] = [*record.get("matching", []), before]
    write_text(_record(config, key), json.dumps(again, indent=1))
    return again


def _mdp_trt(config: StudyConfig, method: str, target: float, folder: Path, splits: Splits,
             tolerance: float) -> dict:
    from mdp_trt.prune import PruneOptions, prune

    method, importance = scored_by(method, config)
    calib = {}
    if importance == "taylor":
        calib_path = config.folder / "train.npz"
        if not calib_path.is_file():
            splits.train.save(calib_path)  # never the test part
        calib = {"calib_data": calib_path}
    report = prune(config.model, folder / "prune", PruneOptions(
        budget=target, method=method, importance=importance, **calib,
        group_size=config.group_size, threads=config.threads, cache=config.cache, force=True,
        tolerance=tolerance, max_rounds=6, confirm_windows=config.confirm_windows,
        compare_seconds=config.compare_seconds, progress=False))
    return {"model": str((folder / "prune" / "pruned.onnx").relative_to(config.folder)),
            "measured_ms": report.measured_latency_ms,
            "own_ratio": report.measured_latency_ms / report.baseline_latency_ms,
            "removed_blocks": report.removed_blocks,
            "kept_channels": report.kept_channels, "rounds": len(report.rounds),
            # the plans the closed loop measured (own ratios): where a method's plans skip a budget
            "round_ratios": sorted(r.measured_ms / report.baseline_latency_ms for r in report.rounds)}


def _torch_pruning(config: StudyConfig, target: float, folder: Path, tolerance: float) -> dict:
    from mdp_trt.bench.torch_pruning import match_budget
    from mdp_trt.bench.digit_resnet import load_checkpoint

    module = load_checkpoint(config.module)
    policy = replace(MODEL_POLICY, compare_s=config.compare_seconds)
    with get_backend("ort-cpu", threads=config.threads, model_policy=policy) as backend:
        def ratio(path: Path) -> float:  # timed paired with the original, as prune times plans
            return benchmark_models([config.model, path], backend)[1].ratio.value

        # match_budget bisects on whatever ``measure`` returns: here ratios to the original
        match, path = match_budget(module, _input_shape(config.model), target, config.group_size,
                                   ratio, folder / "torch-pruning", tolerance=tolerance,
                                   unit="x the original")
    return {"model": str(path.relative_to(config.folder)), "own_ratio": match.measured,
            "removed_blocks": [], "torch_pruning": match.to_json()}


def _input_shape(model: Path) -> tuple[int, ...]:
    from mdp_trt.latency.backends.inputs import model_inputs

    return tuple(model_inputs(model)[0].shape)


def _unreliable(record: dict) -> list[str]:
    return [k for k, r in record["ratios"].items() if not r["reliable"]]


def _settled(record: dict) -> bool:
    """A re-timing stands when every ratio is reliable, or after ``RETIME_TRIES`` timings of
    the same models (the table then shows the intervals it got)."""
    return not _unreliable(record) or record.get("tries", 1) >= RETIME_TRIES


def _retimed(config: StudyConfig, pruned: dict[str, dict]) -> dict:
    """One interleaved timing of the original and every pruned model: redone when any model
    changed or was added (e.g. a run pruned again, or more budgets), and when the last one of
    the same models is not ``_settled``."""
    keys = sorted(k for k, r in pruned.items() if "model" in r)
    paths = [config.model, *(config.folder / pruned[k]["model"] for k in keys)]
    digests = {k: _digest(p) for k, p in zip(["original", *keys], paths)}
    path = config.folder / "retime.json"
    tries = 0
    if path.is_file():
        record = json.loads(path.read_text())
        if record.get("models") == digests:
            if _settled(record):
                return record
            tries = record.get("tries", 1)
    policy = replace(MODEL_POLICY, compare_s=config.retime_seconds)
    with get_backend("ort-cpu", threads=config.threads, model_policy=policy) as backend:
        results = benchmark_models(paths, backend)
    record = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "models": digests,
              "tries": tries + 1, "original_ms": results[0].latency_ms,
              "ratios": {k: asdict(r.ratio) | {"ms": r.latency_ms} for k, r in zip(keys, results[1:])}}
    write_text(path, json.dumps(record, indent=1))
    return record


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _pruned_digest(config: StudyConfig, record: dict) -> str | None:
    return _digest(config.folder / record["model"]) if "model" in record else None


def _finetune_done(config: StudyConfig, key: str, seed: int, record: dict | None = None) -> bool:
    """Whether ``seed``'s fine-tuning record is there and of the run's current model (a row
    pruned again for matching is fine-tuned again); ``record``: the run's prune record (default:
    read from its file; no file: not done)."""
    path, prune_path = _record(config, key, seed), _record(config, key)
    if record is None:
        if not prune_path.is_file():
            return False
        record = json.loads(prune_path.read_text())
    return path.is_file() and json.loads(path.read_text()).get("model_sha256") == _pruned_digest(
        config, record)


def _finetuned(config: StudyConfig, key: str, record: dict, seed: int, splits: Splits) -> dict:
    from mdp_trt.finetune import FinetuneOptions, finetune

    path = _record(config, key, seed)
    if _finetune_done(config, key, seed, record):
        return json.loads(path.read_text())
    digest = _pruned_digest(config, record)
    if "model" not in record:
        result = {"skipped": record.get("infeasible", "no model"), "model_sha256": digest}
    else:
        pruned = config.folder / record["model"]
        out = config.folder / "runs" / key / f"finetuned-seed{seed}.onnx"
        tuned = finetune(pruned, config.model, splits.train, out,
                         FinetuneOptions(epochs=config.epochs, seed=seed, progress=False))
        result = {"seed": seed, "model_sha256": digest, "losses": tuned.losses,
                  "seconds": tuned.seconds,
                  "accuracy_pruned_test": evaluate_accuracy(pruned, splits.test),
                  "accuracy_test": evaluate_accuracy(out, splits.test),
                  "accuracy_val": evaluate_accuracy(out, splits.val)}
    write_text(path, json.dumps(result, indent=1))
    return result


class _Progress:
    """The study's pending steps with an estimate of the time left: the mean time of each kind
    of step (prune, re-time, fine-tune) run so far, or a first guess before one ran, times the
    steps of that kind still to do (steps finished on disk are not pending). A rich bar on a
    terminal, else one line per step that ran."""

    GUESS_S = {"prune": 90.0, "match": 90.0, "re-time": 60.0, "fine-tune": 20.0}

    def __init__(self, kinds: list[str], enabled: bool, log: Callable[[str], None]):
        self.todo, self.enabled, self.log = list(kinds), enabled, log
        self.spent: dict[str, list[float]] = {}

    def __enter__(self) -> "_Progress":
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), TextColumn("{task.fields[left]}"),
                            disable=not self.enabled)
        self.bar.__enter__()
        self.task = self.bar.add_task("study", total=len(self.todo), left=self.left())
        if not self.enabled and self.todo:
            self.log(f"{len(self.todo)} steps to run: {self.left()} (a first guess)")
        return self

    def left(self) -> str:
        seconds = sum(sum(self.spent.get(k, [])) / len(self.spent[k]) if self.spent.get(k)
                      else self.GUESS_S[k] for k in self.todo)
        return f"about {seconds / 60:.0f} min left" if seconds >= 60 else "under a minute left"

    def expect(self, kind: str, count: int) -> None:
        """``count`` steps of ``kind`` are pending now: known only as the study goes (matching's
        re-prunes and re-timing, the fine-tuning of a row pruned again)."""
        done = self.bar.tasks[0].completed
        self.todo = [k for k in self.todo if k != kind] + [kind] * count
        self.bar.update(self.task, total=done + len(self.todo), left=self.left())

    def step(self, kind: str, name: str, pending: bool, work: Callable[[], dict]) -> dict:
        self.bar.update(self.task, description=f"{kind} {name}")
        start = time.perf_counter()
        result = work()
        seconds = time.perf_counter() - start
        if pending:
            self.todo.remove(kind)
            if seconds > 1.0:  # a skipped run (no model to fine-tune) says nothing of the time
                self.spent.setdefault(kind, []).append(seconds)
            self.bar.update(self.task, advance=1, left=self.left())
            if not self.enabled:
                total = self.bar.tasks[0].total
                self.log(f"[{total - len(self.todo)}/{total}] {kind} {name}: {seconds:.0f} s; "
                         f"{self.left()}")
        return result

    def __exit__(self, *exc) -> None:
        self.bar.__exit__(*exc)
