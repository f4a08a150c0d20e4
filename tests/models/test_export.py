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
