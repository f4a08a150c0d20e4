import collections

import onnx
import pytest

from mdp_trt.errors import InputError
from mdp_trt.models.export import ExportOptions, export_architecture

SMALL = (1, 3, 32, 32)


def _ops(path):
    return collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_export_folds_batchnorm_by_default(tmp_path, exporter):
    path = export_architecture("resnet18", tmp_path / "r18.onnx",
                               ExportOptions(input_shape=SMALL, exporter=exporter))
    onnx.checker.check_model(str(path))
    ops = _ops(path)
    assert ops["Conv"] == 20 and ops["Add"] == 8 and "BatchNormalization" not in ops
    # only the model (and its external data) appear: nothing staged is left behind
    assert {p.name for p in tmp_path.iterdir()} <= {"r18.onnx", "r18.onnx.data"}


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_export_keeps_batchnorm_on_request(tmp_path, exporter):
    path = export_architecture("resnet18", tmp_path / "r18.onnx",
                               ExportOptions(input_shape=SMALL, exporter=exporter, fold_bn=False))
    ops = _ops(path)
    assert ops["BatchNormalization"] == 20 and ops["Conv"] == 20
    # the dynamo graph must not keep the unoptimised Shape/Expand plumbing
    assert "Expand" not in ops and "CastLike" not in ops


def test_export_is_deterministic_for_a_seed(tmp_path):
    a = export_architecture("resnet18", tmp_path / "a.onnx", ExportOptions(input_shape=SMALL, exporter="torchscript"))
    b = export_architecture("resnet18", tmp_path / "b.onnx", ExportOptions(input_shape=SMALL, exporter="torchscript"))
    c = export_architecture("resnet18", tmp_path / "c.onnx",
                            ExportOptions(input_shape=SMALL, exporter="torchscript", seed=1))
    weights = lambda p: [i.raw_data for i in onnx.load(str(p)).graph.initializer]  # noqa: E731
    assert weights(a) == weights(b)
    assert weights(a) != weights(c)


def test_unknown_architecture_names_the_choices(tmp_path):
    with pytest.raises(InputError, match="unknown architecture 'resnet19'.*resnet18"):
        export_architecture("resnet19", tmp_path / "x.onnx")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("shape", [(1, 3), (1, 1, 32, 32)])
def test_a_shape_that_is_not_an_rgb_image_is_refused(tmp_path, shape):
    with pytest.raises(InputError, match="Nx3xHxW"):
        export_architecture("resnet18", tmp_path / "x.onnx", ExportOptions(input_shape=shape))
    assert not list(tmp_path.iterdir())


def test_an_export_the_architecture_cannot_do_is_a_clear_input_error(tmp_path):
    with pytest.raises(InputError, match="exporting alexnet at 1x3x8x8 failed.*too small"):
        export_architecture("alexnet", tmp_path / "a.onnx",
                            ExportOptions(input_shape=(1, 3, 8, 8), exporter="torchscript"))
    assert not list(tmp_path.iterdir())


def test_a_torchscript_failure_is_named_by_its_first_line(tmp_path):
    # TorchScript appends the whole graph to its message; the cause is on the first line.
    with pytest.raises(InputError, match="exporting alexnet at 1x3x64x64 failed: .*adaptive_avg_pool2d"):
        export_architecture("alexnet", tmp_path / "a.onnx",
                            ExportOptions(input_shape=(1, 3, 64, 64), exporter="torchscript"))


def test_convnext_layer_scales_are_drawn_like_trained_ones(tmp_path):
    # At their 1e-6 initialisation the blocks would not show in the output at all.
    import numpy as np
    from onnx import numpy_helper

    path = export_architecture("convnext_tiny", tmp_path / "c.onnx",
                               ExportOptions(input_shape=SMALL, exporter="torchscript"))
    scales = [numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer if "layer_scale" in t.name]
    assert len(scales) == 18
    assert all(s.min() >= 0.5 and s.max() <= 1.5 for s in scales)


def test_no_layer_is_left_at_an_all_zero_initialisation():
    # torchvision zero-initialises ViT's classifier: its logits would all be 0, so comparing a
    # pruned ViT with the original would pass whatever the surgery did.
    from mdp_trt.models.export import _build

    model = _build("vit_b_32", ExportOptions(input_shape=(1, 3, 224, 224)))
    assert model.heads.head.weight.abs().min() > 0 and model.class_token.abs().max() > 0


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_a_detectors_backbone_and_fpn_export_with_its_feature_maps_kept_whole(tmp_path, exporter):
    from mdp_trt.graph import load_model
    from mdp_trt.passes import analyze, apply_plan, mask_model, verify
    from tests import onnx_graphs as G

    path = export_architecture("retinanet_resnet50_fpn", tmp_path / "fpn.onnx",
                               ExportOptions(input_shape=(1, 3, 64, 64), exporter=exporter))
    model = load_model(path)
    assert [v.name for v in model.graph.outputs] == [
        "features_0", "features_1", "features_2", "features_p6", "features_p7"]
    analysis = analyze(model, str(path))
    whole = {g.name: g.reason for g in analysis.groups if not g.prunable}
    # The FPN's output convs (and the extra P6/P7 levels) are the outputs; all else is prunable.
    assert set(whole) == {"backbone.fpn.layer_blocks.0.0", "backbone.fpn.layer_blocks.1.0",
                          "backbone.fpn.layer_blocks.2.0", "backbone.fpn.extra_blocks.p6",
                          "backbone.fpn.extra_blocks.p7"}
    assert all(reason.startswith("reaches graph output 'features_") for reason in whole.values())
    assert any(g.prunable and g.name.startswith("backbone.fpn.inner_blocks") for g in analysis.groups)
    keep, removed = G.random_plan(analysis, 0, least=0.5)
    check = verify(mask_model(model, analysis, keep, removed), apply_plan(model, analysis, keep, removed))
    assert check.passed and not check.weak


def test_unknown_architectures_list_the_detection_backbones_too(tmp_path):
    with pytest.raises(InputError, match="retinanet_resnet50_fpn"):
        export_architecture("yolo", tmp_path / "x.onnx")
