"""YOLO and timm models as their users export them, through the analysis, surgery and the CLI.

ultralytics and timm are test dependencies (the dev extra); they build models from their YAML
files / ``pretrained=False`` offline.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mdp_trt.graph import load_model
from mdp_trt.models.third_party import ThirdPartyModel, export_third_party
from mdp_trt.passes import analyze, apply_plan, mask_model, verify
from tests import onnx_graphs as G

# Imported by the fixture, not at collection: ultralytics patches PIL.Image.open for the whole
# process, and only these tests should run under it.
os.environ.setdefault("YOLO_AUTOINSTALL", "false")  # never pip-install during the tests

SIDE = 160  # the smallest YOLO input whose strides 8/16/32 give whole feature maps of size >= 5


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """yolov8n by ultralytics' exporter and by TorchScript, yolov8n-cls, timm ghostnet_100."""
    pytest.importorskip("ultralytics", reason="ultralytics is a dev dependency: pip install -e '.[dev]'")
    pytest.importorskip("timm", reason="timm is a dev dependency: pip install -e '.[dev]'")
    root = tmp_path_factory.mktemp("third-party")
    specs = {
        "native": ThirdPartyModel("ultralytics", "yolov8n.yaml", SIDE),
        "torchscript": ThirdPartyModel("ultralytics", "yolov8n.yaml", SIDE, "torchscript"),
        "cls": ThirdPartyModel("ultralytics", "yolov8n-cls.yaml", 64),
        "ghostnet": ThirdPartyModel("timm", "ghostnet_100", 64),
    }
    return {key: (spec, export_third_party(spec, root / f"{spec.label}.onnx")) for key, spec in specs.items()}


def _analysis(spec, path):
    model = load_model(path, (1, 3, spec.resolution, spec.resolution))
    return model, analyze(model, str(path))


def test_yolo_detect_head_stays_whole_and_everything_before_it_is_prunable(exports):
    model, analysis = _analysis(*exports["native"])
    whole = {g.name: g.reason for g in analysis.groups if not g.prunable}
    # Box (64 = 4 x 16 DFL bins) and class (80) convs of the three scales: one group each, as the
    # scales are joined over positions; and the DFL's fixed 16->1 conv.
    assert set(whole) == {"model.22.cv2.0.2", "model.22.cv3.0.2", "model.22.dfl.conv"}
    assert "splits the channel axis into 4 x 16" in whole["model.22.cv2.0.2"]
    assert whole["model.22.cv3.0.2"] == "reaches graph output 'output0'"
    box = next(g for g in analysis.groups if g.name == "model.22.cv2.0.2")
    assert len(box.producers) == 3
    share = sum(g.channels for g in analysis.groups if g.prunable) / sum(g.channels for g in analysis.groups)
    assert share >= 0.75
    assert not any("unsupported op" in note for note in analysis.notes)
    assert [b.name for b in analysis.blocks][:2] == ["model.2.m.0", "model.4.m.0"]


def test_yolo_random_plans_verify_and_outputs_keep_their_shapes(exports):
    model, analysis = _analysis(*exports["native"])
    for seed in range(2):
        # At least half of each group: a plan keeping one channel of the stem leaves outputs
        # that hardly depend on the input (a weak check, which verify would flag).
        keep, removed = G.random_plan(analysis, seed, least=0.5)
        check = verify(mask_model(model, analysis, keep, removed), apply_plan(model, analysis, keep, removed))
        # look_trained makes the outputs depend on the input (by far more than the tolerance),
        # so this check has teeth.
        assert check.passed and not check.weak


def test_torchscript_names_match_the_native_export_and_are_unique(exports):
    _, native = _analysis(*exports["native"])
    _, traced = _analysis(*exports["torchscript"])
    names = [g.name for g in traced.groups]
    assert len(set(names)) == len(names)
    assert "model.2.m.0.cv1.conv" in names and "model.2.cv1.conv" in names
    assert [b.name for b in traced.blocks] == [b.name for b in native.blocks]


def test_classifier_softmax_is_named_as_the_reason(exports):
    _, analysis = _analysis(*exports["cls"])
    (whole,) = [g for g in analysis.groups if not g.prunable]
    assert whole.name == "model.9.linear"
    assert whole.reason == "Softmax (node '/model.9/Softmax') normalises over the channel axis"


def test_ghost_modules_make_periodic_groups_that_are_cut_and_verified(exports):
    model, analysis = _analysis(*exports["ghostnet"])
    # Each Ghost stream (a conv and its depthwise copy added to one residual stream) is one
    # periodic group: only the classifier, the graph output, stays whole.
    assert [g.name for g in analysis.groups if not g.prunable] == ["classifier"]
    assert sum(g.periodic for g in analysis.groups) >= 8
    keep, removed = G.random_plan(analysis, 0, least=0.5)
    check = verify(mask_model(model, analysis, keep, removed), apply_plan(model, analysis, keep, removed))
    assert check.passed and not check.weak


@pytest.mark.slow
def test_a_pruned_yolo_file_runs_in_ultralytics_own_inference(exports, tmp_path):
    spec, path = exports["native"]
    out = tmp_path / "pruned"
    done = subprocess.run(
        [sys.executable, "-m", "mdp_trt", "prune", str(path), "-o", str(out), "--budget", "0.8",
         "--group-size", "32", "--allow-over"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["verification"]["max_rel_diff"] <= 1e-4
    assert report["measured_latency_ms"] < report["baseline_latency_ms"]

    import ultralytics
    from ultralytics import YOLO

    image = str(Path(ultralytics.__file__).parent / "assets" / "bus.jpg")
    results = [YOLO(str(p)).predict(image, imgsz=SIDE, verbose=False)[0] for p in (path, out / "pruned.onnx")]
    assert [r.boxes.data.shape[1] for r in results] == [6, 6]
    assert results[1].names == results[0].names  # the exporter's metadata survived the cut
    assert np.array_equal(results[0].orig_img, results[1].orig_img)
