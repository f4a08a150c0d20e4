"""The ``torch-cpu`` and ``torch-cuda`` backends: layers and models run as PyTorch modules.

A table cell is a ``torch.nn`` module built from the ``LayerSignature`` (``layer_module``: a Conv
with the layer's groups, strides, dilations and padding, Linear for Gemm, a weight matmul for
MatMul, then the fused activation); a whole model runs through
``mdp_trt.graph.torch_graph.TorchGraph``. Both run in eval mode under ``torch.inference_mode`` in
``precision``, optionally channels-last. On CUDA, cuDNN autotuning is on and each run is captured
as one CUDA graph whose replay is timed with CUDA events (``cuda_graphs``): eager timings measure
PyTorch's launch loop, not the GPU (docs/latency-model-notes.md). On the CPU the host clock times
synchronous runs (``timing.time_runs``) with ``threads`` intra-op threads.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from mdp_trt.errors import InputError, UnsupportedGraph
from mdp_trt.latency.backends.gpu import DeviceClock, gpu_description, time_device_runs
from mdp_trt.latency.backends.host import cpu_description
from mdp_trt.latency.backends.inputs import model_inputs, random_feeds
from mdp_trt.latency.backends.layer_model import ACTIVATIONS, layer_input_shape
from mdp_trt.latency.backends.timing import (CELL_POLICY, MODEL_POLICY, TimingPolicy,
                                             time_interleaved, time_runs)
from mdp_trt.latency.protocol import BackendBase, Comparison, DeviceFingerprint, Measurement
from mdp_trt.signature import LayerSignature

__all__ = ["TorchBackend", "layer_module", "Device", "Precision"]

log = logging.getLogger(__name__)

Device = Literal["cpu", "cuda"]
Precision = Literal["fp32", "fp16"]


class _PRelu(nn.Module):
    """ONNX PRelu with one slope per channel on ``channel_axis`` (1 for Conv, -1 after a MatMul
    over tokens, where nn.PReLU's fixed axis 1 would be wrong)."""

    def __init__(self, channels: int, channel_axis: int) -> None:
        super().__init__()
        self.channel_axis = channel_axis
        self.slope = nn.Parameter(torch.full((channels,), 0.1))

    def forward(self, x):
        shape = [1] * x.dim()
        shape[self.channel_axis] = -1
        return torch.where(x >= 0, x, x * self.slope.view(shape))


class _HardSigmoid(nn.Module):
    """ONNX HardSigmoid with its default alpha 0.2 and beta 0.5 (torch's uses alpha 1/6)."""

    def forward(self, x):
        return torch.clamp(x * 0.2 + 0.5, 0.0, 1.0)


class _MatMul(nn.Module):
    """``x @ W (+ B)`` with ``W`` of ``in x out``: the ONNX MatMul (+ Add) layer."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(in_channels, out_channels) / in_channels ** 0.5)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def forward(self, x):
        y = torch.matmul(x, self.weight)
        return y if self.bias is None else y + self.bias


class _AttentionCore(nn.Module):
    """The attention core a projection's output opens (``LayerSignature.attention``): rows of
    ``tokens`` tokens, ``copies`` of q/k/v (one stands for all three when 1) in heads of
    ``width``, scaled dot product, heads merged."""

    def __init__(self, tokens: int, width: int, copies: int) -> None:
        super().__init__()
        self.tokens, self.width, self.copies = tokens, width, copies

    def forward(self, x):
        rows, channels = x.shape
        heads = channels // (self.copies * self.width)
        parts = x.reshape(rows // self.tokens, self.tokens, self.copies, heads, self.width)
        copies = parts.permute(2, 0, 3, 1, 4).unbind(0)
        q, k, v = copies[0], copies[min(1, self.copies - 1)], copies[-1]
        mixed = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return mixed.transpose(1, 2).reshape(rows, heads * self.width)


# ONNX defaults where they differ from torch's: a value never changes an elementwise kernel's
# cost, but the module should compute the op the table stands for.
_ACTIVATIONS = {
    "Relu": nn.ReLU, "Sigmoid": nn.Sigmoid, "Tanh": nn.Tanh, "Elu": nn.ELU, "Selu": nn.SELU,
    "Softplus": nn.Softplus, "Gelu": nn.GELU, "Mish": nn.Mish, "HardSwish": nn.Hardswish,
    "LeakyRelu": lambda: nn.LeakyReLU(0.01),
    "HardSigmoid": _HardSigmoid,
    # Clip without min/max inputs (as in the one-layer ONNX model) clamps to +-inf.
    "Clip": lambda: nn.Hardtanh(-math.inf, math.inf),
}
assert set(_ACTIVATIONS) | {"PRelu"} == ACTIVATIONS, "every one-layer activation needs a module"


def _conv(sig: LayerSignature, out_channels: int, in_channels: int) -> list[nn.Module]:
    rank = len(sig.input_hw)
    if not sig.kernel or rank not in (1, 2, 3):
        raise InputError(f"Conv layer signature needs a kernel and a 1-3-D input_hw, got kernel "
                         f"{sig.kernel}, input_hw {sig.input_hw} ({sig.key()})")
    if sig.depthwise:
        groups = out_channels
    else:
        groups = sig.conv_group
        if out_channels % groups or in_channels % groups:
            raise InputError(
                f"grouped Conv (group={groups}) cannot be built at out={out_channels}, "
                f"in={in_channels}: both widths must be multiples of the group")
    pads = tuple(sig.pads or (0,) * (2 * rank))
    begins, ends = pads[:rank], pads[rank:]
    conv_class = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[rank - 1]
    conv = conv_class(in_channels, out_channels, tuple(sig.kernel),
                      stride=tuple(sig.strides or (1,) * rank),
                      padding=begins if begins == ends else 0,
                      dilation=tuple(sig.dilations or (1,) * rank), groups=groups, bias=sig.bias)
    if begins == ends:
        return [conv]
    # torch pads symmetrically; ONNX SAME_UPPER-style pads differ per side. F.pad lists the
    # last axis first.
    torch_pads = [p for axis in reversed(range(rank)) for p in (begins[axis], ends[axis])]
    pad_class = (nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d)[rank - 1]
    return [pad_class(tuple(torch_pads), 0.0), conv]


def layer_module(sig: LayerSignature, out_channels: int, in_channels: int, *, seed: int = 0):
    """The layer ``sig`` at the given widths as an ``nn.Sequential`` (fp32, on the CPU, eval).

    Raises ValueError for widths outside ``1..full``, UnsupportedGraph for an op or activation
    that has no module here, InputError for a signature that cannot be built.
    """
    if not (1 <= out_channels <= sig.out_channels and 1 <= in_channels <= sig.in_channels):
        raise ValueError(f"widths out={out_channels}, in={in_channels} outside the layer's "
                         f"1..{sig.out_channels} x 1..{sig.in_channels} ({sig.op_type})")
    if sig.depthwise and out_channels != in_channels:
        raise ValueError(f"a depthwise conv has equal input and output widths, got "
                         f"out={out_channels}, in={in_channels}")
    if sig.activation is not None and sig.activation not in ACTIVATIONS:
        raise UnsupportedGraph(f"activation {sig.activation!r} after the layer has no torch "
                               f"module here; supported: {', '.join(sorted(ACTIVATIONS))}",
                               op_type=sig.activation)
    # The module's initial weights come from torch's global generator: fork it so that building
    # a cell neither depends on nor disturbs the caller's random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if sig.op_type == "Conv":
            parts = _conv(sig, out_channels, in_channels)
            channel_axis = 1
        elif sig.op_type == "Gemm":
            parts = [nn.Linear(in_channels, out_channels, bias=sig.bias)]
            channel_axis = -1
        elif sig.op_type == "MatMul":
            parts = [_MatMul(in_channels, out_channels, sig.bias)]
            channel_axis = -1
        else:
            raise UnsupportedGraph(f"no torch module for op {sig.op_type!r}; supported: Conv, "
                                   "Gemm, MatMul", op_type=sig.op_type)
        if sig.attention:
            parts.append(_AttentionCore(*sig.attention))
        elif sig.activation == "PRelu":
            parts.append(_PRelu(out_channels, channel_axis))
        elif sig.activation is not None:
            parts.append(_ACTIVATIONS[sig.activation]())
        return nn.Sequential(*parts).eval()


def _graphed(run):
    """``run`` captured as one CUDA graph, returned as its replay; ``run`` itself (timed with
    its launch overhead, and a warning) when it cannot be captured, e.g. an op that syncs with
    the host."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the capture stream, as capture requires
        for _ in range(3):
            run()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            run()
    except RuntimeError as exc:
        torch.cuda.synchronize()
        log.warning("cannot capture this run as a CUDA graph (%s); timing it eagerly, so the "
                    "figure includes PyTorch's per-op launch overhead", exc)
        return run
    return graph.replay


class TorchBackend(BackendBase):
    """Times layers as torch modules and whole models through TorchGraph, on CPU or CUDA."""

    def __init__(self, *, device: Device = "cpu", threads: int = 1, precision: Precision = "fp32",
                 channels_last: bool = False, cuda_graphs: bool = True,
                 cell_policy: TimingPolicy = CELL_POLICY,
                 model_policy: TimingPolicy = MODEL_POLICY, seed: int = 0) -> None:
        super().__init__(threads)
        if device not in ("cpu", "cuda"):
            raise InputError(f"torch backend device must be 'cpu' or 'cuda', got {device!r}")
        if precision not in ("fp32", "fp16"):
            raise InputError(f"`precision` must be fp32 or fp16 for torch, got {precision!r}",
                             parameters=("precision",))
        self.name = f"torch-{device}"
        # On a CPU a wider layer is never faster; GPU kernels tile channels (tables.profile_tables)
        self.monotone_latency = self.smooth_latency = device == "cpu"
        self.call_overhead = True  # a module call, or a CUDA graph's launch (tables/overhead.py)
        self.device = device
        self.precision = precision
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        self.channels_last = channels_last
        self.cuda_graphs = cuda_graphs and device == "cuda"
        self.cell_policy = cell_policy
        self.model_policy = model_policy
        self.seed = seed
        self._saved: tuple[int, bool] | None = None

    def available(self) -> str | None:
        if self.device == "cuda":
            if torch.version.cuda is None:
                return (f"this torch build ({torch.__version__}) has no CUDA support "
                        "(torch.version.cuda is None); install a CUDA wheel of torch on a machine "
                        "with an NVIDIA GPU")
            if not torch.cuda.is_available():
                return ("no CUDA device visible to torch (torch.cuda.is_available() is False); "
                        "check the NVIDIA driver and CUDA_VISIBLE_DEVICES")
        return None

    def _activate_impl(self) -> None:
        # Process-wide torch settings: restored when the outermost ``with`` exits.
        self._saved = (torch.get_num_threads(), torch.backends.cudnn.benchmark)
        torch.set_num_threads(self.threads)
        if self.device == "cuda":
            torch.backends.cudnn.benchmark = True

    def _deactivate_impl(self) -> None:
        threads, benchmark = self._saved
        torch.set_num_threads(threads)
        torch.backends.cudnn.benchmark = benchmark

    def fingerprint(self) -> DeviceFingerprint:
        if self.device == "cuda":
            device = gpu_description(torch.cuda.current_device())
            version = f"{torch.__version__}, cuDNN {torch.backends.cudnn.version()}"
        else:
            device = cpu_description()
            version = torch.__version__
        layout = "channels_last" if self.channels_last else "contiguous"
        launch = ", cuda graphs" if self.cuda_graphs else ""
        return DeviceFingerprint(backend=self.name, device=device,
                                 runtime=f"torch ({layout}{launch})",
                                 runtime_version=version, threads=self.threads,
                                 precision=self.precision)

    def _place(self, module: nn.Module) -> nn.Module:
        """``module`` on the device, in the precision and memory format of this backend."""
        module = module.to(device=self.device, dtype=self.dtype)
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)
        return module

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(array).to(self.device)
        if tensor.is_floating_point():
            tensor = tensor.to(self.dtype)
        if self.channels_last and tensor.dim() in (4, 5):
            tensor = tensor.contiguous(memory_format=torch.channels_last if tensor.dim() == 4
                                       else torch.channels_last_3d)
        return tensor

    def _time(self, run, policy: TimingPolicy) -> Measurement:
        with torch.inference_mode():
            if self.device == "cpu":
                return time_runs(run, policy)
            stream = torch.cuda.current_stream()
            if self.cuda_graphs:
                run = _graphed(run)
            clock = DeviceClock(new_event=lambda: torch.cuda.Event(enable_timing=True),
                                record=lambda event: event.record(stream),
                                elapsed_ms=lambda begin, end: begin.elapsed_time(end),
                                synchronize=stream.synchronize)
            return time_device_runs(run, clock, policy)

    def measure_layer(self, sig: LayerSignature, out_channels: int, in_channels: int) -> Measurement:
        self._require_active()
        module = self._place(layer_module(sig, out_channels, in_channels, seed=self.seed))
        shape = layer_input_shape(sig, in_channels)
        x = self._tensor(np.random.default_rng(self.seed).standard_normal(shape, dtype=np.float32))
        try:
            with torch.inference_mode():
                module(x)  # a kernel missing for this device/dtype fails here, not mid-timing
        except (RuntimeError, NotImplementedError) as exc:
            raise UnsupportedGraph(
                f"torch on {self.device} cannot run a one-layer {sig.op_type} at "
                f"out={out_channels}, in={in_channels} in {self.precision} ({sig.key()}): {exc}",
                op_type=sig.op_type) from exc
        return self._time(lambda: module(x), self.cell_policy)

    def measure_model(self, path: str | Path, *, batch: int | None = None) -> Measurement:
        self._require_active()
        return self._time(self._model_run(path, batch), self.model_policy)

    def measure_models(self, paths, *, batch: int | None = None) -> Comparison:
        if self.device != "cpu":
            return super().measure_models(paths, batch=batch)
        # other processes slow the CPU down between two timings: interleave, as ort-cpu does
        self._require_active()
        runs = [self._model_run(path, batch) for path in paths]
        with torch.inference_mode():
            return time_interleaved(runs, self.model_policy)

    def _model_run(self, path: str | Path, batch: int | None):
        """One call of the model at ``path`` (executed by TorchGraph) on bound inputs."""
        from mdp_trt.graph.model import load_model
        from mdp_trt.graph.torch_graph import TorchGraph

        inputs = model_inputs(path, batch=batch)
        model = load_model(path, inputs[0].shape if len(inputs) == 1 else None)
        module = self._place(TorchGraph.from_model(model).eval())
        feeds = random_feeds(inputs, seed=self.seed)
        tensors = [self._tensor(feeds[spec.name]) for spec in inputs]
        return lambda: module(*tensors)
