"""Distillation brings a pruned student back towards its teacher; checkpoints resume exactly."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from mdp_trt.data import ArrayDataset
from mdp_trt.errors import InputError, VerificationFailed
from mdp_trt.finetune import FinetuneOptions, FinetuneResult, finetune
from mdp_trt.finetune.checkpoint import load_checkpoint, save_checkpoint
from mdp_trt.graph import save_model
from mdp_trt.passes import analyze, apply_plan
from tests import onnx_graphs as G


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Teacher: conv_bn_relu_chain (BN kept); student: it with a third of each group's channels.

    Labels are the teacher's own predictions, so the teacher is right on every sample and the
    student's gap to it is what pruning cost."""
    folder = tmp_path_factory.mktemp("distill")
    teacher, teacher_path = G.load(G.conv_bn_relu_chain(), folder, "teacher.onnx")
    analysis = analyze(teacher, str(teacher_path))
    keep = {g.id: list(range(0, g.channels, 3)) for g in analysis.groups if g.prunable}
    student_path = save_model(apply_plan(teacher, analysis, keep, set()), folder / "student.onnx")
    rng = np.random.default_rng(0)
    # a per-image colour on top of the noise: the global pool keeps it, so the random-weight
    # teacher's predictions depend on the input (on plain noise it predicts one class)
    x = (3 * rng.standard_normal((480, 3, 1, 1)) + rng.standard_normal((480, 3, 8, 8)))
    x = x.astype(np.float32)
    labels = _predict(teacher_path, x).argmax(1)
    data = ArrayDataset(x, labels.astype(np.int64))
    train, held_out = data.split(0.75, seed=0)
    return folder, teacher_path, student_path, train, held_out


def _predict(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: row[None]})[0] for row in x])


def _kl(teacher, student, t=4.0):
    def log_softmax(z):
        z = z / t - (z / t).max(1, keepdims=True)
        return z - np.log(np.exp(z).sum(1, keepdims=True))
    p = log_softmax(teacher)
    return float((np.exp(p) * (p - log_softmax(student))).sum(1).mean())


def _initializers(path):
    return {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


def test_finetuning_moves_the_student_towards_the_teacher(setup, tmp_path):
    folder, teacher_path, student_path, train, held_out = setup
    teacher = _predict(teacher_path, held_out.x)
    before = _predict(student_path, held_out.x)
    out = tmp_path / "tuned.onnx"
    result = finetune(student_path, teacher_path, train, out,
                      FinetuneOptions(epochs=6, batch_size=32, lr=1e-2, progress=False))
    onnx.checker.check_model(str(out))
    after = _predict(out, held_out.x)

    agreement = lambda z: float(np.mean(z.argmax(1) == teacher.argmax(1)))  # noqa: E731
    assert agreement(before) < 0.9  # pruning hurt: there is something to recover
    assert agreement(after) > agreement(before) + 0.05
    assert _kl(teacher, after) < 0.7 * _kl(teacher, before)
    assert result.epochs == 6 and len(result.losses) == 6 and result.losses[-1] < result.losses[0]
    assert FinetuneResult.from_json(result.to_json()) == result
    # the graph is the student's: same nodes, only weights changed
    assert [n.op_type for n in onnx.load(str(out)).graph.node] == \
        [n.op_type for n in onnx.load(str(student_path)).graph.node]


def test_resuming_from_a_checkpoint_ends_with_the_uninterrupted_weights(setup, tmp_path):
    folder, teacher_path, student_path, train, _ = setup
    options = FinetuneOptions(epochs=3, batch_size=64, lr=5e-3, progress=False, seed=7)
    straight = finetune(student_path, teacher_path, train, tmp_path / "straight.onnx", options)

    checkpoint = tmp_path / "ckpt" / "run.pt"
    first = replace(options, epochs=1, checkpoint=checkpoint)
    finetune(student_path, teacher_path, train, tmp_path / "part.onnx", first)
    assert load_checkpoint(checkpoint).epoch == 1
    resumed = finetune(student_path, teacher_path, train, tmp_path / "resumed.onnx",
                       replace(first, epochs=3))
    assert resumed.resumed_from == 1 and resumed.epochs == 2
    np.testing.assert_allclose(resumed.losses, straight.losses, rtol=1e-6)
    expected, got = _initializers(tmp_path / "straight.onnx"), _initializers(tmp_path / "resumed.onnx")
    assert expected.keys() == got.keys()
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-6, atol=1e-7, err_msg=name)
    # the interrupted run's weights differ: the resume did train the remaining epochs
    part = _initializers(tmp_path / "part.onnx")
    assert any(not np.allclose(part[n], expected[n]) for n in expected)


