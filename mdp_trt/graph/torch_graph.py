"""An ONNX graph executed node by node with PyTorch ops, differentiably.

``TorchGraph.from_model(model)`` turns an onnx-ir model into a ``torch.nn.Module`` whose forward
computes what ONNX Runtime computes (to float rounding), so gradients (Taylor importance) and
training (fine-tuning) work on the ONNX file itself, and ``write_back`` returns the same graph
with the trained weights, without re-tracing or re-exporting anything.

What becomes what:
- float initializers that hold weights (more than one element, or a Conv/Gemm/MatMul/norm
  weight or bias) are ``nn.Parameter``s; other float constants (scalars such as an epsilon, BN
  running statistics) are buffers, so they move with ``.to(device)`` but are never trained;
- integer and boolean constants are shape arithmetic: they stay host-side tensors (not buffers),
  as do ``Shape`` results, so shape computations never touch the accelerator;
- inputs that must be Python values (Reshape's shape, Slice's starts, Pad's pads...) are read
  once at build time when constant, else converted from the computed tensor at run time.

The module always computes the graph's inference function: BatchNormalization uses its running
statistics and Dropout is the identity in ``train()`` mode too (fine-tuning keeps BN frozen).

A pruned model has a fixed batch dimension; a Reshape whose constant target starts with that
batch takes the running batch from its input's size instead (the input may carry it leading or
folded into another axis, as attention's batched matmuls do), and a Concat
(not over the batch) expands its batch-1 operands (constants such as a class token) to the
running batch, so batches of any size run through a model exported at batch 1.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import onnx_ir as ir
import torch
import torch.nn.functional as F
from torch import nn

from mdp_trt.errors import InputError, UnsupportedGraph
from mdp_trt.graph.constants import constant_array

__all__ = ["TorchGraph", "SUPPORTED_OPS"]

# (op type, input index) pairs that hold learnable weights even when they are a single number.
_WEIGHT_INPUTS = {("Conv", 1), ("Conv", 2), ("Gemm", 1), ("Gemm", 2), ("MatMul", 0),
                  ("MatMul", 1), ("BatchNormalization", 1), ("BatchNormalization", 2),
                  ("LayerNormalization", 1), ("LayerNormalization", 2)}
# BN running statistics are estimates, not weights: frozen like the rest of BN.
_STATISTICS_INPUTS = {("BatchNormalization", 3), ("BatchNormalization", 4)}


@dataclass(frozen=True)
class _Step:
    """One node ready to run: its op function, attributes as Python values, value names."""

    name: str
    op_type: str
    fn: Callable[..., Any]
    attrs: dict[str, Any]
    inputs: tuple[str | None, ...]  # None: an omitted optional input
    outputs: tuple[str, ...]  # "": an omitted optional output
    static: dict[int, Any]  # input index -> Python value known at build time
    dynamic_static: frozenset[int]  # input indices converted to Python values at run time
    exported_shape: tuple[int, ...] | None = None  # Reshape: its input's static shape

    def fail(self, message: str) -> UnsupportedGraph:
        return UnsupportedGraph(f"{message}; TorchGraph (taylor importance, finetune, torch "
                                "backends) cannot run this node", node=self.name, op_type=self.op_type)


@dataclass(frozen=True)
class _Op:
    fn: Callable[..., Any]
    static: frozenset[int]  # inputs needed as Python values (shapes, axes, pads, scalars)


_OPS: dict[str, _Op] = {}


def _op(*op_types: str, static: tuple[int, ...] = ()):
    def register(fn):
        for op_type in op_types:
            _OPS[op_type] = _Op(fn, frozenset(static))
        return fn
    return register


# --- ops ----------------------------------------------------------------------------------------
# Each takes the step and its inputs (tensors, or Python values at static positions; None for an
# omitted optional input) and returns a tensor or a tuple with one entry per node output.


def _pairs(pads: list[int]) -> list[int]:
    """ONNX pads [b1, b2, ..., e1, e2, ...] as F.pad's (last axis first) [b_n, e_n, ...]."""
    half = len(pads) // 2
    out: list[int] = []
    for axis in reversed(range(half)):
        out += [int(pads[axis]), int(pads[axis + half])]
    return out


def _spatial_pads(step: _Step, x, kernel: list[int], strides: list[int],
                  dilations: list[int]) -> list[int]:
    """The node's pads in ONNX layout [begins..., ends...], auto_pad resolved for input ``x``."""
    rank = len(kernel)
    auto_pad = step.attrs.get("auto_pad", "NOTSET")
    if auto_pad == "NOTSET":
        return list(step.attrs.get("pads", [0] * (2 * rank)))
    if auto_pad == "VALID":
        return [0] * (2 * rank)
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        raise step.fail(f"auto_pad={auto_pad} is not supported (NOTSET, VALID, SAME_UPPER and "
                        "SAME_LOWER are)")
    if any(d != 1 for d in dilations):
        # ONNX Runtime rejects dilated SAME Conv and sizes dilated SAME MaxPool against the spec
        raise step.fail(f"auto_pad={auto_pad} with dilations {dilations} is not supported "
                        "(runtimes disagree on it); export with explicit pads")
    return _same_pads(step, list(x.shape[2:]), kernel, strides)


