"""Golden small graphs (built with onnx.helper) and torchvision exports shared by the tests.

Each builder returns an ``onnx.ModelProto`` with seeded random weights; ``load`` writes it to a
file and loads it with ``mdp_trt.graph.load_model`` (the path every pipeline takes).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
from onnx import TensorProto, helper, numpy_helper

from mdp_trt.graph import load_model

OPSET = 18


class GraphBuilder:
    """A tiny helper around onnx.helper: nodes, seeded initializers, one float input."""

    def __init__(self, input_shape: tuple[int, ...], seed: int = 0, input_name: str = "image"):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.input = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, list(input_shape))
        self.input_name = input_name
        self.outputs: list[onnx.ValueInfoProto] = []

    def const(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], name: str, **attrs) -> str:
        out = f"{name}_out"
        self.nodes.append(helper.make_node(op, inputs, [out], name=name, **attrs))
        return out

    def conv(self, x: str, cin: int, cout: int, name: str, k: int = 3, stride: int = 1,
             bias: bool = True, group: int = 1) -> str:
        w = self.const(f"{name}.weight", self.rng.standard_normal((cout, cin // group, k, k)).astype(np.float32) * 0.3)
        inputs = [x, w]
        if bias:
            inputs.append(self.const(f"{name}.bias", self.rng.standard_normal(cout).astype(np.float32) * 0.1))
        return self.node("Conv", inputs, name, kernel_shape=[k, k], strides=[stride, stride],
                         pads=[k // 2] * 4, group=group)

    def bn(self, x: str, c: int, name: str) -> str:
        r = self.rng
        params = [
            self.const(f"{name}.weight", (0.5 + r.random(c)).astype(np.float32)),
            self.const(f"{name}.bias", (0.1 * r.standard_normal(c)).astype(np.float32)),
            self.const(f"{name}.running_mean", (0.1 * r.standard_normal(c)).astype(np.float32)),
            self.const(f"{name}.running_var", (0.5 + r.random(c)).astype(np.float32)),
        ]
        return self.node("BatchNormalization", [x, *params], name, epsilon=1e-5)

    def gemm(self, x: str, cin: int, cout: int, name: str) -> str:
        w = self.const(f"{name}.weight", self.rng.standard_normal((cout, cin)).astype(np.float32) * 0.1)
        b = self.const(f"{name}.bias", self.rng.standard_normal(cout).astype(np.float32) * 0.1)
        return self.node("Gemm", [x, w, b], name, transB=1)

    def output(self, value: str, shape: list[int], name: str | None = None) -> None:
        if name is not None:
            self.nodes.append(helper.make_node("Identity", [value], [name], name=f"{name}_identity"))
            value = name
        self.outputs.append(helper.make_tensor_value_info(value, TensorProto.FLOAT, shape))

    def model(self) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, "golden", [self.input], self.outputs, self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = 9
        onnx.checker.check_model(model)
        return model


def head(b: GraphBuilder, x: str, c: int, classes: int = 5) -> None:
    """GlobalAveragePool -> Flatten -> Gemm -> output 'logits'."""
    pooled = b.node("GlobalAveragePool", [x], "gap")
    flat = b.node("Flatten", [pooled], "flatten", axis=1)
    b.output(b.gemm(flat, c, classes, "fc"), [1, classes], "logits")


def conv_bn_relu_chain() -> onnx.ModelProto:
    """conv1(8)-bn-relu-conv2(6)-bn-relu-GAP-Flatten-fc: groups conv1, conv2 prunable."""
    b = GraphBuilder((1, 3, 8, 8))
    x = b.node("Relu", [b.bn(b.conv("image", 3, 8, "conv1", bias=False), 8, "bn1")], "relu1")
    x = b.node("Relu", [b.bn(b.conv(x, 8, 6, "conv2"), 6, "bn2")], "relu2")
    head(b, x, 6)
    return b.model()


def residual_identity() -> onnx.ModelProto:
    """stem(8) -> [conv_a(6)-relu-conv_b(8)] + identity skip -> relu -> head.

    One removable block (conv_a, conv_b); stem and conv_b share a group through the Add.
    """
    b = GraphBuilder((1, 3, 8, 8))
    fork = b.node("Relu", [b.conv("image", 3, 8, "stem")], "stem_relu")
    skip = b.node("Identity", [fork], "skip_identity")
    y = b.node("Relu", [b.conv(fork, 8, 6, "conv_a")], "relu_a")
    y = b.conv(y, 6, 8, "conv_b")
    x = b.node("Relu", [b.node("Add", [y, skip], "add")], "relu_out")
    head(b, x, 8)
    return b.model()


def projection_skip() -> onnx.ModelProto:
    """stem(8) -> [conv_a(stride 2, 12)-relu-conv_b(16)] + downsample conv(16, stride 2) -> head."""
    b = GraphBuilder((1, 3, 8, 8))
    fork = b.node("Relu", [b.conv("image", 3, 8, "stem")], "stem_relu")
    y = b.node("Relu", [b.conv(fork, 8, 12, "conv_a", stride=2)], "relu_a")
    y = b.bn(b.conv(y, 12, 16, "conv_b", bias=False), 16, "bn_b")
    d = b.bn(b.conv(fork, 8, 16, "downsample", k=1, stride=2, bias=False), 16, "bn_d")
    x = b.node("Relu", [b.node("Add", [y, d], "add")], "relu_out")
    head(b, x, 16)
    return b.model()


def flatten_gemm_head(reshape: bool = False) -> onnx.ModelProto:
    """conv(8) on 4x4 -> relu -> Flatten (or Reshape to [1, 128]) -> fc1(10) -> relu -> fc2(5).

    The fc1 columns are channel-major: channel c owns columns [16c, 16c + 16).
    """
    b = GraphBuilder((1, 3, 4, 4))
    x = b.node("Relu", [b.conv("image", 3, 8, "conv")], "relu")
    if reshape:
        flat = b.node("Reshape", [x, b.const("flat_shape", np.array([1, 128], dtype=np.int64))], "reshape")
    else:
        flat = b.node("Flatten", [x], "flatten", axis=1)
    h = b.node("Relu", [b.gemm(flat, 128, 10, "fc1")], "fc1_relu")
    b.output(b.gemm(h, 10, 5, "fc2"), [1, 5], "logits")
    return b.model()


def unsupported_op() -> onnx.ModelProto:
    """conv1(8) -> Softmax over channels -> conv2(6) -> head: conv1's group is unprunable."""
    b = GraphBuilder((1, 3, 8, 8))
    x = b.node("Softmax", [b.conv("image", 3, 8, "conv1")], "softmax", axis=1)
    x = b.node("Relu", [b.conv(x, 8, 6, "conv2")], "relu2")
    head(b, x, 6)
    return b.model()


