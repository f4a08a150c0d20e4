import numpy as np

from mdp_trt.graph import initializer_array
from mdp_trt.importance.output_scale import layer_output_scale
from mdp_trt.passes import analyze
from tests import onnx_graphs as G


def test_scale_of_the_bn_after_a_layer(tmp_path):
    model, path = G.load(G.conv_bn_relu_chain(), tmp_path)
    analysis = analyze(model, str(path))
    scale = layer_output_scale(model, analysis, "conv1")
    gamma = initializer_array(model, "bn1.weight")
    var = initializer_array(model, "bn1.running_var")
    np.testing.assert_allclose(scale, gamma / np.sqrt(var + 1e-5), rtol=1e-6)
    assert scale.shape == (8,)


def test_no_scale_without_a_following_bn(tmp_path):
    model, path = G.load(G.unsupported_op(), tmp_path)
    analysis = analyze(model, str(path))
    assert layer_output_scale(model, analysis, "conv1") is None
    assert layer_output_scale(model, analysis, "fc") is None
