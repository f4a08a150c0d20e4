"""Shared test material: tiny hand-built analyses, a deterministic fake latency backend, one
whose machine load is scripted per measurement (drift guard tests) and a CPU-like one whose
latency is smooth in the widths (fitted surfaces, adaptive cells)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from mdp_trt.analysis import Analysis, ChannelGroup, Layer
from mdp_trt.latency.tables.drift import REFERENCE
from mdp_trt.latency.protocol import BackendBase, DeviceFingerprint, Measurement
from mdp_trt.signature import LayerSignature


def conv_sig(out_ch: int, in_ch: int, hw: int, *, k: int = 3, stride: int = 1,
             group: int = 1, activation: str | None = "Relu", bias: bool = True) -> LayerSignature:
    pad = k // 2
    return LayerSignature("Conv", out_ch, in_ch, kernel=(k, k), strides=(stride, stride),
                          pads=(pad,) * 4, dilations=(1, 1), conv_group=group, input_hw=(hw, hw),
                          bias=bias, activation=activation)


def fake_latency(sig: LayerSignature, out_channels: int, in_channels: int) -> float:
    """Distinct per (signature, widths): lets tests check which cell went where."""
    per_sig = 1.0 + (sum(map(ord, sig.key())) % 97) / 97.0
    return per_sig * (out_channels * 1000 + in_channels) / 1000.0


class FakeBackend(BackendBase):
    """Deterministic latencies; counts measured cells; can fail after ``fail_after`` cells."""

    name = "fake"

    def __init__(self, *, threads: int = 1, fail_after: int | None = None,
                 error: type[BaseException] = KeyboardInterrupt) -> None:
        super().__init__()
        self.threads = threads
        self.fail_after = fail_after
        self.error = error
        self.calls: list[tuple[LayerSignature, int, int]] = []
        self.activations = 0

    def available(self) -> str | None:
        return None

    def _activate_impl(self) -> None:
        self.activations += 1

    def fingerprint(self) -> DeviceFingerprint:
        return DeviceFingerprint("fake", "test device, 1 core", "fake-runtime", "0.0",
                                 self.threads, "fp32")

    def measure_layer(self, sig: LayerSignature, out_channels: int, in_channels: int) -> Measurement:
        self._require_active()
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise self.error()
        self.calls.append((sig, out_channels, in_channels))
        value = fake_latency(sig, out_channels, in_channels)
        return Measurement(value, 0.01, 5, value * 0.99, value * 1.01)

    def measure_model(self, path: str | Path, *, batch: int | None = None) -> Measurement:
        self._require_active()
        return Measurement(2.0, 0.1, 30, 1.9, 2.1)


class LoadedBackend(BackendBase):
    """Cell (sig, out, in) takes ``out / 10`` ms, the reference 1 ms, both times ``load``:
    ``load_at(n)`` gives the machine's slowdown for the n-th measurement (1 = quiet)."""

    name = "loaded"

    def __init__(self, load_at) -> None:
        super().__init__()
        self.load_at = load_at
        self.calls: list[tuple[int, int]] = []  # (out, in); the reference is (0, 0)

    def fingerprint(self) -> DeviceFingerprint:
        return DeviceFingerprint("loaded", "test", "fake", "0", 1, "fp32")

    def measure_layer(self, sig, out_channels, in_channels) -> Measurement:
        ref = sig == REFERENCE
        self.calls.append((0, 0) if ref else (out_channels, in_channels))
        value = (1.0 if ref else out_channels / 10) * self.load_at(len(self.calls))
        return Measurement(value, 0.01, 5, value, value)


def small_analysis(hw: int = 16) -> Analysis:
    """stem conv (graph input) -> residual stage of two equal convs -> depthwise -> gemm head.

    Groups: 0 = stage (32 ch, shared by the stem and each block's conv2 through the Adds),
    1 and 4 = inside blocks 0 and 1 (32 ch), 2 = depthwise output (32 ch; its input is group 0,
    so off-diagonal cells are reachable), 3 = logits (10, unprunable).
    """
    stem = conv_sig(32, 3, hw, activation="Relu")
    inner = conv_sig(32, 32, hw, activation="Relu")
    outer = conv_sig(32, 32, hw, activation=None)
    dw = conv_sig(32, 32, hw, group=32, activation="Relu")
    head = LayerSignature("Gemm", 10, 32)
    layers = (
        Layer("stem", "Conv", "stem.w", 0, None, None, stem),
        Layer("b0.conv1", "Conv", "b0.conv1.w", 1, 0, 0, inner),
        Layer("b0.conv2", "Conv", "b0.conv2.w", 0, 1, 0, outer),
        Layer("b1.conv1", "Conv", "b1.conv1.w", 4, 0, 1, inner),  # same signature as b0.conv1
        Layer("b1.conv2", "Conv", "b1.conv2.w", 0, 4, 1, outer),
        Layer("dw", "Conv", "dw.w", 2, 0, None, dw),
        Layer("fc", "Gemm", "fc.w", 3, 2, None, head),
    )
    groups = (
        ChannelGroup(0, "stage", 32, ("stem", "b0.conv2", "b1.conv2"),
                     ("b0.conv1", "b1.conv1", "dw")),
        ChannelGroup(1, "b0.mid", 32, ("b0.conv1",), ("b0.conv2",)),
        ChannelGroup(2, "dw.out", 32, ("dw",), ("fc",)),
        ChannelGroup(3, "logits", 10, ("fc",), (), prunable=False, reason="graph output"),
        ChannelGroup(4, "b1.mid", 32, ("b1.conv1",), ("b1.conv2",)),
    )
    return Analysis("small.onnx", (1, 3, hw, hw), layers, groups, ())


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def smooth_latency(out_channels: int, in_channels: int) -> float:
    """A biquadratic latency (ms) in the widths, as a CPU conv's roughly is."""
    return 0.05 + 0.002 * (out_channels + in_channels) + 4e-4 * out_channels * in_channels \
        + 2e-6 * out_channels ** 2 * in_channels


class SmoothBackend(FakeBackend):
    """A CPU-like backend (smooth, monotone latency): cell (o, i) takes ``smooth_latency`` ms
    times a reproducible lognormal factor of sd ``noise`` per cell, each measurement reporting
    ``spread`` (a run's p10-p90 width over its median)."""

    smooth_latency = True
    monotone_latency = True

    def __init__(self, *, noise: float = 0.0, spread: float = 0.01, **kwargs) -> None:
        super().__init__(**kwargs)
        self.noise, self.spread = noise, spread

    def measure_layer(self, sig, out_channels, in_channels) -> Measurement:
        super().measure_layer(sig, out_channels, in_channels)  # counts the call
        rng = np.random.default_rng([out_channels, in_channels])
        value = smooth_latency(out_channels, in_channels) * float(np.exp(rng.normal(0, self.noise)))
        return Measurement(value, self.spread, 5, value, value)
