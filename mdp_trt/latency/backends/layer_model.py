"""One-layer ONNX models: the thing a bilayer latency table cell times.

``build_layer_model(sig, out_channels, in_channels)`` reproduces the layer ``sig`` at the given
widths with everything that changes its cost on a runtime: the real input resolution and batch,
kernel/strides/pads/dilations/group, the bias, and the activation that a runtime fuses into it.

Cases:
- Conv (1-D/2-D/3-D by ``len(input_hw)``): input ``N x in x *input_hw``, weight
  ``out x in/group x *kernel``. Depthwise (``sig.depthwise``): ``out == in == group`` at every
  width. Other grouped convs keep their group count, so both widths must be multiples of it.
- Gemm: input ``N x in``, weight ``out x in`` with ``transB=1``, bias ``C`` of ``out``.
- MatMul: input ``N x *input_hw x in`` (``input_hw`` holds any middle dims, e.g. tokens), weight
  ``in x out``; a bias, if the layer has one, is an ``Add`` after it (what exporters emit).

Weights come from a seeded generator (one random block, tiled) so a model is reproducible;
their values do not affect dense-kernel latency.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from mdp_trt.errors import InputError, UnsupportedGraph
from mdp_trt.signature import LayerSignature

__all__ = ["build_layer_model", "layer_input_shape", "layer_output_shape", "ACTIVATIONS", "OPSET", "IR_VERSION"]

log = logging.getLogger(__name__)

# Gelu needs opset 20; IR 10 is what every supported onnxruntime (>= 1.18) reads.
OPSET = 20
IR_VERSION = 10

# Unary activations that take no required attribute or extra input, so the op alone reproduces
# the epilogue a runtime fuses. Anything else is refused rather than silently dropped.
ACTIVATIONS = frozenset({
    "Relu", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Elu", "Selu",
    "Softplus", "Gelu", "Mish", "Clip", "PRelu",
})

_DTYPES = {"float32": (TensorProto.FLOAT, np.float32), "float16": (TensorProto.FLOAT16, np.float16)}


def _dtype(sig: LayerSignature) -> tuple[int, type]:
    try:
        return _DTYPES[sig.dtype]
    except KeyError:
        raise InputError(
            f"layer signature dtype {sig.dtype!r} is not supported by the one-layer benchmark; "
            f"supported: {', '.join(sorted(_DTYPES))}"
        ) from None


def _check_widths(sig: LayerSignature, out_channels: int, in_channels: int) -> None:
    if not (1 <= out_channels <= sig.out_channels and 1 <= in_channels <= sig.in_channels):
        raise ValueError(
            f"widths out={out_channels}, in={in_channels} outside the layer's "
            f"1..{sig.out_channels} x 1..{sig.in_channels} ({sig.op_type})"
        )
    if sig.depthwise and out_channels != in_channels:
        raise ValueError(
            f"a depthwise conv has equal input and output widths, got out={out_channels}, "
            f"in={in_channels}"
        )


def _conv_group(sig: LayerSignature, out_channels: int, in_channels: int) -> int:
    if sig.depthwise:
        return out_channels
    group = sig.conv_group
    if out_channels % group or in_channels % group:
        raise InputError(
            f"grouped Conv (group={group}) cannot be timed at out={out_channels}, "
            f"in={in_channels}: both widths must be multiples of the group; use a group size "
            f"that is a multiple of {group} or leave this group unpruned"
        )
    return group


def layer_input_shape(sig: LayerSignature, in_channels: int) -> tuple[int, ...]:
    """Shape of the one-layer model's input at width ``in_channels``."""
    if sig.op_type == "Conv":
        if not sig.input_hw:
            raise InputError("Conv layer signature has no input_hw: the analysis must record the "
                             "layer's input spatial size")
        return (sig.batch, in_channels, *sig.input_hw)
    if sig.op_type == "Gemm":
        return (sig.batch, in_channels)
    if sig.op_type == "MatMul":
        return (sig.batch, *sig.input_hw, in_channels)
    raise UnsupportedGraph(f"no one-layer benchmark for op {sig.op_type!r}; supported: Conv, Gemm, "
                           "MatMul", op_type=sig.op_type)


