"""Fine-tuning checkpoints: the run's state after each finished epoch, written atomically.

A checkpoint holds the student's parameters, the optimizer state, the number of finished epochs,
the per-epoch losses and the options that define the run. The batch order of an epoch is drawn
from (seed, epoch) and the graph has no random op, so this is all the state a resumed run needs
to end with exactly the weights of an uninterrupted one.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mdp_trt.errors import InputError

__all__ = ["Checkpoint", "save_checkpoint", "load_checkpoint"]

FORMAT = "mdp-finetune-checkpoint/1"


@dataclass(frozen=True)
class Checkpoint:
    epoch: int  # epochs finished
    losses: list[float]  # mean training loss of each finished epoch
    run: dict[str, Any]  # the options that must match for a resume (lr, seed, batch size, ...)
    parameters: dict[str, Any]  # the student's state_dict
    optimizer: dict[str, Any]  # the optimizer's state_dict


def save_checkpoint(checkpoint: Checkpoint, path: Path) -> None:
    """Write ``checkpoint`` to ``path`` via a temporary file and a rename: a crash mid-write
    leaves the previous checkpoint intact."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
    try:
        with os.fdopen(fd, "wb") as stream:
            torch.save({"format": FORMAT, **vars(checkpoint)}, stream)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path) -> Checkpoint:
    import torch

    try:
        # weights_only: a checkpoint is tensors, numbers and strings; nothing is unpickled
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors of every kind mean "not our checkpoint"
        raise InputError(f"{path} is not a readable fine-tuning checkpoint ({err}); delete it to "
                         "start over") from err
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(f"{path} is not a {FORMAT} checkpoint; delete it or choose another "
                         "`checkpoint` path", parameters=("checkpoint",))
    return Checkpoint(**{k: v for k, v in data.items() if k != "format"})