def middle_output() -> onnx.ModelProto:
    """conv1(8) -> relu -> graph output 'features' and -> conv2(6) -> head."""
    b = GraphBuilder((1, 3, 8, 8))
    x = b.node("Relu", [b.conv("image", 3, 8, "conv1")], "relu1")
    b.output(x, [1, 8, 8, 8])
    x = b.node("Relu", [b.conv(x, 8, 6, "conv2")], "relu2")
    head(b, x, 6)
    return b.model()


def channel_constants_depthwise() -> onnx.ModelProto:
    """conv1(8) -> Mul [1,8,1,1] -> Add [8,1,1] -> depthwise conv(8) -> Clip -> conv2(6) -> head."""
    b = GraphBuilder((1, 3, 8, 8))
    x = b.conv("image", 3, 8, "conv1")
    x = b.node("Mul", [x, b.const("scale", (0.5 + b.rng.random((1, 8, 1, 1))).astype(np.float32))], "mul")
    x = b.node("Add", [x, b.const("shift", b.rng.standard_normal((8, 1, 1)).astype(np.float32))], "add_const")
    x = b.conv(x, 8, 8, "dw", group=8)
    x = b.node("Clip", [x, b.const("lo", np.array(0, np.float32)), b.const("hi", np.array(6, np.float32))], "clip")
    x = b.node("Relu", [b.conv(x, 8, 6, "conv2")], "relu2")
    head(b, x, 6)
    return b.model()


def concat_graph() -> onnx.ModelProto:
    """conv1(4), conv2(4) -> Concat -> conv3(6) -> head: conv3 reads both groups at offsets 0, 4."""
    b = GraphBuilder((1, 3, 8, 8))
    a = b.conv("image", 3, 4, "conv1")
    c = b.conv("image", 3, 4, "conv2")
    x = b.node("Concat", [a, c], "concat", axis=1)
    x = b.node("Relu", [b.conv(x, 8, 6, "conv3")], "relu3")
    head(b, x, 6)
    return b.model()


