"""The Torch-Pruning baseline: what it prunes, where it stops shrinking, the latency bisection
(with a deterministic stand-in for the timing: the exported model's parameter count)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch", reason="Torch-Pruning prunes PyTorch modules (pip install torch)")
pytest.importorskip("torch_pruning", reason="the baseline needs torch-pruning (pip install torch-pruning)")

from mdp_trt.bench.torch_pruning import deepest_ratio, match_budget, torch_pruned  # noqa: E402
from mdp_trt.errors import InfeasibleBudget, InputError  # noqa: E402
from mdp_trt.bench.digit_resnet import DigitResNet  # noqa: E402

SHAPE = (1, 1, 8, 8)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return DigitResNet((16, 32), blocks=2).eval()


def _size(module) -> int:
    return sum(p.numel() for p in module.parameters())


def _onnx_size(path: Path) -> float:
    """Parameters of an exported model, in thousands: the stand-in for its latency."""
    graph = onnx.load(str(path)).graph
    return sum(int(np.prod(t.dims)) for t in graph.initializer) / 1000


def test_pruning_keeps_the_classes_rounds_widths_and_runs(model):
    pruned = torch_pruned(model, SHAPE, 0.5, round_to=4)
    assert _size(pruned) < _size(model)
    assert pruned.head[-1].out_features == 10
    widths = [m.out_channels for m in pruned.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(w % 4 == 0 for w in widths) and max(widths) < 32
    assert pruned(torch.zeros(*SHAPE)).shape == (1, 10)
    assert _size(torch_pruned(model, SHAPE, 0.0, round_to=4)) == _size(model)
    assert _size(model) == _size(DigitResNet((16, 32), blocks=2))  # the original is untouched


def test_the_ratio_range_ends_at_the_smallest_model(model):
    import torch_pruning as tp

    deepest = deepest_ratio(model, SHAPE, 4, step=0.1)
    macs = {r / 10: tp.utils.count_ops_and_params(torch_pruned(model, SHAPE, r / 10, 4),
                                                  torch.zeros(*SHAPE))[0] for r in range(1, 10)}
    assert macs[deepest] == min(macs.values()) and macs[deepest] < macs[0.1]


def test_the_bisection_lands_within_tolerance_and_keeps_one_model(model, tmp_path):
    full = _size(model) / 1000
    match, path = match_budget(model, SHAPE, 0.5 * full, 4, _onnx_size, tmp_path / "tp",
                               tolerance=0.05)
    assert abs(_onnx_size(path) / (0.5 * full) - 1) <= 0.05 and match.matched(0.05)
    assert [p.name for p in (tmp_path / "tp").iterdir()] == [path.name]
    assert match.steps[-1] == (match.ratio, match.measured)


def test_a_budget_below_the_most_pruned_model_is_infeasible(model, tmp_path):
    with pytest.raises(InfeasibleBudget, match="smallest model"):
        match_budget(model, SHAPE, 0.001, 4, _onnx_size, tmp_path / "tp")
    assert not list((tmp_path / "tp").iterdir())


def test_a_ratio_outside_zero_to_one_is_refused(model):
    with pytest.raises(InputError, match="pruning ratio"):
        torch_pruned(model, SHAPE, 1.0, round_to=4)