def test_a_checkpoint_of_another_run_is_refused(setup, tmp_path):
    folder, teacher_path, student_path, train, _ = setup
    checkpoint = tmp_path / "run.pt"
    finetune(student_path, teacher_path, train, tmp_path / "a.onnx",
             FinetuneOptions(checkpoint=checkpoint, progress=False))
    with pytest.raises(InputError, match="use the same options to resume"):
        finetune(student_path, teacher_path, train, tmp_path / "b.onnx",
                 FinetuneOptions(checkpoint=checkpoint, lr=0.5, progress=False))
    checkpoint.write_bytes(b"garbage")
    with pytest.raises(InputError, match="not a readable fine-tuning checkpoint"):
        finetune(student_path, teacher_path, train, tmp_path / "b.onnx",
                 FinetuneOptions(checkpoint=checkpoint, progress=False))


def test_unlabelled_data_distils_without_labels(setup, tmp_path):
    folder, teacher_path, student_path, train, _ = setup
    result = finetune(student_path, teacher_path, ArrayDataset(train.x[:64]), tmp_path / "u.onnx",
                      FinetuneOptions(epochs=2, batch_size=16, progress=False))
    assert len(result.losses) == 2 and all(np.isfinite(result.losses))


def test_bad_inputs_are_refused(setup, tmp_path):
    folder, teacher_path, student_path, train, _ = setup
    wrong = ArrayDataset(np.zeros((4, 3, 6, 6), np.float32))
    with pytest.raises(InputError, match=r"student takes samples of 3x8x8, the data holds 3x6x6"):
        finetune(student_path, teacher_path, wrong, tmp_path / "o.onnx")
    with pytest.raises(InputError, match=r"class indices in 0..4 .* holds 0..9"):
        finetune(student_path, teacher_path, ArrayDataset(train.x[:10], np.arange(10)),
                 tmp_path / "o.onnx", FinetuneOptions(progress=False))
    with pytest.raises(InputError, match="`epochs` 0 must be >= 1"):
        finetune(student_path, teacher_path, train, tmp_path / "o.onnx", FinetuneOptions(epochs=0))
    assert not (tmp_path / "o.onnx").exists()


@pytest.mark.parametrize("options", [
    {"epochs": 0}, {"epochs": -2}, {"batch_size": 0}, {"lr": 0.0}, {"lr": -1e-3},
    {"lr": float("nan")}, {"lr": float("inf")}, {"lr": 1e39}, {"temperature": 0.0},
    {"temperature": float("inf")}, {"alpha": 1.5}, {"alpha": float("nan")},
])
def test_bad_options_are_refused_when_built_naming_the_field(options):
    (field, value), = options.items()
    # the fields a flag sets are named as parameters (`lr`), the others plainly
    name = f"`{field}`" if field in ("epochs", "batch_size", "lr") else field
    message = re.escape(f"{name} {value} must be")
    with pytest.raises(InputError, match=f"^{message}"):
        FinetuneOptions(**options)
    with pytest.raises(InputError, match=f"^{message}"):
        replace(FinetuneOptions(), **options)