# Dense kernels take the same time whatever the weight values, but drawing millions of normal
# samples per cell would cost more than timing the cell: tile one seeded block instead.
_RANDOM_BLOCK = 4099  # prime, so the tiling does not line up with channel strides


def layer_output_shape(sig: LayerSignature, out_channels: int) -> tuple[int, ...]:
    """Shape of the one-layer model's output at width ``out_channels`` (Conv: ONNX's
    ``floor((size + pads - dilation * (kernel - 1) - 1) / stride) + 1`` per spatial axis; with
    an attention core, its merged heads: one copy's width)."""
    if sig.attention:
        return (*layer_input_shape(sig, 1)[:-1], out_channels // sig.attention[2])
    if sig.op_type != "Conv":
        return (*layer_input_shape(sig, 1)[:-1], out_channels)
    rank = len(sig.input_hw)
    strides = sig.strides or (1,) * rank
    pads = sig.pads or (0,) * (2 * rank)
    dilations = sig.dilations or (1,) * rank
    spatial = tuple(
        (size + pads[a] + pads[a + rank] - dilations[a] * (sig.kernel[a] - 1) - 1) // strides[a] + 1
        for a, size in enumerate(sig.input_hw))
    return (sig.batch, out_channels, *spatial)


def _attention_core(sig: LayerSignature, out_channels: int, source: str, target: str,
                    inits: list) -> list[onnx.NodeProto]:
    """Nodes of the attention core that ``source`` (rows = batch x tokens, ``out_channels`` =
    copies x heads x head width) opens, as the exporters write it, merged heads in ``target``."""
    tokens, width, copies = sig.attention
    if out_channels % (copies * width) or sig.batch % tokens:
        raise ValueError(f"width {out_channels} is not {copies} copies of whole heads of {width}, "
                         f"or {sig.batch} rows not whole sequences of {tokens} ({sig.key()})")
    heads, sequences = out_channels // (copies * width), sig.batch // tokens

    def const(name: str, values) -> str:
        inits.append(numpy_helper.from_array(np.asarray(values), name))
        return name

    split = [copies, heads, width] if copies > 1 else [heads, width]
    nodes = [helper.make_node("Reshape", [source, const("split_shape", [sequences, tokens, *split])], ["heads"]),
             helper.make_node("Transpose", ["heads"], ["qkv"],
                              perm=[2, 0, 3, 1, 4] if copies > 1 else [0, 2, 1, 3])]
    copy = ["qkv"]  # one copy (separate projections cost alike): it stands for q, k and v
    if copies > 1:
        copy = [f"copy{i}" for i in range(copies)]
        nodes.append(helper.make_node("Split", ["qkv", const("ones", np.ones(copies, np.int64))],
                                      [f"part{i}" for i in range(copies)], axis=0))
        nodes += [helper.make_node("Squeeze", [f"part{i}", const(f"axis{i}", [0])], [name])
                  for i, name in enumerate(copy)]
    q, k, v = copy[0], copy[min(1, copies - 1)], copy[-1]
    scale = const("scale", np.asarray(width ** -0.5, dtype=np.dtype(sig.dtype)))
    nodes += [
        helper.make_node("Mul", [q, scale], ["q_scaled"]),
        helper.make_node("Transpose", [k], ["k_t"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["q_scaled", "k_t"], ["scores"]),
        helper.make_node("Softmax", ["scores"], ["weights"], axis=-1),
        helper.make_node("MatMul", ["weights", v], ["mixed"]),
        helper.make_node("Transpose", ["mixed"], ["merged"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["merged", const("merge_shape", [sig.batch, heads * width])], [target]),
    ]
    return nodes


def _initializer(name: str, shape: tuple[int, ...], rng: np.random.Generator, np_dtype,
                 scale: float) -> onnx.TensorProto:
    size = int(np.prod(shape))
    block = rng.standard_normal(min(size, _RANDOM_BLOCK), dtype=np.float32) * np.float32(scale)
    values = np.resize(block, size).reshape(shape).astype(np_dtype, copy=False)
    return numpy_helper.from_array(values, name)


def build_layer_model(sig: LayerSignature, out_channels: int, in_channels: int, *,
                      seed: int = 0) -> onnx.ModelProto:
    """A one-layer model (input ``x``, output ``y``) for ``sig`` at the given widths.

    Raises ValueError for widths outside ``1..full`` (a caller bug), InputError/UnsupportedGraph
    for a signature the benchmark cannot reproduce (the message says why).
    """
    _check_widths(sig, out_channels, in_channels)
    elem, np_dtype = _dtype(sig)
    rng = np.random.default_rng(seed)
    x_shape = layer_input_shape(sig, in_channels)
    if sig.op_type == "Conv" and not sig.kernel:
        raise InputError("Conv layer signature has no kernel shape")
    y_shape = layer_output_shape(sig, out_channels)
    if min(y_shape) < 1:
        raise InputError(f"layer signature gives an empty output {y_shape}: kernel "
                         f"{sig.kernel} does not fit the input {sig.input_hw} ({sig.key()})")
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    if sig.op_type == "Conv":
        group = _conv_group(sig, out_channels, in_channels)
        rank = len(sig.input_hw)
        w_shape = (out_channels, in_channels // group, *sig.kernel)
        fan_in = int(np.prod(w_shape[1:]))
        inits.append(_initializer("W", w_shape, rng, np_dtype, 1.0 / np.sqrt(fan_in)))
        inputs = ["x", "W"]
        if sig.bias:
            inits.append(_initializer("B", (out_channels,), rng, np_dtype, 0.1))
            inputs.append("B")
        nodes.append(helper.make_node(
            "Conv", inputs, ["z"], name="layer",
            kernel_shape=list(sig.kernel),
            strides=list(sig.strides or (1,) * rank),
            pads=list(sig.pads or (0,) * (2 * rank)),
            dilations=list(sig.dilations or (1,) * rank),
            group=group,
        ))
    elif sig.op_type == "Gemm":
        inits.append(_initializer("W", (out_channels, in_channels), rng, np_dtype,
                                  1.0 / np.sqrt(in_channels)))
        inputs = ["x", "W"]
        if sig.bias:
            inits.append(_initializer("B", (out_channels,), rng, np_dtype, 0.1))
            inputs.append("B")
        nodes.append(helper.make_node("Gemm", inputs, ["z"], name="layer", transB=1))
    else:  # MatMul (layer_input_shape already refused anything else)
        inits.append(_initializer("W", (in_channels, out_channels), rng, np_dtype,
                                  1.0 / np.sqrt(in_channels)))
        if sig.bias:
            inits.append(_initializer("B", (out_channels,), rng, np_dtype, 0.1))
            nodes.append(helper.make_node("MatMul", ["x", "W"], ["mm"], name="layer"))
            nodes.append(helper.make_node("Add", ["mm", "B"], ["z"], name="bias"))
        else:
            nodes.append(helper.make_node("MatMul", ["x", "W"], ["z"], name="layer"))
    if sig.attention:
        # The core after the projection (whose activation, if any, is never fused before one).
        nodes[-1].output[0] = "projected"
        nodes.extend(_attention_core(sig, out_channels, "projected", "y", inits))
    elif sig.activation is None:
        nodes[-1].output[0] = "y"
    elif sig.activation in ACTIVATIONS:
        act_inputs = ["z"]
        if sig.activation == "PRelu":
            # Per-channel slope, broadcast on the channel axis (axis 1 for Conv, last otherwise).
            slope_shape = ((out_channels,) + (1,) * len(sig.input_hw) if sig.op_type == "Conv"
                           else (out_channels,))
            inits.append(_initializer("slope", slope_shape, rng, np_dtype, 0.1))
            act_inputs.append("slope")
        nodes.append(helper.make_node(sig.activation, act_inputs, ["y"], name="activation"))
    else:
        raise UnsupportedGraph(
            f"activation {sig.activation!r} after the layer is not reproducible by the one-layer "
            f"benchmark; supported: {', '.join(sorted(ACTIVATIONS))}", op_type=sig.activation)
    graph = helper.make_graph(
        nodes, f"{sig.op_type.lower()}_{out_channels}x{in_channels}",
        [helper.make_tensor_value_info("x", elem, list(x_shape))],
        [helper.make_tensor_value_info("y", elem, list(y_shape))],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="mdp-trt.latency")
    model.ir_version = IR_VERSION
    # No checker/shape inference here: each serialises the weights, which for a 512x512 3x3 conv
    # costs a third of a cell's timing budget; the runtime validates the model when it loads it,
    # and the tests run the full checker on every kind of model built here.
    return model
