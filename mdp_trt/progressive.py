"""Progressive pruning, as the MDP authors run it: several prune steps with fine-tuning between.

Step k of n prunes the previous step's fine-tuned model to ``budget ** (k / n)`` of the
ORIGINAL model's measured latency (a geometric schedule: every step removes the same fraction
of what is left), then fine-tunes the pruned model with the original as the distillation
teacher. Small steps let fine-tuning repair each cut before the next importance estimate, which
then sees weights that have adapted instead of a one-shot ranking of the original's.

Output directory (appears atomically, like ``prune``)::

    step1/ ... stepN/   each a prune output (pruned.onnx, report.json, ...) + finetuned.onnx
    final.onnx          the last step's fine-tuned model
    summary.json        schedule, measured latency and accuracy per step (mdp-progressive/1)
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from mdp_trt.bench.accuracy import evaluate_accuracy
from mdp_trt.data.datasets import ArrayDataset
from mdp_trt.errors import InputError
from mdp_trt.extras import require
from mdp_trt.finetune import FinetuneOptions, finetune
from mdp_trt.graph import load_model, save_model
from mdp_trt.outputs import output_folder
from mdp_trt.prune import PruneOptions, prune

__all__ = ["ProgressiveOptions", "StepSummary", "ProgressiveSummary", "budget_schedule",
           "progressive"]

log = logging.getLogger(__name__)

FORMAT = "mdp-progressive/1"


@dataclass(frozen=True)
class ProgressiveOptions:
    """``budget``: final latency as a fraction of the original's measured latency, in (0, 1].
    ``prune``: options of every prune step (its budget fields are set per step);
    ``finetune``: options of every fine-tuning step."""

    budget: float
    steps: int = 3
    prune: PruneOptions = field(default_factory=PruneOptions)
    finetune: FinetuneOptions = field(default_factory=FinetuneOptions)
    force: bool = False

    def __post_init__(self) -> None:
        _check(self)  # built from flags: a bad one fails before any data is loaded


@dataclass(frozen=True)
class StepSummary:
    step: int
    fraction: float  # of the original's measured latency
    budget_ms: float
    measured_ms: float  # the pruned model, as the step's prune measured it
    removed_blocks: list[str]
    pruned: str  # paths relative to the output directory
    finetuned: str
    accuracy_pruned: float | None  # on the evaluation data, when given
    accuracy_finetuned: float | None


@dataclass(frozen=True)
class ProgressiveSummary:
    model: str
    budget: float
    baseline_latency_ms: float
    accuracy_original: float | None
    final_model: str
    steps: list[StepSummary]

    def to_json(self) -> dict:
        return {"format": FORMAT, **asdict(self)}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1))


def budget_schedule(budget: float, steps: int) -> list[float]:
    """The fraction of the original latency each step aims at: ``budget ** (k / steps)``."""
    return [budget ** (k / steps) for k in range(1, steps + 1)]


def _check(options: ProgressiveOptions) -> None:
    require("torch", "progressive pruning (it fine-tunes after each step)")
    if not 0 < options.budget <= 1:
        raise InputError(f"`budget` {options.budget} must be a fraction in (0, 1], e.g. 0.5",
                         parameters=("budget",))
    if options.steps < 1:
        raise InputError(f"`steps` {options.steps} must be >= 1", parameters=("steps",))


def progressive(model_path: str | Path, out_dir: str | Path, train: ArrayDataset,
                options: ProgressiveOptions, evaluate: ArrayDataset | None = None) -> ProgressiveSummary:
    """Prune ``model_path`` to ``options.budget`` in ``options.steps`` steps, fine-tuning on
    ``train`` after each; accuracies on ``evaluate`` (labelled) when given."""
    model_path, out_dir = Path(model_path), Path(out_dir)
    accuracy = (lambda path: evaluate_accuracy(path, evaluate)) if evaluate is not None else (lambda path: None)
    with output_folder(out_dir, command="progressive", inputs=[model_path],
                       force=options.force) as work:
        current, baseline_ms, steps = model_path, None, []
        for k, fraction in enumerate(budget_schedule(options.budget, options.steps), start=1):
            folder = work / f"step{k}"
            # Step 1 measures the original; later steps aim at fractions of that same figure,
            # not of their own (already pruned) input's latency.
            budgets = ({"budget": fraction, "budget_ms": None} if baseline_ms is None
                       else {"budget": None, "budget_ms": fraction * baseline_ms})
            report = prune(current, folder, replace(options.prune, **budgets, force=False))
            baseline_ms = baseline_ms or report.baseline_latency_ms
            finetune(folder / "pruned.onnx", model_path, train, folder / "finetuned.onnx",
                     options.finetune)
            steps.append(StepSummary(
                step=k, fraction=fraction, budget_ms=report.budget_ms,
                measured_ms=report.measured_latency_ms, removed_blocks=report.removed_blocks,
                pruned=f"step{k}/pruned.onnx", finetuned=f"step{k}/finetuned.onnx",
                accuracy_pruned=accuracy(folder / "pruned.onnx"),
                accuracy_finetuned=accuracy(folder / "finetuned.onnx")))
            log.info("step %d/%d: %.2f ms for a %.2f ms budget", k, options.steps,
                     report.measured_latency_ms, report.budget_ms)
            current = folder / "finetuned.onnx"
        save_model(load_model(current), work / "final.onnx")
        summary = ProgressiveSummary(model=str(model_path), budget=options.budget,
                                     baseline_latency_ms=baseline_ms,
                                     accuracy_original=accuracy(model_path),
                                     final_model="final.onnx", steps=steps)
        summary.save(work / "summary.json")
    return summary
