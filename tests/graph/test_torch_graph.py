"""TorchGraph computes what ONNX Runtime computes, passes gradients and writes weights back."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from mdp_trt.errors import UnsupportedGraph
from mdp_trt.graph import load_model
from mdp_trt.graph.torch_graph import TorchGraph
from mdp_trt.models.export import ExportOptions, export_architecture
from tests import onnx_graphs as G

SHAPE = (2, 4, 6, 6)  # batch 2: the ops must not assume batch 1


def _ort(proto: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})


def _torch(proto: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    module = TorchGraph.from_model(ir.serde.deserialize_model(proto))
    with torch.no_grad():
        out = module(torch.from_numpy(x))
    return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]


def _model(b: G.GraphBuilder, outputs: list[str], opset: int = G.OPSET) -> onnx.ModelProto:
    """The graph with ``outputs`` as its outputs, typed by onnx shape inference."""
    graph = helper.make_graph(b.nodes, "ops", [b.input], [], b.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 9
    inferred = {v.name: v for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
    model.graph.output.extend(inferred[name] for name in outputs)
    onnx.checker.check_model(model, full_check=True)
    return model


def _f32(rng, *shape, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(np.float32)


def _i64(*values):
    return np.asarray(values, dtype=np.int64)


def conv_gemm_matmul(b: G.GraphBuilder) -> list[str]:
    r = b.rng
    conv = b.node("Conv", ["image", b.const("w", _f32(r, 6, 2, 3, 3)), b.const("b", _f32(r, 6))],
                  "conv", group=2, strides=[2, 1], dilations=[1, 2], pads=[0, 1, 2, 1],
                  kernel_shape=[3, 3])
    flat = b.node("Flatten", [conv], "flatten", axis=1)
    flat_t = b.node("Transpose", [flat], "flat_t")
    gemm = b.node("Gemm", [flat_t, b.const("gw", _f32(r, 5, 72)), b.const("gc", _f32(r, 5))],
                  "gemm", transA=1, transB=1, alpha=0.5, beta=2.0)
    nhwc = b.node("Transpose", ["image"], "nhwc", perm=[0, 2, 3, 1])
    mm = b.node("MatMul", [nhwc, b.const("mw", _f32(r, 4, 3))], "matmul")
    soft = b.node("Softmax", [mm], "softmax", axis=-1)
    return [gemm, soft]


def elementwise(b: G.GraphBuilder) -> list[str]:
    r = b.rng
    x = b.node("Sigmoid", ["image"], "sig")
    x = b.node("Sqrt", [b.node("Pow", [x, b.const("two", np.float32(2.0))], "pow")], "sqrt")
    x = b.node("Sub", [x, b.const("c", _f32(r, 4, 1, 1))], "sub")
    x = b.node("Div", [x, b.const("d", np.float32(1.7))], "div")
    x = b.node("Mul", [b.node("Erf", [x], "erf"), b.node("Tanh", ["image"], "tanh")], "mul")
    x = b.node("Add", [x, b.node("HardSigmoid", ["image"], "hsig", alpha=0.3, beta=0.4)], "add")
    x = b.node("HardSwish", [x], "hswish")
    x = b.node("Clip", [x, b.const("lo", np.float32(-0.5)), b.const("hi", np.float32(0.5))], "clip")
    x = b.node("Relu", [b.node("Gelu", [x], "gelu", approximate="tanh")], "relu")
    return [b.node("Gelu", [x], "gelu2"), b.node("Identity", ["image"], "identity")]


def normalisation(b: G.GraphBuilder) -> list[str]:
    r = b.rng
    bn = b.bn("image", 4, "bn")
    ln_w = b.node("LayerNormalization", [bn, b.const("lw", _f32(r, 6)), b.const("lb", _f32(r, 6))],
                  "ln_w", epsilon=1e-3)
    ln_chw = b.node("LayerNormalization", [bn, b.const("lcw", _f32(r, 4, 6, 6))], "ln_chw", axis=1)
    return [ln_w, ln_chw]


def pools(b: G.GraphBuilder) -> list[str]:
    return [
        b.node("MaxPool", ["image"], "max_ceil", kernel_shape=[3, 3], strides=[2, 2],
               pads=[0, 0, 1, 1], ceil_mode=1),
        b.node("MaxPool", ["image"], "max_crop", kernel_shape=[2, 2], strides=[2, 2],
               pads=[0, 0, 1, 1], ceil_mode=1),
        b.node("MaxPool", ["image"], "max_sym", kernel_shape=[3, 3], strides=[2, 2],
               pads=[1, 1, 1, 1], dilations=[1, 1]),
        b.node("AveragePool", ["image"], "avg_exclude", kernel_shape=[3, 3], strides=[2, 2],
               pads=[1, 1, 1, 1]),
        b.node("AveragePool", ["image"], "avg_asym", kernel_shape=[2, 2], strides=[2, 2],
               pads=[0, 0, 1, 1], ceil_mode=1),
        b.node("AveragePool", ["image"], "avg_include", kernel_shape=[3, 3], strides=[1, 1],
               pads=[1, 0, 1, 2], count_include_pad=1),
        b.node("GlobalAveragePool", ["image"], "gap"),
        b.node("ReduceMean", ["image", b.const("axes", _i64(1, -1))], "mean", keepdims=0),
    ]


def shape_arithmetic(b: G.GraphBuilder) -> list[str]:
    """What exporters emit for x.view(x.size(0), -1) and torch.full_like, left unfolded."""
    shape = b.node("Shape", ["image"], "shape")
    batch = b.node("Gather", [shape, b.const("zero", np.int64(0))], "batch", axis=0)
    batch = b.node("Unsqueeze", [batch, b.const("ax0", _i64(0))], "batch1")
    target = b.node("Concat", [batch, b.const("minus1", _i64(-1))], "target", axis=0)
    flat = b.node("Reshape", ["image", target], "reshape")
    spatial = b.node("Shape", ["image"], "spatial", start=2)
    b.nodes.append(helper.make_node("Constant", [], ["fill"], name="fill_const",
                                    value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.5])))
    full = b.node("ConstantOfShape", [spatial], "full",
                  value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.25]))
    scaled = b.node("Mul", [b.node("Mul", ["image", full], "mul_full"), "fill"], "mul_fill")
    dims = b.node("Cast", [shape], "dims", to=TensorProto.FLOAT)
    picked = b.node("Gather", [scaled, b.const("idx", _i64([3, -1], [0, 1]))], "pick", axis=3)
    half = b.node("Div", [shape, b.const("two", np.int64(2))], "half")
    zeros = b.node("ConstantOfShape", [half], "zeros")
    return [flat, dims, picked, zeros]


def slicing(b: G.GraphBuilder) -> list[str]:
    sliced = b.node("Slice", ["image", b.const("s", _i64(-1, 1)), b.const("e", _i64(-100, 5)),
                              b.const("a", _i64(3, 2)), b.const("st", _i64(-2, 2))], "slice")
    b.nodes.append(helper.make_node("Split", ["image", b.const("sp", _i64(1, 3))],
                                    ["part0", "part1"], name="split", axis=1))
    b.nodes.append(helper.make_node("Split", ["image"], ["half0", "half1"], name="split_even",
                                    axis=2, num_outputs=2))
    squeezed = b.node("Squeeze", [b.node("ReduceMean", ["part0", b.const("a1", _i64(1))], "m1"),
                                  b.const("sq", _i64(1))], "squeeze")
    unsqueezed = b.node("Unsqueeze", [squeezed, b.const("usq", _i64(-1, 0))], "unsqueeze")
    dropped = b.node("Dropout", ["part1"], "dropout")
    return [sliced, unsqueezed, dropped, "half1"]


def padding_resize(b: G.GraphBuilder) -> list[str]:
    pads = b.const("pads", _i64(0, 0, 1, 2, 0, 0, 2, 1))
    return [
        b.node("Pad", ["image", pads, b.const("pv", np.float32(0.5))], "pad_constant"),
        b.node("Pad", ["image", pads], "pad_reflect", mode="reflect"),
        b.node("Pad", ["image", pads], "pad_edge", mode="edge"),
        b.node("Resize", ["image", "", b.const("sc2", np.float32([1, 1, 2, 2]))], "nearest",
               mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
        b.node("Resize", ["image", "", "", b.const("sz", _i64(2, 4, 9, 4))], "linear_sizes",
               mode="linear"),
        b.node("Resize", ["image", "", b.const("sc15", np.float32([1, 1, 1.5, 1.5]))],
               "linear_corners", mode="linear", coordinate_transformation_mode="align_corners"),
        b.node("Resize", ["image", "", b.const("sc2b", np.float32([1, 1, 2, 2]))], "linear_torch",
               mode="linear", coordinate_transformation_mode="pytorch_half_pixel"),
        b.node("Resize", ["image", "", b.const("sc3", np.float32([1, 1, 3, 3]))], "nearest_exact",
               mode="nearest", coordinate_transformation_mode="half_pixel",
               nearest_mode="round_prefer_ceil"),
        # ONNX reads a length-1 output axis at source 0 here, torch at the middle
        b.node("Resize", ["image", "", "", b.const("sz1", _i64(2, 4, 1, 5))], "linear_one_row",
               mode="linear", coordinate_transformation_mode="pytorch_half_pixel"),
    ]


def same_padding(b: G.GraphBuilder) -> list[str]:
    """auto_pad SAME_*: odd totals put the extra pixel at the end (UPPER) or start (LOWER)."""
    r = b.rng
    odd = b.node("Slice", ["image", b.const("s0", _i64(0)), b.const("e5", _i64(5)),
                           b.const("ax2", _i64(2))], "odd")  # 5 x 6: one odd, one even axis
    w3, w23 = b.const("w3", _f32(r, 6, 4, 3, 3)), b.const("w23", _f32(r, 6, 2, 2, 3))
    return [
        b.node("Conv", [odd, w3], "conv_upper", auto_pad="SAME_UPPER", strides=[2, 2]),
        b.node("Conv", [odd, w23, b.const("cb", _f32(r, 6))], "conv_lower", auto_pad="SAME_LOWER",
               strides=[1, 2], group=2),
        # a 1x1 kernel under stride 2 on an even axis: the formula goes negative, nothing is padded
        b.node("Conv", ["image", b.const("w1", _f32(r, 3, 4, 1, 1))], "conv_short_kernel",
               auto_pad="SAME_UPPER", strides=[2, 2]),
        b.node("MaxPool", [odd], "max_upper", auto_pad="SAME_UPPER", kernel_shape=[3, 3],
               strides=[2, 2]),
        b.node("MaxPool", [odd], "max_lower_ceil", auto_pad="SAME_LOWER", kernel_shape=[2, 2],
               ceil_mode=1),
        b.node("AveragePool", [odd], "avg_upper", auto_pad="SAME_UPPER", kernel_shape=[3, 3],
               strides=[2, 2]),
        b.node("AveragePool", [odd], "avg_lower_include", auto_pad="SAME_LOWER",
               kernel_shape=[2, 3], strides=[2, 1], count_include_pad=1),
    ]


def cubic_resize(b: G.GraphBuilder) -> list[str]:
    def scales(name, *values):
        return ["image", "", b.const(name, np.float32([1, 1, *values]))]

    def sizes(name, *values):
        return ["image", "", "", b.const(name, _i64(2, 4, *values))]

    return [
        b.node("Resize", scales("up", 2, 1.5), "cubic_half_pixel", mode="cubic"),
        b.node("Resize", scales("mixed", 0.6, 1.7), "cubic_torch", mode="cubic",
               coordinate_transformation_mode="pytorch_half_pixel"),
        b.node("Resize", sizes("row", 1, 9), "cubic_torch_one_row", mode="cubic",
               coordinate_transformation_mode="pytorch_half_pixel"),
        b.node("Resize", sizes("down", 4, 9), "cubic_corners", mode="cubic",
               coordinate_transformation_mode="align_corners", cubic_coeff_a=-0.75),
    ]


def gather_nd(b: G.GraphBuilder) -> list[str]:
    def gather(name, indices, batch_dims):
        return b.node("GatherND", ["image", b.const(f"{name}_i", indices)], name,
                      batch_dims=batch_dims)

    return [
        gather("pairs", _i64([1, -1], [0, 3]), 0),  # negative indices count from the end
        gather("elements", _i64([1, 3, 5, 0], [-1, -2, 0, 2], [0, 0, 0, 0]), 0),
        gather("per_batch", _i64([[0, 1], [3, 5], [2, 2]], [[1, 0], [-1, 0], [2, 4]]), 1),
        gather("per_channel", np.arange(2 * 4 * 3, dtype=np.int64).reshape(2, 4, 3, 1) % 6, 2),
    ]


CASES = [conv_gemm_matmul, elementwise, normalisation, pools, shape_arithmetic, slicing,
         padding_resize, same_padding, cubic_resize, gather_nd]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__)
def test_ops_match_onnx_runtime(case):
    b = G.GraphBuilder(SHAPE, seed=1)
    proto = _model(b, case(b), opset=20)  # 20: Gelu is an ONNX op from there on
    x = np.random.default_rng(2).standard_normal(SHAPE).astype(np.float32)
    expected, got = _ort(proto, x), _torch(proto, x)
    assert len(got) == len(expected)
    for name, e, g in zip([o.name for o in proto.graph.output], expected, got):
        assert g.shape == e.shape, name
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5, err_msg=name)


def test_an_unsupported_op_names_the_node_and_what_needs_it():
    b = G.GraphBuilder(SHAPE)
    proto = _model(b, [b.node("LRN", ["image"], "the_lrn", size=3)])
    with pytest.raises(UnsupportedGraph, match=r"'the_lrn' \(LRN\).*taylor importance and finetune"):
        TorchGraph.from_model(ir.serde.deserialize_model(proto))


def test_an_unsupported_attribute_names_the_node():
    b = G.GraphBuilder(SHAPE)
    proto = _model(b, [b.node("Pad", ["image", b.const("p", _i64(0, 0, 1, 1, 0, 0, 1, 1))],
                              "the_pad", mode="wrap")], opset=19)
    module = TorchGraph.from_model(ir.serde.deserialize_model(proto))
    with pytest.raises(UnsupportedGraph, match=r"'the_pad' \(Pad\): Pad mode 'wrap'"):
        module(torch.zeros(SHAPE))


def _dilated_same_conv(b):
    return b.node("Conv", ["image", b.const("w", np.ones((2, 4, 3, 3), np.float32))], "the_node",
                  auto_pad="SAME_UPPER", dilations=[2, 2])


def _same_pool_shorter_than_stride(b):
    return b.node("MaxPool", ["image"], "the_node", auto_pad="SAME_LOWER", kernel_shape=[1, 1],
                  strides=[4, 4])


def _dilated_average_pool(b):
    return b.node("AveragePool", ["image"], "the_node", kernel_shape=[2, 2], dilations=[2, 2])


def _cubic(b, scales=(1, 1, 2, 2), **attrs):
    x = "image"
    if len(scales) == 5:
        x = b.node("Unsqueeze", [x, b.const("ax", _i64(2))], "rank5")
    return b.node("Resize", [x, "", b.const("sc", np.float32(scales))], "the_node", mode="cubic",
                  **attrs)


REFUSALS = [
    (_dilated_same_conv, r"auto_pad=SAME_UPPER with dilations \[2, 2\]"),
    (_same_pool_shorter_than_stride, r"kernel \[1, 1\] shorter than strides \[4, 4\]"),
    (_dilated_average_pool, r"dilated AveragePool"),
    (lambda b: _cubic(b, cubic_coeff_a=-0.5), r"cubic_coeff_a=-0.5 is not supported"),
    (lambda b: _cubic(b, exclude_outside=1), r"exclude_outside=1 is not supported"),
    (lambda b: _cubic(b, coordinate_transformation_mode="asymmetric"),
     r"mode=cubic, coordinate_transformation_mode=asymmetric is not supported"),
    (lambda b: _cubic(b, scales=(1, 1, 1, 2, 2)), r"cubic Resize of a rank-5 tensor"),
]


@pytest.mark.parametrize("build,message", REFUSALS,
                         ids=["same_dilated", "same_pool_short_kernel", "avg_dilated",
                              "cubic_coeff_a", "cubic_exclude_outside", "cubic_asymmetric",
                              "cubic_rank5"])
def test_unsupported_attribute_values_are_refused_naming_the_node(build, message):
    b = G.GraphBuilder(SHAPE)
    module = TorchGraph.from_model(ir.serde.deserialize_model(_model(b, [build(b)], opset=20)))
    with pytest.raises(UnsupportedGraph, match=r"'the_node' \(\w+\): .*" + message):
        module(torch.zeros(SHAPE))


def _invalid_gather_nd(batch_dims: int, indices: np.ndarray) -> onnx.ModelProto:
    """A GatherND that ONNX shape inference rejects, so its output is declared untyped."""
    b = G.GraphBuilder(SHAPE)
    b.node("GatherND", ["image", b.const("i", indices)], "the_gather", batch_dims=batch_dims)
    output = helper.make_tensor_value_info("the_gather_out", TensorProto.FLOAT, None)
    graph = helper.make_graph(b.nodes, "ops", [b.input], [output], b.initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=9)


@pytest.mark.parametrize("batch_dims,indices,message", [
    (4, np.zeros((2, 4, 6, 6, 1), np.int64), r"batch_dims=4, data rank 4 .* not a valid GatherND"),
    (0, np.zeros((2, 5), np.int64), r"indices shape \(2, 5\) is not a valid GatherND"),
    (1, np.zeros((3, 1), np.int64), r"batch axes differ: data \(2,\), indices \(3,\)"),
], ids=["batch_dims_too_large", "indices_too_deep", "batch_mismatch"])
def test_an_invalid_gather_nd_is_refused_naming_the_node(batch_dims, indices, message):
    proto = _invalid_gather_nd(batch_dims, indices)
    module = TorchGraph.from_model(ir.serde.deserialize_model(proto))
    with pytest.raises(UnsupportedGraph, match=r"'the_gather' \(GatherND\): .*" + message):
        module(torch.zeros(SHAPE))


def test_gradients_flow_through_same_padding_cubic_resize_and_gather_nd():
    b = G.GraphBuilder((1, 2, 5, 4), seed=3)
    conv = b.node("Conv", ["image", b.const("w", _f32(b.rng, 3, 2, 3, 2))], "conv",
                  auto_pad="SAME_LOWER", strides=[2, 1])  # 3 x 4 out: pads (1, 0) and (1, 1)
    up = b.node("Resize", [conv, "", b.const("sc", np.float32([1, 1, 2, 1.5]))], "up", mode="cubic")
    picked = b.node("GatherND", [up, b.const("i", _i64([0, 1, 2], [0, 2, -1]))], "pick")
    module = TorchGraph.from_model(ir.serde.deserialize_model(_model(b, [picked])))
    x = torch.randn(1, 2, 5, 4)

    module(x).square().sum().backward()
    grad = module.get_parameter(module.parameter_names["w"]).grad
    assert grad is not None and torch.count_nonzero(grad) > 0
    # the input gradient, through F.pad's asymmetric padding included, is the numerical one
    module.double()
    assert torch.autograd.gradcheck(module, (x.double().requires_grad_(),))


def test_parameters_are_the_weights_and_statistics_stay_buffers(tmp_path):
    model, _ = G.load(G.conv_bn_relu_chain(), tmp_path)
    module = TorchGraph.from_model(model)
    assert set(module.parameter_names) == {
        "conv1.weight", "conv2.weight", "conv2.bias", "bn1.weight", "bn1.bias", "bn2.weight",
        "bn2.bias", "fc.weight", "fc.bias"}
    buffers = {name for name, _ in module.named_buffers()}
    assert {"t_bn1_running_mean", "t_bn1_running_var"} <= buffers
    assert all("." not in name for name, _ in module.named_parameters())
    assert module.input_names == ["image"] and module.output_names == ["logits"]


def test_train_mode_computes_the_inference_function(tmp_path):
    model, _ = G.load(G.conv_bn_relu_chain(), tmp_path)
    module = TorchGraph.from_model(model)
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(module.train()(x), module.eval()(x))


def test_write_back_untouched_is_the_original_and_a_change_reaches_ort(tmp_path):
    model, _ = G.load(G.residual_identity(), tmp_path)
    module = TorchGraph.from_model(model)
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    assert G.proto_bytes(module.write_back(model)) == G.proto_bytes(model)

    before = G.run(model, x)[0]
    with torch.no_grad():
        for param in module.parameters():
            param.mul_(1.1)
    written = module.write_back(model)
    assert G.proto_bytes(model) != G.proto_bytes(written)
    after = G.run(written, x)[0]
    assert not np.allclose(before, after, rtol=1e-3)
    with torch.no_grad():
        np.testing.assert_allclose(module(torch.from_numpy(x)).numpy(), after, rtol=1e-4, atol=1e-5)


# --- torchvision exports -----------------------------------------------------------------------

ZOO = [("resnet18", "dynamo"), ("resnet18", "torchscript"), ("mobilenet_v3_small", "dynamo"),
       ("mobilenet_v3_small", "torchscript"), ("shufflenet_v2_x0_5", "torchscript"),
       ("squeezenet1_0", "dynamo")]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("arch,exporter", ZOO)
def test_torchvision_exports_match_ort_and_pass_gradients(arch, exporter, tmp_path):
    path = export_architecture(arch, tmp_path / "m.onnx",
                               ExportOptions(input_shape=(1, 3, 64, 64), exporter=exporter))
    model = load_model(path)
    module = TorchGraph.from_model(model)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, 64, 64)).astype(np.float32)
    expected = G.run(model, x)[0]
    got = module(torch.from_numpy(x))
    scale = np.abs(expected).max()
    assert np.abs(got.detach().numpy() - expected).max() <= 1e-4 * scale

    # exported at batch 1, run at batch 3: each row is what the row alone gives
    batch = np.concatenate([x, rng.standard_normal((2, 3, 64, 64)).astype(np.float32)])
    with torch.no_grad():
        rows = module(torch.from_numpy(batch)).numpy()
    assert np.abs(rows[0] - expected[0]).max() <= 1e-4 * scale

    got.square().mean().backward()
    convs = [n for n in model.graph if n.op_type == "Conv"]
    for node in convs:
        grad = module.get_parameter(module.parameter_names[node.inputs[1].name]).grad
        assert grad is not None and torch.count_nonzero(grad) > 0, node.name


# --- transformers exported at batch 1 ------------------------------------------------------------

@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
@pytest.mark.parametrize("sdpa, torchvision", [(False, False), (True, False), (False, True)],
                         ids=["softmax", "sdpa", "multihead_attention"])
def test_a_transformer_exported_at_batch_1_runs_any_batch(tmp_path, dynamo, sdpa, torchvision):
    """The class token joins the patch tokens at batch 1 and attention folds the batch into the
    heads (Reshape to (1, heads, ...) after a (batch x heads, ...) matmul): each row of a batch
    of 3 is what the row alone gives, and so is its gradient."""
    from tests.transformers import Shape, tiny_vit, torchvision_vit

    shape = Shape(heads=2, head_dim=4, sdpa=sdpa)
    module = torchvision_vit(heads=2, head_dim=4) if torchvision else tiny_vit(shape)
    path = G.export_module(module, tmp_path / "vit.onnx", input_shape=(1, 3, 16, 16), dynamo=dynamo)
    graph = TorchGraph.from_model(load_model(path))
    rng = np.random.default_rng(0)
    batch = torch.from_numpy(rng.standard_normal((3, 3, 16, 16)).astype(np.float32))
    rows = graph(batch)
    for i in range(3):
        alone = graph(batch[i:i + 1])
        assert torch.allclose(rows[i], alone[0], atol=1e-5), i
    rows[1].square().sum().backward()
    grads = [p.grad for p in graph.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