def _same_pads(step: _Step, sizes: list[int], kernel: list[int], strides: list[int]) -> list[int]:
    """ONNX SAME padding: ceil(size / stride) outputs; an odd total puts the extra pixel at the
    end (SAME_UPPER) or at the start (SAME_LOWER)."""
    lower = step.attrs["auto_pad"] == "SAME_LOWER"
    begins, ends = [], []
    for size, k, stride in zip(sizes, kernel, strides):
        total = (-(-size // stride) - 1) * stride + k - size
        if total < 0 and step.op_type != "Conv":
            # a kernel shorter than its stride: ONNX Runtime's MaxPool rejects the negative pad
            # and its AveragePool crops the input by it, where Conv (and the spec's max(0, .))
            # pads nothing
            raise step.fail(f"auto_pad={step.attrs['auto_pad']} with kernel {kernel} shorter "
                            f"than strides {strides} on input {sizes} is not supported (runtimes "
                            "disagree on it)")
        total = max(total, 0)
        begin = (total + 1) // 2 if lower else total // 2
        begins.append(begin)
        ends.append(total - begin)
    return begins + ends


def _symmetric(pads: list[int]) -> list[int] | None:
    half = len(pads) // 2
    return pads[:half] if pads[:half] == pads[half:] else None


_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


@_op("Conv")
def _conv(step: _Step, x, w, b=None):
    rank = w.dim() - 2
    if rank not in _CONV:
        raise step.fail(f"{rank}-d convolution is not supported")
    strides = list(step.attrs.get("strides", [1] * rank))
    dilations = list(step.attrs.get("dilations", [1] * rank))
    pads = _spatial_pads(step, x, list(w.shape[2:]), strides, dilations)
    padding = _symmetric(pads)
    if padding is None:
        x, padding = F.pad(x, _pairs(pads)), [0] * rank
    return _CONV[rank](x, w, b, stride=strides, padding=padding, dilation=dilations,
                       groups=step.attrs.get("group", 1))


@_op("Gemm")
def _gemm(step: _Step, a, b, c=None):
    a = a.transpose(0, 1) if step.attrs.get("transA", 0) else a
    b = b.transpose(0, 1) if step.attrs.get("transB", 0) else b
    y = step.attrs.get("alpha", 1.0) * (a @ b)
    return y if c is None else y + step.attrs.get("beta", 1.0) * c


@_op("MatMul")
def _matmul(step: _Step, a, b):
    return torch.matmul(a, b)


def _div(a, b):
    # ONNX integer division truncates (shape arithmetic); float division is true division.
    if not (a.is_floating_point() or b.is_floating_point()):
        return torch.div(a, b, rounding_mode="trunc")
    return a / b


_BINARY = {"Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": _div, "Pow": torch.pow}


@_op(*_BINARY)
def _binary(step: _Step, a, b):
    if a.device != b.device:  # a host-side constant meeting a device tensor: move the constant
        a, b = (a.to(b.device), b) if a.device.type == "cpu" else (a, b.to(a.device))
    return _BINARY[step.op_type](a, b)


_UNARY = {"Relu": torch.relu, "Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "Erf": torch.erf,
          "Sqrt": torch.sqrt, "Identity": lambda x: x}


@_op(*_UNARY)
def _unary(step: _Step, x):
    return _UNARY[step.op_type](x)


@_op("Clip", static=(1, 2))
def _clip(step: _Step, x, low=None, high=None):
    # opset < 11 gives the bounds as attributes, later opsets as optional inputs
    low = step.attrs.get("min") if low is None else float(low)
    high = step.attrs.get("max") if high is None else float(high)
    return torch.clamp(x, low, high)


@_op("HardSigmoid")
def _hard_sigmoid(step: _Step, x):
    return torch.clamp(step.attrs.get("alpha", 0.2) * x + step.attrs.get("beta", 0.5), 0.0, 1.0)


@_op("HardSwish")
def _hard_swish(step: _Step, x):
    return F.hardswish(x)


@_op("Gelu")
def _gelu(step: _Step, x):
    return F.gelu(x, approximate=step.attrs.get("approximate", "none"))


@_op("Softmax")
def _softmax(step: _Step, x):
    return torch.softmax(x, dim=step.attrs.get("axis", -1))  # opset >= 13 semantics


@_op("BatchNormalization")
def _batch_norm(step: _Step, x, scale, bias, mean, var):
    if step.attrs.get("training_mode", 0) or len([o for o in step.outputs if o]) > 1:
        raise step.fail("training-mode BatchNormalization (running statistics outputs) is not "
                        "supported; export the model in eval mode")
    return F.batch_norm(x, mean, var, scale, bias, training=False,
                        eps=step.attrs.get("epsilon", 1e-5))


@_op("LayerNormalization")
def _layer_norm(step: _Step, x, scale, bias=None):
    axis = step.attrs.get("axis", -1) % x.dim()
    dims = tuple(range(axis, x.dim()))
    mean = x.mean(dim=dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)
    inv_std = torch.rsqrt(var + step.attrs.get("epsilon", 1e-5))
    y = (x - mean) * inv_std * scale
    y = y if bias is None else y + bias
    return (y, mean, inv_std)[:len(step.outputs)]


@_op("GlobalAveragePool")
def _global_average_pool(step: _Step, x):
    return x.mean(dim=tuple(range(2, x.dim())), keepdim=True)


_AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}
_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}