def dense_concat() -> onnx.ModelProto:
    """A DenseNet-like chain: stem(4) -> [BN-Relu-conv(3)] -> Concat(stem, new) -> BN -> Relu ->
    conv(3) -> Concat(stem, new, newer) -> BN -> Relu -> GAP -> Flatten -> fc.

    Every Concat output holds whole groups at offsets; BN parameters and the fc columns are cut
    per segment.
    """
    b = GraphBuilder((1, 3, 8, 8))
    stem = b.conv("image", 3, 4, "stem")
    y1 = b.conv(b.node("Relu", [b.bn(stem, 4, "bn1")], "relu1"), 4, 3, "conv1")
    cat1 = b.node("Concat", [stem, y1], "cat1", axis=1)
    y2 = b.conv(b.node("Relu", [b.bn(cat1, 7, "bn2")], "relu2"), 7, 3, "conv2")
    cat2 = b.node("Concat", [stem, y1, y2], "cat2", axis=1)
    x = b.node("Relu", [b.bn(cat2, 10, "bn3")], "relu3")
    head(b, x, 10)
    return b.model()


def concat_with_input() -> onnx.ModelProto:
    """Concat(image, conv1(4)) -> conv2(6): the image's 3 channels are fixed, conv1's prunable."""
    b = GraphBuilder((1, 3, 8, 8))
    a = b.node("Relu", [b.conv("image", 3, 4, "conv1")], "relu1")
    x = b.node("Concat", ["image", a], "concat", axis=1)
    x = b.node("Relu", [b.conv(x, 7, 6, "conv2")], "relu2")
    head(b, x, 6)
    return b.model()


def split_slice() -> onnx.ModelProto:
    """conv1(8) -> Split [3, 5] -> (conv_a(4), conv_b(4)) and conv1 -> Slice [2:6] -> conv_c(4);
    the three outputs are concatenated (12) -> head. Split sizes and Slice bounds follow pruning."""
    b = GraphBuilder((1, 3, 8, 8))
    x = b.node("Relu", [b.conv("image", 3, 8, "conv1")], "relu1")
    sizes = b.const("split_sizes", np.array([3, 5], dtype=np.int64))
    b.nodes.append(helper.make_node("Split", [x, sizes], ["part_a", "part_b"], name="split", axis=1))
    a = b.conv("part_a", 3, 4, "conv_a")
    c = b.conv("part_b", 5, 4, "conv_b")
    starts, ends = b.const("starts", np.array([2], np.int64)), b.const("ends", np.array([6], np.int64))
    sliced = b.node("Slice", [x, starts, ends, b.const("axes", np.array([1], np.int64))], "slice")
    d = b.conv(sliced, 4, 4, "conv_c")
    x = b.node("Relu", [b.node("Concat", [a, c, d], "concat", axis=1)], "relu2")
    head(b, x, 12)
    return b.model()


def channel_last_mlp() -> onnx.ModelProto:
    """A ConvNeXt-like block: conv(8) -> Transpose to NHWC -> LayerNorm over C -> MatMul(16) ->
    Tanh -> MatMul(8) -> Mul gamma[8] -> Transpose back -> + conv output -> head.

    The hidden group (16) is prunable; the residual stream (8) is normalised over its channels.
    """
    b = GraphBuilder((1, 3, 8, 8))
    x = b.conv("image", 3, 8, "conv")
    t = b.node("Transpose", [x], "to_nhwc", perm=[0, 2, 3, 1])
    ln = b.node("LayerNormalization", [t, b.const("ln.weight", (0.5 + b.rng.random(8)).astype(np.float32)),
                                       b.const("ln.bias", b.rng.standard_normal(8).astype(np.float32))],
                "ln", axis=-1)
    h = b.node("MatMul", [ln, b.const("fc1.weight", b.rng.standard_normal((8, 16)).astype(np.float32))], "fc1")
    h = b.node("Add", [h, b.const("fc1.bias", b.rng.standard_normal(16).astype(np.float32))], "fc1_bias")
    h = b.node("Tanh", [h], "act")
    h = b.node("MatMul", [h, b.const("fc2.weight", b.rng.standard_normal((16, 8)).astype(np.float32) * 0.3)], "fc2")
    h = b.node("Mul", [h, b.const("gamma", (0.1 + b.rng.random(8)).astype(np.float32))], "layer_scale")
    back = b.node("Transpose", [h], "to_nchw", perm=[0, 3, 1, 2])
    head(b, b.node("Add", [x, back], "add"), 8)
    return b.model()


