"""An independent re-timing of pruned models against their original (issue: results you can
trust on a busy machine).

It shares no timing code with mdp-trt: plain ``onnxruntime.InferenceSession.run`` on numpy
inputs, as a user's script calls it, timed with ``time.perf_counter``. The models are timed in
alternating chunks of about ``--chunk-ms`` each (the order flips every pair), and each chunk's
figure is its wall time divided by its runs, so a slow spell of the machine (or a time slice
taken by another process) counts in every model's figure as it comes. The ratio of each pruned
model to the original is the median of the per-pair ratios, with a 95% confidence interval for
that median from the order statistics of the pairs (distribution-free).

    .venv/bin/python benchmarks/retime.py ORIGINAL.onnx PRUNED.onnx [MORE.onnx ...]
        [--threads 1] [--seconds 20] [--chunk-ms 50] [--json OUT.json]

Prints one line per pruned model: ``ratio 0.512 [0.505, 0.519] (n pairs)``, and the median
per-run milliseconds of each model.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16,
           "tensor(double)": np.float64, "tensor(int64)": np.int64, "tensor(int32)": np.int32}


def session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), sess_options=options,
                                providers=["CPUExecutionProvider"])


def feeds(sess: ort.InferenceSession, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    result = {}
    for spec in sess.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in spec.shape]
        result[spec.name] = rng.standard_normal(shape).astype(_DTYPES[spec.type])
    return result


def chunk(sess, inputs, runs: int) -> float:
    """Milliseconds per run over ``runs`` back-to-back calls (wall time / runs)."""
    start = time.perf_counter()
    for _ in range(runs):
        sess.run(None, inputs)
    return (time.perf_counter() - start) * 1000.0 / runs


def median_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """A distribution-free confidence interval for the median: order statistics k and n-1-k
    with binomial coverage >= ``level`` (the whole range for fewer than 6 values)."""
    data = np.sort(values)
    n = len(data)
    # the largest k with P(Binomial(n, 1/2) <= k) <= (1 - level) / 2: [x_(k), x_(n-1-k)], 0-based
    tail, k = 0.0, -1
    while tail + math.comb(n, k + 1) / 2 ** n <= (1 - level) / 2:
        k += 1
        tail += math.comb(n, k) / 2 ** n
    if k < 0:
        return float(data[0]), float(data[-1])
    return float(data[k]), float(data[n - 1 - k])


def retime(paths: list[Path], *, threads: int, seconds: float, chunk_ms: float,
           seed: int = 0) -> dict:
    sessions = [session(p, threads) for p in paths]
    inputs = [feeds(s, seed) for s in sessions]
    estimates = []
    for sess, x in zip(sessions, inputs):
        for _ in range(3):
            sess.run(None, x)
        estimates.append(min(chunk(sess, x, 1) for _ in range(5)))
    runs = [max(1, math.ceil(chunk_ms / e)) for e in estimates]
    per_run: list[list[float]] = [[] for _ in paths]
    deadline = time.perf_counter() + seconds
    flip = False
    while time.perf_counter() < deadline or len(per_run[0]) < 6:
        order = list(range(len(paths)))
        for i in (reversed(order) if flip else order):
            sessions[i].run(None, inputs[i])  # untimed: the previous model's data left the cache
            per_run[i].append(chunk(sessions[i], inputs[i], runs[i]))
        flip = not flip
    base = np.asarray(per_run[0])
    rows = []
    for path, times in zip(paths[1:], per_run[1:]):
        ratios = np.asarray(times) / base
        low, high = median_interval(ratios)
        rows.append({"model": str(path), "ratio": float(np.median(ratios)), "ci95": [low, high],
                     "pairs": len(ratios), "median_ms": float(np.median(times))})
    return {"original": str(paths[0]), "original_median_ms": float(np.median(base)),
            "threads": threads, "seconds": seconds, "chunk_ms": chunk_ms, "models": rows,
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path, help="the original, then pruned models")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--chunk-ms", type=float, default=50.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if len(args.models) < 2:
        parser.error("give the original and at least one pruned model")
    result = retime(args.models, threads=args.threads, seconds=args.seconds,
                    chunk_ms=args.chunk_ms)
    print(f"{result['original']}: {result['original_median_ms']:.3f} ms per run (median chunk)")
    for row in result["models"]:
        low, high = row["ci95"]
        print(f"{row['model']}: {row['median_ms']:.3f} ms, ratio {row['ratio']:.4f} "
              f"[{low:.4f}, {high:.4f}] ({row['pairs']} pairs)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