def _pool_args(step: _Step, x, dilations: list[int]):
    rank = x.dim() - 2
    kernel = list(step.attrs["kernel_shape"])
    strides = list(step.attrs.get("strides", [1] * rank))
    pads = _spatial_pads(step, x, kernel, strides, dilations)
    padding = _symmetric(pads)
    # torch pools pad symmetrically by at most half the kernel; anything else is padded first
    if padding is not None and any(p > k // 2 for p, k in zip(padding, kernel)):
        padding = None
    return kernel, strides, pads, padding


def _crop_padded_pool(step: _Step, y, x, kernel, strides, pads, dilations=None):
    """Drop windows that start in the end padding: ONNX never has them, but torch cannot tell
    padding we added from input (pools of an explicitly padded input, ceil_mode)."""
    if not step.attrs.get("ceil_mode", 0):
        return y
    rank = len(kernel)
    dilations = dilations or [1] * rank
    for axis in range(rank):
        size, begin, end = x.shape[2 + axis], pads[axis], pads[axis + rank]
        span = dilations[axis] * (kernel[axis] - 1) + 1
        out = -(-(size + begin + end - span) // strides[axis]) + 1
        if (out - 1) * strides[axis] >= size + begin:
            out -= 1
        y = y.narrow(2 + axis, 0, out)
    return y


@_op("AveragePool")
def _average_pool(step: _Step, x):
    rank = x.dim() - 2
    if any(d != 1 for d in step.attrs.get("dilations", [])):  # opset 19; torch has no such pool
        raise step.fail("dilated AveragePool is not supported")
    kernel, strides, pads, padding = _pool_args(step, x, [1] * rank)
    ceil_mode = bool(step.attrs.get("ceil_mode", 0))
    include_pad = bool(step.attrs.get("count_include_pad", 0))
    pool = _AVG_POOL[rank]
    if padding is not None:
        return pool(x, kernel, strides, padding, ceil_mode, include_pad)
    mean = pool(F.pad(x, _pairs(pads)), kernel, strides, 0, ceil_mode, True)
    if not include_pad:
        # the same pooling of a ones mask counts the real (unpadded) elements of each window
        ones = F.pad(torch.ones_like(x[:1, :1]), _pairs(pads))
        mean = mean / pool(ones, kernel, strides, 0, ceil_mode, True)
    return _crop_padded_pool(step, mean, x, kernel, strides, pads)


@_op("MaxPool")
def _max_pool(step: _Step, x):
    if len([o for o in step.outputs if o]) > 1:
        raise step.fail("MaxPool's Indices output is not supported")
    rank = x.dim() - 2
    dilations = list(step.attrs.get("dilations", [1] * rank))
    kernel, strides, pads, padding = _pool_args(step, x, dilations)
    ceil_mode = bool(step.attrs.get("ceil_mode", 0))
    if padding is not None:
        return _MAX_POOL[rank](x, kernel, strides, padding, dilations, ceil_mode)
    y = _MAX_POOL[rank](F.pad(x, _pairs(pads), value=-math.inf), kernel, strides, 0, dilations,
                        ceil_mode)
    return _crop_padded_pool(step, y, x, kernel, strides, pads, dilations)


@_op("Flatten")
def _flatten(step: _Step, x):
    axis = step.attrs.get("axis", 1)
    axis = axis + x.dim() if axis < 0 else axis
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


@_op("Reshape", static=(1,))
def _reshape(step: _Step, x, shape):
    shape = [int(d) for d in shape]
    if not step.attrs.get("allowzero", 0):
        shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return x.reshape(_running_target(shape, step.exported_shape, tuple(x.shape)))


class _AmbiguousBatch(Exception):
    """A Reshape cannot tell where the running batch goes (see ``_batch_axis``)."""


def _running_target(target: list[int], exported: tuple[int, ...] | None,
                    running: tuple[int, ...]) -> list[int]:
    """A constant Reshape target written for the exported batch, for the running one. The
    input axis that carries the batch (the one axis whose size differs from the export:
    leading, folded into the heads of attention's batched matmuls, or second in
    sequence-first attention) is k times larger, so the target axis holding it is too (a -1
    there takes it by itself)."""
    if exported is None or len(exported) != len(running):
        return target
    changed = [a for a, (e, r) in enumerate(zip(exported, running)) if e != r]
    if len(changed) != 1 or not exported[changed[0]] or running[changed[0]] % exported[changed[0]]:
        return target
    axis = changed[0]
    known = math.prod(d for d in target if d >= 0)
    if target.count(-1) > 1 or not known:
        return target
    resolved = [d if d >= 0 else math.prod(exported) // known for d in target]
    t = _batch_axis(resolved, math.prod(exported[:axis]), exported[axis])
    if t is None or target[t] < 0:
        return target
    return [*target[:t], target[t] * (running[axis] // exported[axis]), *target[t + 1:]]


def _batch_axis(target: list[int], offset: int, size: int) -> int | None:
    """The axis of ``target`` that holds an input axis of ``size`` starting after ``offset``
    outer elements: a size-1 axis within its span (the batch kept as an axis), else the
    outermost axis within it (a batch folded with heads is outermost), else the one axis that
    merges it with its neighbours. A size-1 input axis at a boundary between two target axes
    could have merged into either (sequence-first attention does both): ambiguous."""
    starts = [math.prod(target[:t]) for t in range(len(target))]
    ends = [start * d for start, d in zip(starts, target)]
    inside = [t for t in range(len(target)) if starts[t] >= offset and ends[t] <= offset * size]
    if inside:
        return next((t for t in inside if target[t] == 1), inside[0])
    covering = [t for t in range(len(target)) if starts[t] <= offset and ends[t] >= offset * size
                and ends[t] > offset]
    if size == 1 and any(end == offset for end in ends):
        raise _AmbiguousBatch
    return covering[0] if covering else None


@_op("Transpose")
def _transpose(step: _Step, x):
    return x.permute(step.attrs.get("perm", list(reversed(range(x.dim())))))


@_op("Concat")
def _concat(step: _Step, *xs):
    axis = step.attrs["axis"] % xs[0].dim()
    batches = {x.shape[0] for x in xs}
    if axis and len(batches) > 1 and 1 in batches:
        # A tensor exported at batch 1 without the input's batch (a ViT's class token joined to
        # the patch tokens) meets tensors at the running batch: it is the same for every image.
        batch = max(batches)
        xs = tuple(x.expand(batch, *x.shape[1:]) if x.shape[0] == 1 else x for x in xs)
    return torch.cat(xs, dim=axis)


@_op("Split", static=(1,))
def _split(step: _Step, x, split=None):
    axis = step.attrs.get("axis", 0)
    split = step.attrs.get("split") if split is None else split  # attribute before opset 13
    if split is None:
        parts = step.attrs.get("num_outputs", len(step.outputs))
        size = -(-x.shape[axis] // parts)  # ONNX: equal parts, the last one smaller
        split = [size] * (parts - 1) + [x.shape[axis] - size * (parts - 1)]
    return tuple(torch.split(x, [int(s) for s in split], dim=axis))


@_op("Slice", static=(1, 2, 3, 4))
def _slice(step: _Step, x, starts=None, ends=None, axes=None, steps=None):
    if starts is None:  # opset < 10: attributes
        starts, ends, axes = step.attrs["starts"], step.attrs["ends"], step.attrs.get("axes")
    axes = list(range(len(starts))) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    for start, end, axis, stride in zip(starts, ends, axes, steps):
        axis, start, end, stride = int(axis) % x.dim(), int(start), int(end), int(stride)
        dim = x.shape[axis]
        start, end = start + dim if start < 0 else start, end + dim if end < 0 else end
        if stride > 0:
            x = x[(slice(None),) * axis + (slice(min(max(start, 0), dim), min(max(end, 0), dim),
                                                 stride),)]
        else:  # torch slicing has no negative steps: gather the indices instead
            index = torch.arange(min(max(start, 0), dim - 1), min(max(end, -1), dim - 1), stride,
                                 device=x.device)
            x = x.index_select(axis, index)
    return x


def _axes(step: _Step, given) -> list[int] | None:
    axes = step.attrs.get("axes") if given is None else given  # attribute before opset 13/18
    return None if axes is None else [int(a) for a in axes]


@_op("Squeeze", static=(1,))
def _squeeze(step: _Step, x, axes=None):
    axes = _axes(step, axes)
    if axes is None:
        return x.squeeze()
    return x.squeeze(tuple(a % x.dim() for a in axes))


@_op("Unsqueeze", static=(1,))
def _unsqueeze(step: _Step, x, axes=None):
    axes = _axes(step, axes)
    rank = x.dim() + len(axes)
    for axis in sorted(a % rank for a in axes):
        x = x.unsqueeze(axis)
    return x


_PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}


@_op("Pad", static=(1, 2, 3))
def _pad(step: _Step, x, pads=None, value=None, axes=None):
    pads = step.attrs.get("pads") if pads is None else pads  # attribute before opset 11
    mode = step.attrs.get("mode", "constant")
    if mode not in _PAD_MODES:
        raise step.fail(f"Pad mode {mode!r} is not supported")
    pads = [int(p) for p in pads]
    if axes is not None:  # opset 18: pads for the listed axes only
        full = [0] * (2 * x.dim())
        for i, axis in enumerate(int(a) % x.dim() for a in axes):
            full[axis], full[axis + x.dim()] = pads[i], pads[i + len(axes)]
        pads = full
    if mode != "constant":
        # torch pads the spatial axes only in these modes
        if any(pads[i] or pads[i + x.dim()] for i in range(2)):
            raise step.fail(f"Pad mode {mode!r} on the batch or channel axis is not supported")
        return F.pad(x, _pairs(pads)[:2 * (x.dim() - 2)], mode=_PAD_MODES[mode])
    fill = 0.0 if value is None or np.size(value) == 0 else float(np.asarray(value).reshape(-1)[0])
    return F.pad(x, _pairs(pads), value=fill)


# (mode, coordinate_transformation_mode, nearest_mode) -> F.interpolate mode and align_corners.
# torch's bicubic, like ONNX cubic with exclude_outside=0, reads out-of-range neighbours from
# the edge (clamped indices) and does not clamp half-pixel source coordinates at 0.
_RESIZE = {
    ("nearest", "asymmetric", "floor"): ("nearest", None),
    ("nearest", "half_pixel", "round_prefer_ceil"): ("nearest-exact", None),
    ("linear", "half_pixel", None): ("linear", False),
    ("linear", "pytorch_half_pixel", None): ("linear", False),
    ("linear", "align_corners", None): ("linear", True),
    ("cubic", "half_pixel", None): ("cubic", False),
    ("cubic", "pytorch_half_pixel", None): ("cubic", False),
    ("cubic", "align_corners", None): ("cubic", True),
}
# (interpolation, number of spatial axes) -> F.interpolate mode; torch has no 1-d or 3-d cubic
_BY_RANK = {("linear", 1): "linear", ("linear", 2): "bilinear", ("linear", 3): "trilinear",
            ("cubic", 2): "bicubic"}
_TORCH_CUBIC_A = -0.75  # the fixed coefficient of torch's bicubic kernel


def _resize_mode(step: _Step, x) -> tuple[str, dict[str, bool]]:
    """F.interpolate's mode and align_corners for this Resize, or a refusal naming the gap."""
    mode = step.attrs.get("mode", "nearest")
    transform = step.attrs.get("coordinate_transformation_mode", "half_pixel")
    nearest = step.attrs.get("nearest_mode", "round_prefer_floor") if mode == "nearest" else None
    key = (mode, transform, nearest)
    if key not in _RESIZE or step.attrs.get("antialias", 0):
        raise step.fail(f"Resize mode={mode}, coordinate_transformation_mode={transform}"
                        f"{f', nearest_mode={nearest}' if nearest else ''}"
                        f"{', antialias' if step.attrs.get('antialias', 0) else ''} is not supported")
    if "axes" in step.attrs or step.attrs.get("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise step.fail("Resize axes and keep_aspect_ratio_policy are not supported")
    if mode == "cubic":
        if step.attrs.get("cubic_coeff_a", -0.75) != _TORCH_CUBIC_A:
            raise step.fail(f"cubic Resize with cubic_coeff_a={step.attrs['cubic_coeff_a']} is "
                            f"not supported (torch's bicubic uses {_TORCH_CUBIC_A})")
        if step.attrs.get("exclude_outside", 0):
            raise step.fail("cubic Resize with exclude_outside=1 is not supported (torch's "
                            "bicubic reads outside neighbours from the edge)")
    torch_mode, align = _RESIZE[key]
    if mode in ("linear", "cubic"):
        torch_mode = _BY_RANK.get((mode, x.dim() - 2))
        if torch_mode is None:
            raise step.fail(f"{mode} Resize of a rank-{x.dim()} tensor is not supported")
    return torch_mode, ({} if align is None else {"align_corners": align})


def _first_of_single_axes(x, out: list[int], factors: list[float] | None):
    """ONNX pytorch_half_pixel reads a length-1 output axis at source coordinate 0 where torch
    reads the middle of the input: keep only entry 0 of such axes (then resized 1 -> 1)."""
    for axis, size in enumerate(out):
        if size == 1:
            x = x.narrow(2 + axis, 0, 1)
            if factors is not None:
                factors[axis] = 1.0
    return x, factors


@_op("Resize", static=(1, 2, 3))
def _resize(step: _Step, x, roi=None, scales=None, sizes=None):
    torch_mode, kwargs = _resize_mode(step, x)
    factors = None
    if sizes is not None and len(sizes):
        out = [int(s) for s in list(sizes)[2:]]
    else:
        scales = [float(s) for s in scales]
        if scales[:2] != [1.0, 1.0]:
            raise step.fail("Resize of the batch or channel axis is not supported")
        factors = scales[2:]
        out = [math.floor(n * f) for n, f in zip(x.shape[2:], factors)]
    if step.attrs.get("coordinate_transformation_mode") == "pytorch_half_pixel":
        x, factors = _first_of_single_axes(x, out, factors)
    if factors is None:
        return F.interpolate(x, size=out, mode=torch_mode, **kwargs)
    # The given scales (not out/in) map coordinates in ONNX, as with recompute_scale_factor=False.
    return F.interpolate(x, scale_factor=factors, mode=torch_mode, recompute_scale_factor=False,
                         **kwargs)


@_op("ReduceMean", static=(1,))
def _reduce_mean(step: _Step, x, axes=None):
    axes = _axes(step, axes)
    keep = bool(step.attrs.get("keepdims", 1))
    if not axes:
        if step.attrs.get("noop_with_empty_axes", 0):
            return x
        axes = list(range(x.dim()))
    return x.mean(dim=tuple(a % x.dim() for a in axes), keepdim=keep)


@_op("Dropout")
def _dropout(step: _Step, x, ratio=None, training_mode=None):
    if len(step.outputs) > 1:
        return x, torch.ones_like(x, dtype=torch.bool)
    return x


@_op("Shape")
def _shape(step: _Step, x):
    dims = list(x.shape)
    start, end = step.attrs.get("start", 0), step.attrs.get("end", len(dims))
    return torch.tensor(dims[start:end], dtype=torch.int64)


@_op("Gather")
def _gather(step: _Step, data, indices):
    axis = step.attrs.get("axis", 0) % data.dim()
    indices = indices.to(data.device).long()
    indices = torch.where(indices < 0, indices + data.shape[axis], indices)
    picked = data.index_select(axis, indices.reshape(-1))
    return picked.reshape(data.shape[:axis] + indices.shape + data.shape[axis + 1:])


def _check_gather_nd(step: _Step, data, indices, batch_dims: int) -> None:
    if (not 0 <= batch_dims < min(data.dim(), indices.dim())
            or indices.shape[-1] > data.dim() - batch_dims):
        raise step.fail(f"GatherND with batch_dims={batch_dims}, data rank {data.dim()} and "
                        f"indices shape {tuple(indices.shape)} is not a valid GatherND")
    if indices.shape[:batch_dims] != data.shape[:batch_dims]:
        raise step.fail(f"GatherND batch axes differ: data {tuple(data.shape[:batch_dims])}, "
                        f"indices {tuple(indices.shape[:batch_dims])}")


@_op("GatherND")
def _gather_nd(step: _Step, data, indices):
    """ONNX GatherND: each row of the last indices axis addresses a slice of ``data`` (within
    its batch entry when batch_dims > 0); the result has shape
    indices.shape[:-1] + data.shape[batch_dims + indices.shape[-1]:]."""
    batch_dims = step.attrs.get("batch_dims", 0)
    _check_gather_nd(step, data, indices, batch_dims)
    # fold the batch axes into one, so one advanced-indexing call serves every batch_dims
    depth = indices.shape[-1]
    batch = math.prod(data.shape[:batch_dims])
    rows = math.prod(indices.shape[batch_dims:-1])
    flat_data = data.reshape((batch,) + data.shape[batch_dims:])
    index = indices.to(data.device).long().reshape(batch, rows, depth)
    sizes = torch.tensor(data.shape[batch_dims:batch_dims + depth], device=data.device)
    index = torch.where(index < 0, index + sizes, index)
    entry = torch.arange(batch, device=data.device).view(batch, 1).expand(batch, rows)
    picked = flat_data[(entry, *index.unbind(-1))]
    return picked.reshape(indices.shape[:-1] + data.shape[batch_dims + depth:])


_TORCH_DTYPES = {
    ir.DataType.FLOAT: torch.float32, ir.DataType.FLOAT16: torch.float16,
    ir.DataType.DOUBLE: torch.float64, ir.DataType.BFLOAT16: torch.bfloat16,
    ir.DataType.INT8: torch.int8, ir.DataType.INT16: torch.int16, ir.DataType.INT32: torch.int32,
    ir.DataType.INT64: torch.int64, ir.DataType.UINT8: torch.uint8, ir.DataType.BOOL: torch.bool,
}


@_op("Cast")
def _cast(step: _Step, x):
    target = ir.DataType(step.attrs["to"])
    if target not in _TORCH_DTYPES:
        raise step.fail(f"Cast to {target.name} is not supported")
    return x.to(_TORCH_DTYPES[target])


@_op("ConstantOfShape", static=(0,))
def _constant_of_shape(step: _Step, shape):
    value = step.attrs.get("value")
    fill = np.zeros(1, np.float32) if value is None else value.reshape(-1)
    return torch.full([int(d) for d in shape], fill[0].item(),
                      dtype=torch.from_numpy(fill).dtype)


SUPPORTED_OPS = frozenset(_OPS) | {"Constant"}


# --- building -----------------------------------------------------------------------------------


def _topological(graph: ir.Graph) -> list[ir.Node]:
    """The nodes in an order where every input is computed first (the file order if valid)."""
    available = {v.name for v in graph.inputs} | set(graph.initializers)
    pending, order = list(graph), []
    while pending:
        waiting = []
        for node in pending:  # one pass suffices when the file is sorted, as ONNX requires
            if all(v is None or v.name in available for v in node.inputs):
                order.append(node)
                available.update(v.name for v in node.outputs)
            else:
                waiting.append(node)
        if len(waiting) == len(pending):
            node = waiting[0]
            missing = [v.name for v in node.inputs if v is not None and v.name not in available]
            raise UnsupportedGraph(f"inputs {missing} are never computed (a cycle, or values "
                                   "from an outer scope)", node=node.name, op_type=node.op_type)
        pending = waiting
    return order


def _attr_value(attr: ir.Attr) -> Any:
    value = attr.value
    if isinstance(value, ir.TensorProtocol):
        return np.asarray(value.numpy())
    if isinstance(value, (list, tuple)):
        return list(value)
    return value


def _constant_node_array(node: ir.Node) -> np.ndarray:
    for key, attr in node.attributes.items():
        if key == "value":
            return np.asarray(attr.value.numpy())
        if key in ("value_float", "value_floats"):
            return np.asarray(attr.value, dtype=np.float32)
        if key in ("value_int", "value_ints"):
            return np.asarray(attr.value, dtype=np.int64)
    raise UnsupportedGraph("a Constant without a numeric value attribute", node=node.name,
                           op_type=node.op_type)


def _is_trainable(value: ir.Value, array: np.ndarray) -> bool:
    uses = [(use.node.op_type, use.idx) for use in value.uses()]
    if any(use in _STATISTICS_INPUTS for use in uses):
        return False
    return array.size > 1 or any(use in _WEIGHT_INPUTS for use in uses)


class _Names:
    """Module attribute names derived from ONNX names: only [A-Za-z0-9_], unique."""

    def __init__(self) -> None:
        self.taken: set[str] = set()

    def make(self, onnx_name: str) -> str:
        base = "t_" + re.sub(r"\W", "_", onnx_name)
        name, suffix = base, 1
        while name in self.taken:
            suffix += 1
            name = f"{base}_{suffix}"
        self.taken.add(name)
        return name


class TorchGraph(nn.Module):
    """An onnx-ir model as a differentiable PyTorch module (see the module docstring).

    ``input_names``/``output_names`` are the graph's; ``parameter_names`` maps each trainable
    initializer to its attribute name (``self.get_parameter(parameter_names[init])``).
    """

    def __init__(self) -> None:
        super().__init__()
        self.input_names: list[str] = []
        self.output_names: list[str] = []
        self.parameter_names: dict[str, str] = {}  # initializer -> nn.Parameter attribute
        self._buffer_names: dict[str, str] = {}  # float constant -> buffer attribute
        self._host: dict[str, torch.Tensor] = {}  # integer/bool constants (shape arithmetic)
        self._steps: list[_Step] = []
        self._release: list[tuple[str, ...]] = []  # values no later step reads, per step
        self._export_batch: int | None = None  # the inputs' exported batch
        # Set when a batch would make a Reshape ambiguous: the graph then runs sample by sample.
        self._per_sample = False

    @classmethod
    def from_model(cls, model: ir.Model) -> "TorchGraph":
        """Build the module; raises UnsupportedGraph naming the first node it cannot run."""
        graph = model.graph
        self = cls()
        names = _Names()
        inputs = [v for v in graph.inputs if v.name not in graph.initializers]
        self.input_names = [v.name for v in inputs]
        self.output_names = [v.name for v in graph.outputs]
        leading = inputs[0].shape[0] if inputs and inputs[0].shape is not None and len(inputs[0].shape) else None
        self._export_batch = leading if isinstance(leading, int) and leading > 0 else None
        nodes = _topological(graph)
        for node in nodes:
            if node.op_type not in SUPPORTED_OPS or node.domain not in ("", "ai.onnx"):
                raise UnsupportedGraph(
                    f"op {node.domain + '::' if node.domain else ''}{node.op_type} has no PyTorch "
                    "implementation in TorchGraph; taylor importance and finetune run the graph "
                    "in PyTorch and need every op supported (magnitude importance does not)",
                    node=node.name, op_type=node.op_type)

        constants = {name: v for name, v in graph.initializers.items() if v.const_value is not None}
        constants.update({node.outputs[0].name: node.outputs[0] for node in nodes
                          if node.op_type == "Constant"})
        needed_as_tensor = {v.name for node in nodes if node.op_type != "Constant"
                            for i, v in enumerate(node.inputs)
                            if v is not None and i not in _OPS[node.op_type].static}
        needed_as_tensor |= set(self.output_names)
        for name, value in constants.items():
            if name not in needed_as_tensor:
                continue
            producer = value.producer()
            array = (_constant_node_array(producer) if producer is not None
                     else np.asarray(value.const_value.numpy()))
            tensor = torch.from_numpy(np.array(array))  # a writable copy
            if not tensor.is_floating_point():
                self._host[name] = tensor
            elif producer is None and _is_trainable(value, array):
                self.parameter_names[name] = names.make(name)
                self.register_parameter(self.parameter_names[name], nn.Parameter(tensor))
            else:
                self._buffer_names[name] = names.make(name)
                self.register_buffer(self._buffer_names[name], tensor)

        for node in nodes:
            if node.op_type != "Constant":
                self._steps.append(self._step(node))
        self._release = _releases(self._steps, set(self.output_names))
        return self

    @staticmethod
    def _step(node: ir.Node) -> _Step:
        op = _OPS[node.op_type]
        static, dynamic = {}, set()
        for i, value in enumerate(node.inputs):
            if value is None or i not in op.static:
                continue
            array = constant_array(value)
            if array is None:
                dynamic.add(i)
            else:
                static[i] = array.tolist()
        shape = node.inputs[0].shape if node.op_type == "Reshape" and 1 in static else None
        exported = (tuple(shape) if shape is not None and all(isinstance(d, int) for d in shape)
                    else None)
        return _Step(
            name=node.name or node.outputs[0].name, op_type=node.op_type, fn=op.fn,
            attrs={k: _attr_value(a) for k, a in node.attributes.items()},
            inputs=tuple(None if v is None or v.name == "" else v.name for v in node.inputs),
            outputs=tuple(v.name for v in node.outputs), static=static,
            dynamic_static=frozenset(dynamic), exported_shape=exported)

    def forward(self, *inputs: torch.Tensor):
        if len(inputs) != len(self.input_names):
            raise InputError(f"the graph takes {len(self.input_names)} inputs "
                             f"({', '.join(self.input_names)}), got {len(inputs)}")
        if not self._per_sample:
            try:
                return self._run(inputs)
            except _AmbiguousBatch:
                self._per_sample = True  # the graph's shapes do not change: decided once
        return self._run_per_sample(inputs)

    def _run_per_sample(self, inputs: tuple[torch.Tensor, ...]):
        """The inputs in slices of the exported batch, run one by one, outputs joined."""
        size = self._export_batch or 1
        if inputs[0].shape[0] == size:
            return self._run(inputs)
        parts = [self._run(chunk) for chunk in zip(*(x.split(size) for x in inputs))]
        if isinstance(parts[0], tuple):
            return tuple(torch.cat(outs) for outs in zip(*parts))
        return torch.cat(parts)

    def _run(self, inputs: tuple[torch.Tensor, ...]):
        env: dict[str, Any] = dict(self._host)
        env.update({name: getattr(self, attr) for name, attr in self.parameter_names.items()})
        env.update({name: getattr(self, attr) for name, attr in self._buffer_names.items()})
        env.update(zip(self.input_names, inputs))
        for step, release in zip(self._steps, self._release):
            args = []
            for i, name in enumerate(step.inputs):
                if i in step.static:
                    args.append(step.static[i])
                elif name is None:
                    args.append(None)
                elif i in step.dynamic_static:
                    args.append(env[name].tolist())
                else:
                    args.append(env[name])
            result = step.fn(step, *args)
            results = result if isinstance(result, tuple) else (result,)
            for name, tensor in zip(step.outputs, results):
                if name:
                    env[name] = tensor
            for name in release:
                env.pop(name, None)
        outputs = tuple(env[name] for name in self.output_names)
        return outputs[0] if len(outputs) == 1 else outputs

    def write_back(self, model: ir.Model) -> ir.Model:
        """A copy of ``model`` whose initializers hold the current parameter values.

        ``model`` must be the model this module was built from (or one with the same
        initializers); it is not modified. Each initializer keeps its ONNX dtype.
        """
        copy = model.clone()
        for name, attr in self.parameter_names.items():
            value = copy.graph.initializers.get(name)
            param = getattr(self, attr)
            if value is None or value.const_value is None or tuple(value.shape) != tuple(param.shape):
                raise InputError(f"write_back: the model has no initializer {name!r} of shape "
                                 f"{tuple(param.shape)}; give the model TorchGraph was built from")
            dtype = value.const_value.dtype.numpy()
            array = param.detach().to("cpu", torch.float64).numpy().astype(dtype)
            value.const_value = ir.Tensor(np.ascontiguousarray(array), name=name)
        return copy


def _releases(steps: list[_Step], keep: set[str]) -> list[tuple[str, ...]]:
    """Per step, the computed values no later step reads (dropped to bound memory)."""
    last: dict[str, int] = {}
    for index, step in enumerate(steps):
        for name in step.inputs:
            if name is not None:
                last[name] = index
    produced = {name for step in steps for name in step.outputs}
    release: list[list[str]] = [[] for _ in steps]
    for name, index in last.items():
        if name in produced and name not in keep:
            release[index].append(name)
    return [tuple(r) for r in release]
