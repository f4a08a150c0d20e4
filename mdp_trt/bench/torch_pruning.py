"""Torch-Pruning as a practitioner runs it: the study's baseline from outside mdp-trt.

DepGraph (``torch-pruning`` on PyPI) prunes the PyTorch module, not the ONNX graph: group-norm
importance (``GroupMagnitudeImportance``, p=2: the L2 norm over every parameter a channel group
touches), global pruning (one threshold across layers), ``round_to`` the study's group size, the
classifier's output kept. It has no latency model, so its one knob, the pruning ratio, is
bisected until the exported model's *measured* latency lands within ``tolerance`` of the budget.
The pruned module is exported like the original (``export_classifier``) and then treated
exactly like every other method's model (re-timing, fine-tuning, accuracy).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mdp_trt.errors import InfeasibleBudget, InputError
from mdp_trt.extras import MissingExtra, installed, require

__all__ = ["TorchPruningMatch", "deepest_ratio", "match_budget", "torch_pruned"]


@dataclass(frozen=True)
class TorchPruningMatch:
    ratio: float  # the pruning ratio whose model was kept
    measured: float  # its latency, in ``measure``'s unit (ms, or x the original)
    budget: float  # in the same unit
    steps: tuple[tuple[float, float], ...]  # (ratio, measured) of every bisection step

    def matched(self, tolerance: float = 0.03) -> bool:
        return abs(self.measured / self.budget - 1) <= tolerance

    def to_json(self) -> dict:
        return {"ratio": self.ratio, "measured": self.measured, "budget": self.budget,
                "steps": [list(s) for s in self.steps]}


def torch_pruned(module, input_shape: tuple[int, ...], ratio: float, round_to: int):
    """A pruned copy of ``module`` (its last Linear, the classifier, keeps its outputs)."""
    require("torch", "the Torch-Pruning baseline")
    if not installed("torch_pruning"):
        raise MissingExtra("the Torch-Pruning baseline needs torch-pruning, which this install "
                           "does not have: pip install 'mdp-trt[bench]' (or pip install "
                           "torch-pruning)", extra="bench")
    import torch
    import torch_pruning as tp

    if not 0 <= ratio < 1:
        raise InputError(f"a pruning ratio is a fraction of the channels in [0, 1), got {ratio}")
    model = copy.deepcopy(module).eval()
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    pruner = tp.pruner.MagnitudePruner(
        model, torch.zeros(*input_shape), importance=tp.importance.GroupMagnitudeImportance(p=2),
        global_pruning=True, pruning_ratio=ratio, round_to=round_to, ignored_layers=linears[-1:])
    pruner.step()
    return model.eval()


def deepest_ratio(module, input_shape: tuple[int, ...], round_to: int, *, step: float = 0.025,
                  top: float = 0.95) -> float:
    """The ratio, on a grid of ``step``, whose model has the fewest multiply-accumulates.

    Torch-Pruning's models do not keep shrinking as the ratio grows: where global pruning would
    empty a whole group it leaves the group unpruned (the ResNets here: a 0.9 ratio keeps more
    than 0.7), so the bisection searches up to this ratio only. MACs, not parameters, because
    the early full-resolution layers hold few parameters but most of the time."""
    require("torch", "the Torch-Pruning baseline")
    import torch
    import torch_pruning as tp

    example = torch.zeros(*input_shape)
    grid = [round(k * step, 6) for k in range(1, int(round(top / step)) + 1)]
    macs = [tp.utils.count_ops_and_params(torch_pruned(module, input_shape, r, round_to), example)[0]
            for r in grid]
    return grid[min(range(len(grid)), key=lambda k: (macs[k], grid[k]))]


def match_budget(module, input_shape: tuple[int, ...], budget: float, round_to: int,
                 measure: Callable[[Path], float], workdir: Path, *, tolerance: float = 0.03,
                 max_steps: int = 12, export=None, unit: str = "ms"
                 ) -> tuple[TorchPruningMatch, Path]:
    """Bisect the pruning ratio until ``measure(exported model)`` is within ``tolerance`` of
    ``budget`` (both in ``unit``: milliseconds, or a ratio to the original timed beside it);
    returns the match and the kept model's ONNX path (in ``workdir``).

    The ratio ranges up to ``deepest_ratio``; latency falls as it grows (up to noise, ``round_to``
    steps and a group left whole here and there), so the search keeps [fast enough, too slow]
    brackets; without a match after ``max_steps`` it keeps the step closest to the budget among
    those at or under ``1 + tolerance`` times it. Raises InfeasibleBudget when the deepest
    ratio's model is too slow."""
    from mdp_trt.bench.digit_resnet import export_classifier

    export = export or export_classifier
    workdir.mkdir(parents=True, exist_ok=True)
    top = deepest_ratio(module, input_shape, round_to)
    low, high, steps, paths = 0.0, top, [], {}
    for step in range(max_steps):
        ratio = round((low + high) / 2, 6) if step else top
        path = export(torch_pruned(module, input_shape, ratio, round_to), input_shape,
                      workdir / f"ratio-{ratio:.6f}.onnx")
        measured = measure(path)
        steps.append((ratio, measured))
        paths[ratio] = path
        if abs(measured / budget - 1) <= tolerance:
            break
        if step == 0 and measured > budget:
            path.unlink(missing_ok=True)
            raise InfeasibleBudget(
                f"Torch-Pruning's smallest model (ratio {top}, the fewest multiply-accumulates) "
                f"runs {measured:.3f} {unit}, over the budget of {budget:.3f} {unit}",
                min_latency=measured, unit=unit)
        low, high = (ratio, high) if measured > budget else (low, ratio)
    ratio, measured = _closest(steps, budget, tolerance)
    for other, path in paths.items():
        if other != ratio:
            path.unlink(missing_ok=True)
    return TorchPruningMatch(ratio, measured, budget, tuple(steps)), paths[ratio]


def _closest(steps: list[tuple[float, float]], budget: float, tolerance: float
             ) -> tuple[float, float]:
    allowed = [s for s in steps if s[1] <= budget * (1 + tolerance)]
    if not allowed:
        return min(steps, key=lambda s: s[1])
    return min(allowed, key=lambda s: abs(s[1] - budget))
