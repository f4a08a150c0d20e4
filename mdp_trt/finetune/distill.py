"""Recover a pruned model's accuracy by knowledge distillation from the original.

The student (the pruned ONNX model) and the teacher (the original) both run through
``TorchGraph``; the teacher only under ``no_grad``, once, to get its logits for every sample.
The loss per batch is

    alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, y)

(Hinton et al. 2015: the T^2 keeps the soft term's gradients on the scale of the hard term's);
without labels the loss is the distillation term alone. BatchNormalization kept in the student
is frozen: it normalises with its running statistics (the inference formula, as TorchGraph always
computes); only its gamma and beta train, as a per-channel affine map.

The optimizer is Adam: a fine-tune here is a short run without a tuned schedule on layers whose
widths were just cut, and Adam's per-parameter step sizes work at one default learning rate for
all of them, where SGD would need a learning rate (and warm-up) tuned per model.

The trained weights are written into the student's own graph (``TorchGraph.write_back``), saved
atomically, and the file is run in ONNX Runtime before ``finetune`` returns. A run that diverges
(a NaN or inf loss, weight or output, typically from too large a learning rate) fails before
that, writing neither the model nor a checkpoint of the failing epoch: an exit status of 0 must
never mean a model that outputs NaN.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mdp_trt.data.datasets import ArrayDataset
from mdp_trt.errors import InputError, VerificationFailed
from mdp_trt.extras import require
from mdp_trt.finetune.checkpoint import Checkpoint, load_checkpoint, save_checkpoint

__all__ = ["FinetuneOptions", "FinetuneResult", "finetune", "distillation_loss"]

log = logging.getLogger(__name__)

_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class FinetuneOptions:
    epochs: int = 1
    batch_size: int = 64
    lr: float = 1e-3  # Adam's step size
    temperature: float = 4.0  # softens both distributions in the distillation term
    alpha: float = 0.9  # weight of distillation; 1 - alpha weighs the label cross-entropy
    seed: int = 0  # batch order of epoch e is drawn from (seed, e)
    checkpoint: Path | None = None  # written after every epoch; an existing one is resumed
    progress: bool = True

    def __post_init__(self) -> None:
        self.check()  # built from flags: a bad one fails here, before any data is loaded

    def check(self) -> None:
        """Raise InputError naming the field of the first unusable option."""
        if self.epochs < 1:
            raise InputError(f"`epochs` {self.epochs} must be >= 1", parameters=("epochs",))
        if self.batch_size < 1:
            raise InputError(f"`batch_size` {self.batch_size} must be >= 1",
                             parameters=("batch_size",))
        # torch applies the step size in the weights' float32: beyond its range it is inf
        if not 0 < self.lr <= _FLOAT32_MAX:  # also False for NaN
            raise InputError(f"`lr` {self.lr} must be > 0 and at most {_FLOAT32_MAX:.3g} (the "
                             "float32 range); Adam's step size, 1e-3 suits most models",
                             parameters=("lr",))
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise InputError(f"temperature {self.temperature} must be a finite number > 0")
        if not 0 <= self.alpha <= 1:
            raise InputError(f"alpha {self.alpha} must be in [0, 1]")

    def run_key(self) -> dict:
        """What a checkpoint must have been written with to be resumed (epochs may grow)."""
        return {"batch_size": self.batch_size, "lr": self.lr, "temperature": self.temperature,
                "alpha": self.alpha, "seed": self.seed}


@dataclass(frozen=True)
class FinetuneResult:
    epochs: int  # epochs run by this call (fewer than asked when resumed from a checkpoint)
    losses: list[float]  # mean training loss of every epoch, resumed ones included
    seconds: float  # wall time of this call
    resumed_from: int = 0  # epochs already finished in the checkpoint
    output: str = ""

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "FinetuneResult":
        return cls(**data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1))


def distillation_loss(student, teacher, labels, *, temperature: float, alpha: float):
    """The loss of the module docstring for a batch of logits (torch tensors)."""
    import torch.nn.functional as F

    t = temperature
    soft = F.kl_div(F.log_softmax(student / t, dim=1), F.log_softmax(teacher / t, dim=1),
                    log_target=True, reduction="batchmean") * t * t
    if labels is None:
        return soft
    return alpha * soft + (1 - alpha) * F.cross_entropy(student, labels)


def _load(path: str | Path, role: str, dataset: ArrayDataset):
    from mdp_trt.graph import load_model
    from mdp_trt.graph.weights import check_finite_weights

    model = load_model(path)
    check_finite_weights(model, path)
    sample = tuple(model.graph.inputs[0].shape)[1:]
    if tuple(dataset.x.shape[1:]) != sample:
        raise InputError(f"{path}: the {role} takes samples of {'x'.join(map(str, sample))}, the "
                         f"data holds {'x'.join(map(str, dataset.x.shape[1:]))}; give data shaped "
                         "like the model's input")
    return model


def _teacher_logits(teacher, dataset: ArrayDataset, batch_size: int, progress: bool) -> np.ndarray:
    import torch

    from mdp_trt.importance.taylor import logits_of

    chunks = []
    with torch.no_grad():
        for x, _ in _track(dataset.batches(batch_size), -(-len(dataset) // batch_size),
                           "teacher logits", progress):
            chunks.append(logits_of(teacher, torch.from_numpy(x)).numpy())
    return np.concatenate(chunks)


def _check_targets(targets: np.ndarray, teacher_path: str | Path) -> None:
    """Finite weights and data can still overflow; a NaN target would make every loss NaN."""
    bad = np.flatnonzero(~np.isfinite(targets).all(axis=1))
    if bad.size:
        raise InputError(f"{teacher_path}: the teacher's outputs are NaN or inf on {bad.size} of "
                         f"{len(targets)} samples (first: sample {bad[0]}); give a teacher and "
                         "data it computes finite logits on")


def _track(batches, total: int, description: str, enabled: bool):
    from rich.console import Console
    from rich.progress import track

    return track(batches, description=description, total=total, disable=not enabled,
                 console=Console(stderr=True))


def finetune(student_path: str | Path, teacher_path: str | Path, dataset: ArrayDataset,
             out_path: str | Path, options: FinetuneOptions = FinetuneOptions()) -> FinetuneResult:
    """Distil ``teacher_path`` into ``student_path`` on ``dataset``; write ``out_path``.

    With ``options.checkpoint`` the state is saved after every epoch and an existing checkpoint
    (same run options) is resumed, ending with the weights an uninterrupted run would have.
    Raises InputError for unusable data or models (NaN or inf weights included) and
    VerificationFailed, writing no model and no checkpoint of the failing epoch, when training
    diverges (a NaN or inf loss, weight or output) or the written model does not run in ONNX
    Runtime like the trained module.
    """
    require("torch", "fine-tuning")
    import torch

    from mdp_trt.graph import save_model
    from mdp_trt.graph.torch_graph import TorchGraph

    if len(dataset) == 0:
        raise InputError("the fine-tuning data is empty; give at least one sample")
    start = time.perf_counter()
    student_model = _load(student_path, "student", dataset)
    teacher = TorchGraph.from_model(_load(teacher_path, "teacher", dataset))
    student = TorchGraph.from_model(student_model)
    targets = _teacher_logits(teacher, dataset, options.batch_size, options.progress)
    del teacher
    _check_targets(targets, teacher_path)
    dataset.check_classes(targets.shape[1])
    optimizer = torch.optim.Adam(student.parameters(), lr=options.lr)

    losses: list[float] = []
    if options.checkpoint is not None and options.checkpoint.exists():
        losses = _resume(options, student, optimizer)
    resumed = len(losses)
    for epoch in range(resumed, options.epochs):
        losses.append(_train_epoch(student, optimizer, dataset, targets, options, epoch))
        log.info("epoch %d/%d: loss %.4f", epoch + 1, options.epochs, losses[-1])
        _check_trained(student, dataset, options, epoch)
        if options.checkpoint is not None:
            save_checkpoint(Checkpoint(epoch=epoch + 1, losses=list(losses),
                                       run=options.run_key(), parameters=student.state_dict(),
                                       optimizer=optimizer.state_dict()), options.checkpoint)

    out_path = Path(out_path)
    save_model(student.write_back(student_model), out_path)
    _check_written(out_path, student, dataset)
    return FinetuneResult(epochs=options.epochs - resumed, losses=losses,
                          seconds=time.perf_counter() - start, resumed_from=resumed,
                          output=str(out_path))


def _train_epoch(student, optimizer, dataset: ArrayDataset, targets: np.ndarray,
                 options: FinetuneOptions, epoch: int) -> float:
    """One optimizer step per batch, in the order drawn from (seed, epoch); the mean loss."""
    import torch

    from mdp_trt.importance.taylor import logits_of

    total, seen = 0.0, 0
    order = np.random.default_rng([options.seed, epoch]).permutation(len(dataset))
    batches = [order[i:i + options.batch_size] for i in range(0, len(order), options.batch_size)]
    tracked = _track(batches, len(batches), f"epoch {epoch + 1}/{options.epochs}", options.progress)
    for step, index in enumerate(tracked, start=1):
        x = dataset.x[index]
        logits = logits_of(student, torch.from_numpy(x))
        if logits.shape[1] != targets.shape[1]:
            raise InputError(f"the student has {logits.shape[1]} outputs, the teacher "
                             f"{targets.shape[1]}; give the original of this model")
        labels = None if dataset.y is None else torch.from_numpy(dataset.y[index])
        loss = distillation_loss(logits, torch.from_numpy(targets[index]), labels,
                                 temperature=options.temperature, alpha=options.alpha)
        # checked before the step: a NaN gradient would spread into every weight
        if not torch.isfinite(loss):
            raise _diverged(f"the loss is {loss.item()} at epoch {epoch + 1}, batch {step}",
                            options)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total, seen = total + loss.item() * len(x), seen + len(x)
    return total / seen


def _nonfinite_parameters(student) -> list[str]:
    """The initializer names of the student's trainable weights that hold NaN or inf."""
    import torch

    return [name for name, attr in student.parameter_names.items()
            if not torch.isfinite(student.get_parameter(attr)).all()]


