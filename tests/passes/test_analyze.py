"""End to end on torchvision exports (both exporters, BN folded or not) and on an old (IR 3)
file: analyse, prune with a random plan, and check the pruned model against the masked original
in ORT."""

import pytest

from mdp_trt.graph import load_model, save_model
from mdp_trt.importance.output_scale import layer_output_scale
from mdp_trt.passes import analyze, apply_plan, mask_model, verify
from tests import onnx_graphs as G

EXPORTS = [
    pytest.param("resnet18", True, True, id="resnet18-dynamo"),
    pytest.param("resnet18", False, True, id="resnet18-torchscript"),
    pytest.param("resnet18", True, False, id="resnet18-dynamo-bn"),
    pytest.param("resnet18", False, False, id="resnet18-torchscript-bn"),
    pytest.param("vgg11_bn_small", True, True, id="vgg-dynamo"),
    pytest.param("vgg11_bn_small", False, True, id="vgg-torchscript"),
    pytest.param("vgg11_bn_small", True, False, id="vgg-dynamo-bn"),
]


def test_an_ir3_model_with_its_weights_among_the_inputs_is_pruned(tmp_path):
    """IR < 4 listed every initializer as an input: they are weights (load_model's docstring)."""
    model, path = G.load(G.opset7_weights_as_inputs(), tmp_path)
    assert [v.name for v in model.graph.inputs] == ["image"] and model.ir_version == 4
    analysis = analyze(model, str(path))
    assert [layer.name for layer in analysis.layers] == ["conv1", "conv2", "fc"]
    assert [g.prunable for g in analysis.groups] == [True, True, False]
    keep = {0: [1, 3, 4], 1: [0, 5]}
    pruned = apply_plan(model, analysis, keep)
    assert verify(mask_model(model, analysis, keep), pruned, inputs=2).passed
    saved = load_model(save_model(pruned, tmp_path / "pruned.onnx"))
    assert saved.opset_imports[""] == 7 and saved.ir_version == 4


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    cache = {}

    def get(arch, dynamo, fold):
        key = (arch, dynamo, fold)
        if key not in cache:
            path = tmp_path_factory.mktemp("tv") / f"{arch}-{dynamo}-{fold}.onnx"
            G.export_torchvision(arch, path, dynamo=dynamo, fold_bn=fold)
            cache[key] = path
        return cache[key]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("arch, dynamo, fold", EXPORTS)
def test_random_plan_on_torchvision_export(exports, arch, dynamo, fold):
    path = exports(arch, dynamo, fold)
    model = load_model(path)
    analysis = analyze(model, str(path))
    bns = sum(n.op_type == "BatchNormalization" for n in model.graph)
    assert (bns > 0) == (not fold)
    if arch == "resnet18":
        assert len(analysis.layers) == 21
        assert [l.signature.op_type for l in analysis.layers].count("Conv") == 20
        assert len(analysis.blocks) == 8
        assert sum(b.removable for b in analysis.blocks) == 5
        assert sum((b.reason or "").startswith("projection skip") for b in analysis.blocks) == 3
        assert [b.name for b in analysis.blocks if b.removable] == [
            "layer1.0", "layer1.1", "layer2.1", "layer3.1", "layer4.1",
        ]
        # 4 stage-wide residual groups + 8 first-conv groups + the classifier.
        assert len(analysis.groups) == 13
        assert [g.prunable for g in analysis.groups].count(False) == 1
        assert analysis.groups[0].name == "conv1" and len(analysis.groups[0].producers) == 3
    else:
        assert len(analysis.layers) == 11 and analysis.blocks == ()
        assert [g.prunable for g in analysis.groups] == [True] * 10 + [False]
        last_conv = analysis.groups[7]
        assert last_conv.consumers == (analysis.layers[8].name,)  # the Gemm after Flatten
    first = analysis.layers[0]
    scale = layer_output_scale(model, analysis, first.name)
    assert (scale is None) == fold
    for seed in (0, 1) if fold else (0,):
        keep, removed = G.random_plan(analysis, seed)
        pruned = apply_plan(model, analysis, keep, removed)
        result = verify(mask_model(model, analysis, keep, removed), pruned, inputs=2, seed=seed)
        assert result.max_rel_diff <= 1e-4


@pytest.mark.slow
def test_resnet50_bottlenecks(tmp_path):
    path = G.export_torchvision("resnet50", tmp_path / "resnet50.onnx", dynamo=True)
    model = load_model(path)
    analysis = analyze(model, str(path))
    assert len(analysis.layers) == 54  # 53 convs + fc
    assert len(analysis.blocks) == 16
    assert sum(b.removable for b in analysis.blocks) == 12
    assert len(analysis.groups) == 1 + 4 + 16 * 2 + 1  # stem, stages, 2 per block, fc
    keep, removed = G.random_plan(analysis, 0)
    pruned = apply_plan(model, analysis, keep, removed)
    assert verify(mask_model(model, analysis, keep, removed), pruned, inputs=1).passed