@pytest.mark.parametrize("lr,batch_size,reason", [
    (1e30, 16, r"the loss is nan at epoch 1, batch 2"),  # the first step's weights overflow
    (1e30, 64, r"after epoch 1 the model's outputs are NaN or inf"),  # one step: no loss sees it
])
def test_a_diverging_run_fails_and_writes_nothing(setup, tmp_path, lr, batch_size, reason):
    folder, teacher_path, student_path, train, _ = setup
    out, checkpoint = tmp_path / "o.onnx", tmp_path / "run.pt"
    message = rf"^training diverged: {reason}; no model was written. Lower `lr` "
    with pytest.raises(VerificationFailed, match=message + re.escape(f"(it is {lr:g})")):
        finetune(student_path, teacher_path, ArrayDataset(train.x[:64], train.y[:64]), out,
                 FinetuneOptions(lr=lr, batch_size=batch_size, checkpoint=checkpoint,
                                 progress=False))
    assert list(tmp_path.iterdir()) == []  # no model, no external data, no checkpoint


def test_a_step_that_leaves_nan_weights_fails_the_epoch(setup, tmp_path, monkeypatch):
    """Whatever the cause (here a patched step), NaN weights are never saved."""
    import torch

    folder, teacher_path, student_path, train, _ = setup
    step = torch.optim.Adam.step

    def nan_step(self, *args, **kwargs):
        result = step(self, *args, **kwargs)
        with torch.no_grad():
            self.param_groups[0]["params"][0][0] = float("nan")
        return result

    monkeypatch.setattr(torch.optim.Adam, "step", nan_step)
    with pytest.raises(VerificationFailed, match=r"^training diverged: after epoch 1 the weights "
                                                 r"conv1.weight hold NaN or inf; no model"):
        finetune(student_path, teacher_path, ArrayDataset(train.x[:8], train.y[:8]),
                 tmp_path / "o.onnx", FinetuneOptions(checkpoint=tmp_path / "run.pt",
                                                      progress=False))
    assert list(tmp_path.iterdir()) == []


def _with_weights(source, path, change):
    """A copy of the model at ``source`` whose float initializers went through ``change``."""
    model = onnx.load(str(source))
    for tensor in model.graph.initializer:
        array = onnx.numpy_helper.to_array(tensor)
        if array.dtype == np.float32:
            tensor.CopyFrom(onnx.numpy_helper.from_array(change(tensor.name, array), tensor.name))
    onnx.save(model, str(path))
    return path


def test_models_with_nan_weights_or_overflowing_outputs_are_refused(setup, tmp_path):
    folder, teacher_path, student_path, train, _ = setup
    data, out = ArrayDataset(train.x[:8], train.y[:8]), tmp_path / "o.onnx"
    nan = _with_weights(student_path, tmp_path / "nan.onnx",
                        lambda name, a: np.where(a > 0, np.nan, a) if name == "conv2.weight" else a)
    with pytest.raises(InputError, match=r"nan.onnx: 1 weight initializer\(s\) hold NaN or inf "
                                         r"values: 'conv2.weight' \(\d+ of \d+\)"):
        finetune(nan, teacher_path, data, out, FinetuneOptions(progress=False))
    # finite weights, yet 1e20 per conv overflows float32 by the second one
    huge = _with_weights(teacher_path, tmp_path / "huge.onnx",
                         lambda name, a: a * 1e20 if name.startswith("conv") else a)
    with pytest.raises(InputError, match=r"huge.onnx: the teacher's outputs are NaN or inf on 8 "
                                         r"of 8 samples \(first: sample 0\)"):
        finetune(student_path, huge, data, out, FinetuneOptions(progress=False))
    assert not out.exists()


def test_a_checkpoint_with_nan_weights_is_not_resumed(setup, tmp_path):
    folder, teacher_path, student_path, train, _ = setup
    data, checkpoint = ArrayDataset(train.x[:16], train.y[:16]), tmp_path / "run.pt"
    options = FinetuneOptions(batch_size=16, checkpoint=checkpoint, progress=False)
    finetune(student_path, teacher_path, data, tmp_path / "a.onnx", options)
    state = load_checkpoint(checkpoint)
    name = next(iter(state.parameters))
    state.parameters[name].fill_(float("nan"))
    save_checkpoint(state, checkpoint)
    with pytest.raises(InputError, match=r"run.pt holds NaN or inf weights \(conv1.weight\); "
                                         "delete it to start over"):
        finetune(student_path, teacher_path, data, tmp_path / "b.onnx", replace(options, epochs=2))
    assert not (tmp_path / "b.onnx").exists()