def grouped_se_block() -> onnx.ModelProto:
    """A RegNetY-like block: stem(8) -> conv1(12) -> grouped conv(12, group=3) -> SE (GAP ->
    conv(4) -> Relu -> conv(12) -> Sigmoid -> Mul) -> conv3(8) -> + stem -> head.

    The grouped conv is a layer whose input and output groups split into 3 blocks of 4.
    """
    b = GraphBuilder((1, 3, 8, 8))
    stem = b.node("Relu", [b.conv("image", 3, 8, "stem")], "stem_relu")
    x = b.node("Relu", [b.bn(b.conv(stem, 8, 12, "conv1", bias=False), 12, "bn1")], "relu1")
    x = b.node("Relu", [b.conv(x, 12, 12, "conv2", group=3)], "relu2")
    s = b.node("GlobalAveragePool", [x], "se_pool")
    s = b.node("Relu", [b.conv(s, 12, 4, "se_fc1", k=1)], "se_relu")
    s = b.node("Sigmoid", [b.conv(s, 4, 12, "se_fc2", k=1)], "se_gate")
    x = b.node("Mul", [x, s], "se_mul")
    x = b.conv(x, 12, 8, "conv3", k=1)
    head(b, b.node("Relu", [b.node("Add", [x, stem], "add")], "relu_out"), 8)
    return b.model()


