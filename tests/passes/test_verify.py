import numpy as np
import pytest

from mdp_trt.errors import VerificationFailed
from mdp_trt.graph.constants import constant_array
from mdp_trt.passes import analyze, apply_plan, mask_model
from mdp_trt.passes.plan_edits import set_constant
from mdp_trt.passes.verify import Verification, verify
from tests import onnx_graphs as G


def _perturbed(model, scale: float):
    copy = model.clone()
    node = next(n for n in copy.graph if n.name == "fc")
    set_constant(copy.graph, node, 2, constant_array(node.inputs[2]) + scale)
    return copy


def test_identical_models_pass_with_zero_difference(tmp_path):
    model, _ = G.load(G.conv_bn_relu_chain(), tmp_path)
    result = verify(model, model.clone(), inputs=2)
    assert result == Verification(max_abs_diff=0.0, max_rel_diff=0.0, inputs=2, passed=True,
                                  input_sensitivity=result.input_sensitivity)
    assert result.input_sensitivity > 1e-2
    assert Verification.from_json(result.to_json()) == result


def test_a_different_model_fails_with_the_figures(tmp_path):
    model, _ = G.load(G.conv_bn_relu_chain(), tmp_path)
    with pytest.raises(VerificationFailed, match=r"max relative difference [0-9.e-]+ > 0.0001 \(max absolute 0.01"):
        verify(model, _perturbed(model, 0.01))


def test_rtol_decides(tmp_path):
    model, _ = G.load(G.conv_bn_relu_chain(), tmp_path)
    result = verify(model, _perturbed(model, 1e-3), rtol=1.0)
    assert result.passed and 0 < result.max_rel_diff <= 1.0
    assert result.max_abs_diff == pytest.approx(1e-3, rel=1e-3)


def test_pruned_without_masking_is_caught(tmp_path):
    # The pruned model is NOT the original: verify must notice when the reference is wrong.
    model, path = G.load(G.conv_bn_relu_chain(), tmp_path)
    analysis = analyze(model, str(path))
    pruned = apply_plan(model, analysis, {0: [0, 1, 2]})
    with pytest.raises(VerificationFailed):
        verify(model, pruned)
    verify(mask_model(model, analysis, {0: [0, 1, 2]}), pruned)


def test_seeded_inputs_are_reproducible(tmp_path):
    model, _ = G.load(G.conv_bn_relu_chain(), tmp_path)
    other = _perturbed(model, 1e-3)
    a = verify(model, other, seed=7, rtol=1.0)
    b = verify(model, other, seed=7, rtol=1.0)
    assert a == b
    assert np.isfinite(a.max_rel_diff)


def test_models_over_the_protobuf_limit_run_from_a_file(tmp_path, monkeypatch):
    # Models above 2 GiB cannot be handed to ORT as bytes; the file route must agree exactly.
    import importlib

    verify_module = importlib.import_module("mdp_trt.passes.verify")  # the package re-exports verify()
    model, _ = G.load(G.conv_bn_relu_chain(), tmp_path)
    other = _perturbed(model, 1e-3)
    in_memory = verify(model, other, rtol=1.0)
    monkeypatch.setattr(verify_module, "IN_MEMORY_LIMIT_BYTES", 0)
    assert verify(model, other, rtol=1.0) == in_memory


def test_outputs_that_ignore_the_input_make_a_weak_check_and_say_so(tmp_path):
    # A bias-only conv: the output is the same constant for every input, so any cut passes.
    b = G.GraphBuilder((1, 3, 8, 8))
    x = b.node("Mul", [b.conv("image", 3, 4, "conv"), b.const("zero", np.zeros(1, np.float32))], "mute")
    x = b.node("Add", [x, b.const("level", np.ones(1, np.float32))], "level")
    b.output(x, [1, 4, 8, 8])
    model, _ = G.load(b.model(), tmp_path)
    weak = verify(model, model, inputs=3)
    assert weak.passed and weak.input_sensitivity == 0.0 and weak.weak
    assert "verification is weak" in weak.note
    model, _ = G.load(G.conv_bn_relu_chain(), tmp_path)
    strong = verify(model, model, inputs=3)
    assert strong.input_sensitivity > 1e-2 and not strong.weak and strong.note is None