def _check_trained(student, dataset: ArrayDataset, options: FinetuneOptions, epoch: int) -> None:
    """Raise VerificationFailed unless the weights after ``epoch`` are fit to be saved.

    No loss sees the epoch's last step, and finite weights can still be so large that every
    output overflows: the weights are checked, then the first batch is run through them."""
    import torch

    from mdp_trt.importance.taylor import logits_of

    broken = _nonfinite_parameters(student)
    if broken:
        raise _diverged(f"after epoch {epoch + 1} the weights {', '.join(broken)} hold NaN or "
                        "inf", options)
    with torch.no_grad():
        logits = logits_of(student, torch.from_numpy(dataset.x[:options.batch_size]))
    if not torch.isfinite(logits).all():
        raise _diverged(f"after epoch {epoch + 1} the model's outputs are NaN or inf", options)


def _diverged(what: str, options: FinetuneOptions) -> VerificationFailed:
    kept = (f"; {options.checkpoint} keeps the last good epoch"
            if options.checkpoint is not None and options.checkpoint.exists() else "")
    return VerificationFailed(f"training diverged: {what}; no model was written{kept}. Lower "
                              f"`lr` (it is {options.lr:g})", parameters=("lr",))


def _resume(options: FinetuneOptions, student, optimizer) -> list[float]:
    state = load_checkpoint(options.checkpoint)
    if state.run != options.run_key():
        raise InputError(f"{options.checkpoint} was written by a run with {state.run}, this one "
                         f"has {options.run_key()}; use the same options to resume, or another "
                         "`checkpoint` path to start over", parameters=("checkpoint",))
    try:
        student.load_state_dict(state.parameters)
        optimizer.load_state_dict(state.optimizer)
    except (RuntimeError, ValueError, KeyError) as err:
        raise InputError(f"{options.checkpoint} holds the state of another model ({err}); use "
                         "another `checkpoint` path to start over",
                         parameters=("checkpoint",)) from err
    broken = _nonfinite_parameters(student)
    if broken:  # written before checkpoints were checked, or edited: resuming would train NaN
        raise InputError(f"{options.checkpoint} holds NaN or inf weights ({', '.join(broken)}); "
                         "delete it to start over")
    if state.epoch > options.epochs:
        raise InputError(f"{options.checkpoint} has {state.epoch} finished epochs, more than "
                         f"`epochs` {options.epochs}; ask for at least {state.epoch}",
                         parameters=("epochs",))
    log.info("resumed %s after epoch %d", options.checkpoint, state.epoch)
    return list(state.losses)