def gathered_pool_head() -> onnx.ModelProto:
    """The dynamo exporter's adaptive pooling to a larger map: conv(4) on 2x2 -> Transpose to
    [H, W, N, C] -> GatherND of 3x3 positions -> Transpose to [N, C, 3, 3] -> Gather of 2 rows
    -> Reshape [1, 4 * 6] -> fc1(6) -> Relu -> fc2(5). Channels ride through on the last axis."""
    b = GraphBuilder((1, 3, 2, 2))
    x = b.node("Relu", [b.conv("image", 3, 4, "conv")], "relu")
    t = b.node("Transpose", [x], "to_hwnc", perm=[2, 3, 0, 1])
    positions = np.array([[[i // 2, j // 2] for j in range(3)] for i in range(3)], dtype=np.int64)
    g = b.node("GatherND", [t, b.const("positions", positions)], "gather_nd")  # [3, 3, 1, 4]
    y = b.node("Transpose", [g], "to_nchw", perm=[2, 3, 0, 1])  # [1, 4, 3, 3]
    y = b.node("Gather", [y, b.const("rows", np.array([0, 2], np.int64))], "gather_rows", axis=2)
    flat = b.node("Reshape", [y, b.const("flat_shape", np.array([1, 24], np.int64))], "reshape")
    h = b.node("Relu", [b.gemm(flat, 24, 6, "fc1")], "fc1_relu")
    b.output(b.gemm(h, 6, 5, "fc2"), [1, 5], "logits")
    return b.model()


def matmul_head() -> onnx.ModelProto:
    """conv(8) -> GAP -> Flatten -> MatMul W[8, 10] -> Add bias[10] -> Relu -> Gemm(transB=0) -> out."""
    b = GraphBuilder((1, 3, 8, 8))
    x = b.node("Relu", [b.conv("image", 3, 8, "conv")], "relu")
    flat = b.node("Flatten", [b.node("GlobalAveragePool", [x], "gap")], "flatten", axis=1)
    h = b.node("MatMul", [flat, b.const("mm.weight", b.rng.standard_normal((8, 10)).astype(np.float32))], "mm")
    h = b.node("Add", [h, b.const("mm.bias", b.rng.standard_normal(10).astype(np.float32))], "mm_bias")
    h = b.node("Relu", [h], "mm_relu")
    w = b.const("fc.weight", b.rng.standard_normal((10, 5)).astype(np.float32))
    b.output(b.node("Gemm", [h, w], "fc", transB=0), [1, 5], "logits")
    return b.model()


def load(proto: onnx.ModelProto, directory: Path, name: str = "model.onnx") -> tuple[ir.Model, Path]:
    """Save ``proto`` under ``directory`` and load it as the pipeline does."""
    path = Path(directory) / name
    onnx.save_model(proto, path)
    return load_model(path), path


# --- torchvision exports ----------------------------------------------------------------------


def _torchvision_model(arch: str, seed: int):
    import torch
    import torchvision

    torch.manual_seed(seed)
    if arch == "vgg11_bn_small":
        # VGG-11-BN features with a small classifier over a 2x2 map: the 224x224 head
        # (512 x 7 x 7 -> 4096) would make a 500 MB test model. Same topology: Flatten of
        # spatial > 1 channels into a Gemm.
        model = torchvision.models.vgg11_bn(weights=None, num_classes=10)
        model.avgpool = torch.nn.AdaptiveAvgPool2d((2, 2))
        model.classifier = torch.nn.Sequential(
            torch.nn.Linear(512 * 4, 64), torch.nn.ReLU(True), torch.nn.Dropout(),
            torch.nn.Linear(64, 64), torch.nn.ReLU(True), torch.nn.Dropout(),
            torch.nn.Linear(64, 10),
        )
    else:
        model = torchvision.models.get_model(arch, weights=None)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # trained-looking BN statistics, so folding is not the identity
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.weight.copy_(0.5 + torch.rand(n, generator=generator))
                module.bias.copy_(0.1 * torch.randn(n, generator=generator))
                module.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(n, generator=generator))
        # ConvNeXt initialises its layer scales to 1e-6: its blocks would barely touch the
        # output, and pruning inside them could not be told apart from not pruning.
        for name, param in model.named_parameters():
            if name.endswith("layer_scale"):
                param.copy_(0.5 + torch.rand(param.shape, generator=generator))
    return model.eval()


def export_torchvision(arch: str, path: Path, *, dynamo: bool, fold_bn: bool = True,
                       input_shape: tuple[int, ...] = (1, 3, 64, 64), seed: int = 0) -> Path:
    """Export ``arch`` (or ``vgg11_bn_small``) with torch.onnx, as users' exporters do.

    dynamo: opset 18, external data ``path.data``; otherwise TorchScript, opset 17, one file.
    ``fold_bn=False`` keeps BatchNormalization nodes (dynamo optimize=False / PRESERVE).
    """
    import torch

    model = _torchvision_model(arch, seed)
    x = torch.randn(*input_shape, generator=torch.Generator().manual_seed(seed))
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(model, (x,), str(path), dynamo=True, opset_version=18,
                              optimize=fold_bn, external_data=True)
        else:
            mode = torch.onnx.TrainingMode.EVAL if fold_bn else torch.onnx.TrainingMode.PRESERVE
            torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17,
                              training=mode, do_constant_folding=fold_bn)
    return path


def export_module(model, path: Path, *, input_shape: tuple[int, ...], dynamo: bool,
                  opset: int | None = None) -> Path:
    """Export a torch module in eval mode as users do (dynamo: opset 18 unless ``opset`` says
    otherwise, optimised; otherwise TorchScript, opset 17, constants folded)."""
    import torch

    x = torch.randn(*input_shape, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (x,), str(path), dynamo=dynamo,
                          opset_version=opset or (18 if dynamo else 17))
    return path


def detect_head() -> onnx.ModelProto:
    """A YOLO-style detection head on two scales: per scale a hidden conv (prunable) feeds a box
    conv (8) and a class conv (4), concatenated and reshaped to (N, 12, H*W); the scales are
    joined over positions (axis 2, so both scales' head convs share channels), split into box
    and class parts; the box part's channels are regrouped 2 x 4 with a softmax over the 4 bins
    (a DFL), the class part goes through a softmax over positions and a sigmoid; one output."""
    b = GraphBuilder((1, 3, 8, 8))
    x = b.node("Relu", [b.conv("image", 3, 8, "stem")], "stem_act")
    y = b.node("Relu", [b.conv(x, 8, 8, "down", stride=2)], "down_act")
    flat = []
    for scale, t, positions in (("p3", x, 64), ("p4", y, 16)):
        h = b.node("Relu", [b.conv(t, 8, 6, f"{scale}.hidden")], f"{scale}.act")
        both = b.node("Concat", [b.conv(h, 6, 8, f"{scale}.box", k=1), b.conv(h, 6, 4, f"{scale}.cls", k=1)],
                      f"{scale}.cat", axis=1)
        shape = b.const(f"{scale}.shape", np.array([1, 12, positions], np.int64))
        flat.append(b.node("Reshape", [both, shape], f"{scale}.flat"))
    joined = b.node("Concat", flat, "positions", axis=2)
    sizes = b.const("box_cls", np.array([8, 4], np.int64))
    b.nodes.append(helper.make_node("Split", [joined, sizes], ["box", "cls"], name="split", axis=1))
    bins = b.node("Reshape", ["box", b.const("bins", np.array([1, 2, 4, 80], np.int64))], "dfl_view")
    dist = b.node("Reshape", [b.node("Softmax", [bins], "dfl_softmax", axis=2),
                              b.const("dist", np.array([1, 8, 80], np.int64))], "dfl_back")
    scores = b.node("Sigmoid", [b.node("Softmax", ["cls"], "cls_softmax", axis=2)], "cls_sigmoid")
    b.output(b.node("Concat", [dist, scores], "detections", axis=1), [1, 12, 80])
    return b.model()


def spatial_softmax() -> onnx.ModelProto:
    """conv1(8) -> (N, 8, H*W) -> softmax over positions -> back to (N, 8, H, W) -> conv2(6) ->
    head: a softmax and reshapes that leave the channel axis alone keep conv1 prunable."""
    b = GraphBuilder((1, 3, 8, 8))
    x = b.node("Reshape", [b.conv("image", 3, 8, "conv1"), b.const("flat", np.array([1, 8, 64], np.int64))],
               "flatten_positions")
    x = b.node("Reshape", [b.node("Softmax", [x], "softmax", axis=2),
                           b.const("square", np.array([1, 8, 8, 8], np.int64))], "unflatten_positions")
    head(b, b.node("Relu", [b.conv(x, 8, 6, "conv2")], "relu2"), 6)
    return b.model()


def ghost_module() -> onnx.ModelProto:
    """GhostNet's pattern: stem(8) -> a Ghost module (primary 1x1 conv(4) and its depthwise
    copy, concatenated) added onto the stem's output -> a squeeze-excite gate (reduce 8->2,
    expand 2->8) -> conv2(6) -> head. The stream's channel c and c + 4 are the same channel."""
    b = GraphBuilder((1, 3, 8, 8))
    stem = b.node("Relu", [b.conv("image", 3, 8, "stem")], "stem_act")
    primary = b.node("Relu", [b.conv(stem, 8, 4, "primary", k=1)], "primary_act")
    cheap = b.conv(primary, 4, 4, "cheap", group=4)
    stream = b.node("Add", [b.node("Concat", [primary, cheap], "ghost", axis=1), stem], "residual")
    squeezed = b.node("ReduceMean", [stream, b.const("hw", np.array([2, 3], np.int64))], "squeeze")
    gate = b.node("Sigmoid", [b.conv(b.node("Relu", [b.conv(squeezed, 8, 2, "reduce", k=1)], "reduce_act"),
                                     2, 8, "expand", k=1)], "gate")
    x = b.node("Relu", [b.conv(b.node("Mul", [stream, gate], "excite"), 8, 6, "conv2")], "relu2")
    head(b, x, 6)
    return b.model()


def random_plan(analysis, seed: int, block_probability: float = 0.5,
                least: float = 0.0) -> tuple[dict[int, list[int]], set[int]]:
    """A random valid plan: a random non-empty channel subset per prunable group (at least
    ``least`` of its channels, and its pinned ones), random blocks."""
    rng = np.random.default_rng(seed)

    def size(channels: int) -> int:
        return int(rng.integers(max(1, round(least * channels)), channels + 1))

    def kept(g) -> set[int]:
        # whole bundles (attention heads) of a bundled group
        bundles = rng.choice(g.channels // g.bundle, size=size(g.channels // g.bundle), replace=False)
        return {int(b) * g.bundle + i for b in bundles for i in range(g.bundle)}

    keep = {
        g.id: sorted({*kept(g), *(c for start, stop in g.pinned for c in range(start, stop))})
        for g in analysis.groups
        if g.prunable
    }
    removed = {b.id for b in analysis.blocks if b.removable and rng.random() < block_probability}
    return keep, removed


def run(model: ir.Model, x: np.ndarray) -> list[np.ndarray]:
    """Outputs of ``model`` in ORT CPU on the single input ``x``."""
    from mdp_trt.passes.verify import run_model

    name = [v.name for v in model.graph.inputs][0]
    return run_model(model, {name: x})


def proto_bytes(model: ir.Model) -> bytes:
    """A serialisation used to check that a pass left its input unchanged."""
    return ir.to_proto(model).SerializeToString(deterministic=True)


# --- control flow and models with nothing to prune ---------------------------------------------


def _branch(name: str, node: onnx.NodeProto, shape: list[int]) -> onnx.GraphProto:
    """A subgraph of one node whose single output is ``node``'s (If branches, no inputs)."""
    out = helper.make_tensor_value_info(node.output[0], TensorProto.FLOAT, shape)
    return helper.make_graph([node], name, [], [out])


def _data_condition(b: GraphBuilder, x: str) -> str:
    """A boolean computed from ``x`` at run time (a constant one would be folded away)."""
    total = b.node("ReduceSum", [x], "cond_sum", keepdims=0)
    return b.node("Greater", [total, b.const("cond_zero", np.array(0, np.float32))], "cond")


def if_reads_outer() -> onnx.ModelProto:
    """conv1(8) -> relu1; If(sum(image) > 0) whose branches read relu1's output by name (no
    input lists it) -> conv2(6) -> Mul(scale) -> relu -> conv3(4) -> relu -> head.

    The else branch also reads conv2's per-channel 'scale' (times the condition's sum, then a
    ReduceMean), which surgery cuts for the top-level Mul: the branch must keep the whole
    tensor. conv1's group is unprunable (read inside the If), conv2's and conv3's are prunable.
    """
    b = GraphBuilder((1, 3, 8, 8))
    x = b.node("Relu", [b.conv("image", 3, 8, "conv1")], "relu1")
    cond = _data_condition(b, "image")
    scale = b.const("scale", (0.5 + b.rng.random((1, 6, 1, 1))).astype(np.float32))
    then_branch = _branch("then", helper.make_node("Relu", [x], ["then_out"], name="then_relu"), [1, 8, 8, 8])
    # scale * sum: a run-time value, so that loading does not fold the read of 'scale' away.
    gain = helper.make_node("Mul", [scale, "cond_sum_out"], ["else_gain"], name="else_gain")
    mean = helper.make_node("ReduceMean", ["else_gain"], ["else_mean"], name="else_mean", keepdims=0)
    scaled = helper.make_node("Mul", [x, "else_mean"], ["else_out"], name="else_mul")
    else_out = helper.make_tensor_value_info("else_out", TensorProto.FLOAT, [1, 8, 8, 8])
    else_branch = helper.make_graph([gain, mean, scaled], "else", [], [else_out])
    b.nodes.append(helper.make_node("If", [cond], ["branch_out"], name="branch",
                                    then_branch=then_branch, else_branch=else_branch))
    y = b.node("Mul", [b.conv("branch_out", 8, 6, "conv2"), scale], "scale_mul")
    y = b.node("Relu", [b.conv(b.node("Relu", [y], "relu2"), 6, 4, "conv3")], "relu3")
    head(b, y, 4)
    return b.model()


def loop_body_conv() -> onnx.ModelProto:
    """conv1(8) -> relu1 -> Loop (2 iterations, relu1's output carried) whose body is a Conv
    (8 -> 8) and a Relu -> conv2(6) -> relu -> head.

    onnx infers no shape for a loop-carried output (it may change from one iteration to the
    next), so conv2 and fc have inputs of unknown shape: only conv1 is a layer.
    """
    b = GraphBuilder((1, 3, 8, 8))
    x = b.node("Relu", [b.conv("image", 3, 8, "conv1")], "relu1")
    typed = [1, 8, 8, 8]
    weight = numpy_helper.from_array(b.rng.standard_normal((8, 8, 3, 3)).astype(np.float32) * 0.1, "body_w")
    body = helper.make_graph(
        [helper.make_node("Conv", ["x_in", "body_w"], ["body_conv_out"], name="body_conv", pads=[1] * 4),
         helper.make_node("Relu", ["body_conv_out"], ["x_out"], name="body_relu"),
         helper.make_node("Identity", ["keep_in"], ["keep_out"], name="body_keep")],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("keep_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x_in", TensorProto.FLOAT, typed)],
        [helper.make_tensor_value_info("keep_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x_out", TensorProto.FLOAT, typed)],
        [weight],
    )
    trips = b.const("trips", np.array(2, np.int64))
    b.nodes.append(helper.make_node("Loop", [trips, "", x], ["loop_out"], name="loop", body=body))
    y = b.node("Relu", [b.conv("loop_out", 8, 6, "conv2")], "relu2")
    head(b, y, 6)
    return b.model()


def if_in_loop_reads_outer() -> onnx.ModelProto:
    """conv0(8) -> relu0 -> conv1(8) -> relu1 -> head; relu1's output is also read by an If
    nested in a Loop body (2 levels down), whose accumulator (zeros + the If's output) is the
    graph output 'features'. conv0's group is prunable, conv1's is not."""
    b = GraphBuilder((1, 3, 8, 8))
    x = b.node("Relu", [b.conv("image", 3, 8, "conv0")], "relu0")
    x = b.node("Relu", [b.conv(x, 8, 8, "conv1")], "relu1")
    cond = _data_condition(b, "image")
    typed = [1, 8, 8, 8]
    inner = helper.make_node(
        "If", [cond], ["inner_out"], name="inner_if",
        then_branch=_branch("then", helper.make_node("Relu", [x], ["then_out"], name="then_relu"), typed),
        else_branch=_branch("else", helper.make_node("Neg", [x], ["else_out"], name="else_neg"), typed),
    )
    body = helper.make_graph(
        [inner,
         helper.make_node("Add", ["acc_in", "inner_out"], ["acc_out"], name="body_add"),
         helper.make_node("Identity", ["keep_in"], ["keep_out"], name="body_keep")],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("keep_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, typed)],
        [helper.make_tensor_value_info("keep_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, typed)],
    )
    zeros = b.const("acc_zeros", np.zeros(typed, np.float32))
    trips = b.const("trips", np.array(2, np.int64))
    b.nodes.append(helper.make_node("Loop", [trips, "", zeros], ["features"], name="loop", body=body))
    b.output("features", typed)
    head(b, x, 8)
    return b.model()


def residual_with_if() -> onnx.ModelProto:
    """stem(8) -> fork; branch: conv_a(6) -> relu_a, read by name inside an If (condition from
    the fork) -> conv_b(8); Add(conv_b, fork) -> relu -> head.

    The branch reaches conv_a only through the If's subgraphs: the block is (conv_a, conv_b).
    """
    b = GraphBuilder((1, 3, 8, 8))
    fork = b.node("Relu", [b.conv("image", 3, 8, "stem")], "stem_relu")
    y = b.node("Relu", [b.conv(fork, 8, 6, "conv_a")], "relu_a")
    cond = _data_condition(b, fork)
    typed = [1, 6, 8, 8]
    b.nodes.append(helper.make_node(
        "If", [cond], ["branch_out"], name="branch",
        then_branch=_branch("then", helper.make_node("Relu", [y], ["then_out"], name="then_relu"), typed),
        else_branch=_branch("else", helper.make_node("Neg", [y], ["else_out"], name="else_neg"), typed),
    ))
    x = b.node("Relu", [b.node("Add", [b.conv("branch_out", 6, 8, "conv_b"), fork], "add")], "relu_out")
    head(b, x, 8)
    return b.model()


def relu_only() -> onnx.ModelProto:
    """image -> Relu -> output: no layer at all."""
    b = GraphBuilder((1, 3, 8, 8))
    b.output(b.node("Relu", ["image"], "relu"), [1, 3, 8, 8])
    return b.model()


def _qdq(b: GraphBuilder, x: str, name: str) -> str:
    scale = b.const(f"{name}.scale", np.array(0.05, np.float32))
    zero = b.const(f"{name}.zero_point", np.array(0, np.int8))
    return b.node("DequantizeLinear", [b.node("QuantizeLinear", [x, scale, zero], f"{name}_q"), scale, zero],
                  f"{name}_dq")


def qdq_convs() -> onnx.ModelProto:
    """A QDQ-quantised conv1(8) -> relu -> conv2(6) -> relu: each Conv reads a quantised-
    dequantised activation and a weight that DequantizeLinear computes from an int8
    initializer, as quantisation tools write them."""
    b = GraphBuilder((1, 3, 8, 8))
    x = "image"
    for name, cin, cout in (("conv1", 3, 8), ("conv2", 8, 6)):
        weight = b.const(f"{name}.weight_int8", b.rng.integers(-100, 100, (cout, cin, 3, 3)).astype(np.int8))
        scale = b.const(f"{name}.weight_scale", np.array(0.01, np.float32))
        zero = b.const(f"{name}.weight_zero_point", np.array(0, np.int8))
        w = b.node("DequantizeLinear", [weight, scale, zero], f"{name}_weight_dq")
        conv = b.node("Conv", [_qdq(b, x, f"{name}_input"), w], name, pads=[1] * 4)
        x = b.node("Relu", [conv], f"{name}_relu")
    b.output(x, [1, 6, 8, 8])
    return b.model()


def opset7_weights_as_inputs() -> onnx.ModelProto:
    """conv_bn_relu_chain as an opset-7, IR-3 file: every initializer is also a graph input,
    as that IR required."""
    model = conv_bn_relu_chain()
    graph = model.graph
    graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                       for t in graph.initializer)
    old = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 7)])
    old.ir_version = 3
    onnx.checker.check_model(old)
    return old
