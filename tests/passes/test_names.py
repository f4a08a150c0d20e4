"""Layer, group and block names as each exporter leaves them."""

import numpy as np
import onnx_ir as ir
import pytest

from mdp_trt.passes.names import block_name, module_path, unique_names


def _conv(name: str, weight: str = "onnx::Conv_12", scopes: str | None = None) -> ir.Node:
    x = ir.Value(name="x")
    w = ir.Value(name=weight, const_value=ir.tensor(np.zeros((4, 3, 1, 1), np.float32)))
    node = ir.Node("", "Conv", [x, w], name=name)
    if scopes is not None:
        node.metadata_props["pkg.torch.onnx.name_scopes"] = scopes
    return node


@pytest.mark.parametrize("node_name, path", [
    ("/model.2/m.0/cv1/conv/Conv", "model.2.m.0.cv1.conv"),  # ultralytics: children named alone
    ("/layer1/layer1.0/conv1/Conv", "layer1.0.conv1"),  # torchvision: children repeat the parent
    ("/blocks/blocks.1/blocks.1.0/ghost2/primary_conv/primary_conv.0/Conv",
     "blocks.1.0.ghost2.primary_conv.0"),
    ("/conv1/Conv", "conv1"),
    ("Conv_7", None),
])
def test_torchscript_scopes_give_the_whole_module_path(node_name, path):
    assert module_path(_conv(node_name)) == path


def test_parameter_names_come_first_then_dynamo_scopes():
    assert module_path(_conv("node_Conv_3", weight="stem.conv.weight")) == "stem.conv"
    scopes = "['', 'stages', 'stages.2.1.transformer.0.attn.qkv', 'linear']"
    assert module_path(_conv("node_MatMul_225", weight="val_226", scopes=scopes)) == (
        "stages.2.1.transformer.0.attn.qkv")
    assert module_path(_conv("node_MatMul_9", weight="val_1", scopes="not a list")) is None


def test_a_blocks_name_is_what_its_layers_share():
    layers = [_conv("/model.2/m.0/cv1/conv/Conv"), _conv("/model.2/m.0/cv2/conv/Conv")]
    assert block_name(layers) == "model.2.m.0"
    assert block_name(layers[:1]) == "model.2.m.0.cv1"
    assert block_name([_conv("Conv_7")]) == "Conv_7"


def test_repeated_names_are_numbered_in_order():
    assert unique_names(["cv1", "cv2", "cv1", "cv1"]) == ["cv1", "cv2", "cv1#2", "cv1#3"]