def _check_written(path: Path, student, dataset: ArrayDataset) -> None:
    """Run the written file in ORT on the first samples and compare with the trained module."""
    import onnxruntime as ort
    import torch

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        spec = session.get_inputs()[0]
        batch = spec.shape[0] if isinstance(spec.shape[0], int) else 1
        x = np.ascontiguousarray(np.resize(dataset.x[:batch], (batch, *dataset.x.shape[1:])))
        written = session.run(None, {spec.name: x})[0]
    except Exception as err:  # any ORT failure means the file is not a usable model
        _remove(path)
        raise VerificationFailed(f"{path}: the fine-tuned model does not run in ONNX Runtime "
                                 f"({err}); it was removed") from err
    with torch.no_grad():
        expected = student(torch.from_numpy(x))
    expected = (expected[0] if isinstance(expected, tuple) else expected).numpy()
    scale = max(float(np.abs(expected).max()), 1e-6)
    # `<=` is False for NaN, so a NaN anywhere in the written output fails too
    if written.shape != expected.shape or not (np.abs(written - expected) <= 1e-3 * scale).all():
        _remove(path)
        raise VerificationFailed(f"{path}: ONNX Runtime's output differs from the trained "
                                 "module's; the written weights are wrong (a bug); it was removed")


def _remove(path: Path) -> None:
    for written in (path, path.with_name(path.name + ".data")):
        written.unlink(missing_ok=True)
