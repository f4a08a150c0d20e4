"""Latency of one conv layer against its output width, channel by channel: the staircase.

On a GPU, kernels tile the output channels, so latency stays flat across a tile and jumps at its
edge; a FLOPs- or channel-proportional model misses that, measured tables (at a group size that
matches the tile) do not. This sweeps ``out`` from ``--step`` to ``--out`` for a 3x3 conv at fixed
input width on any latency backend, prints every cell, the largest jump and how far the curve is
from proportional, and writes a PNG.

    .venv/bin/python benchmarks/staircase.py [--backend torch-cuda --precision fp16
        --channels-last] [--batch 32] [--in 256] [--out 512] [--step 8] [--hw 14]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from mdp_trt.latency.backends.registry import backend_options, get_backend
from mdp_trt.signature import LayerSignature


def sweep(args) -> list[dict]:
    sig = LayerSignature(op_type="Conv", out_channels=args.out, in_channels=args.in_channels,
                         kernel=(3, 3), strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1),
                         input_hw=(args.hw, args.hw), batch=args.batch, activation="Relu")
    options = backend_options(args.backend, threads=args.threads, precision=args.precision,
                              channels_last=args.channels_last)
    rows = []
    with get_backend(args.backend, **options) as backend:
        device = backend.fingerprint().device
        for out in range(args.step, args.out + 1, args.step):
            m = backend.measure_layer(sig, out, args.in_channels)
            rows.append({"out": out, "ms": m.median_ms, "spread": m.spread})
            print(f"  out {out:4d}: {m.median_ms:.4f} ms (spread {m.spread:.2f})", flush=True)
    print(f"device: {device}")
    return rows


def summarise(rows: list[dict]) -> dict:
    """Largest jump between neighbours and the mean gap to an out-proportional model."""
    outs = np.array([r["out"] for r in rows], dtype=float)
    ms = np.array([r["ms"] for r in rows])
    steps = np.diff(ms) / ms[:-1]
    proportional = ms[-1] * outs / outs[-1]
    return {"largest_jump": float(steps.max()), "at_out": int(outs[1:][steps.argmax()]),
            "mean_gap_to_proportional": float(np.mean(np.abs(proportional - ms) / ms))}


def plot(rows: list[dict], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.step([r["out"] for r in rows], [r["ms"] for r in rows], where="mid", marker=".")
    ax.set(xlabel="output channels", ylabel="ms", title=title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="ort-cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--precision", choices=["fp32", "fp16"], default="fp32")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--in", dest="in_channels", type=int, default=256)
    parser.add_argument("--out", type=int, default=512)
    parser.add_argument("--step", type=int, default=8)
    parser.add_argument("--hw", type=int, default=14)
    parser.add_argument("--png", type=Path, default=Path("staircase.png"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    rows = sweep(args)
    summary = summarise(rows)
    print(f"largest jump {100 * summary['largest_jump']:.1f}% at out={summary['at_out']}; "
          f"mean gap to an out-proportional model {100 * summary['mean_gap_to_proportional']:.1f}%")
    title = (f"3x3 conv, in={args.in_channels}, {args.hw}x{args.hw}, batch {args.batch}, "
             f"{args.backend} {args.precision}")
    plot(rows, title, args.png)
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"png": str(args.png),
                                                              "json": str(args.json)},
                                         "summary": summary, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
