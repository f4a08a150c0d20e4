"""The latency backends this build provides, by CLI name.

``BACKENDS`` maps a name to a factory taking keyword options (``threads`` and backend-specific
ones); the CLI offers exactly its keys. Each factory imports its module lazily, so a backend
whose runtime is missing (onnxruntime-gpu, TensorRT, a GPU) costs nothing until it is asked for,
and then ``get_backend`` says what is missing. ``GPU_BACKENDS`` are those that need one GPU per
measuring process (the Ray runner reserves one per worker).
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable

from mdp_trt.errors import BackendUnavailable, InputError
from mdp_trt.latency.protocol import LatencyBackend

__all__ = ["BACKENDS", "DEFAULT_BACKEND", "GPU_BACKENDS", "get_backend", "backend_names",
           "backend_options", "cell_weights"]

log = logging.getLogger(__name__)


def _ort_cpu(**options) -> LatencyBackend:
    from mdp_trt.latency.backends.ort_cpu import OrtCpuBackend

    return OrtCpuBackend(**options)


def _ort_cuda(**options) -> LatencyBackend:
    from mdp_trt.latency.backends.ort_cuda import OrtCudaBackend

    return OrtCudaBackend(**options)


def _torch(device: str) -> Callable[..., LatencyBackend]:
    def factory(**options) -> LatencyBackend:
        from mdp_trt.latency.backends.torch_backend import TorchBackend

        return TorchBackend(device=device, **options)

    return factory


def _tensorrt(**options) -> LatencyBackend:
    from mdp_trt.latency.backends.tensorrt_backend import TensorRTBackend

    return TensorRTBackend(**options)


BACKENDS: dict[str, Callable[..., LatencyBackend]] = {
    "ort-cpu": _ort_cpu,
    "ort-cuda": _ort_cuda,
    "torch-cpu": _torch("cpu"),
    "torch-cuda": _torch("cuda"),
    "tensorrt": _tensorrt,
}
DEFAULT_BACKEND = "ort-cpu"
GPU_BACKENDS = frozenset({"ort-cuda", "torch-cuda", "tensorrt"})


def backend_names() -> list[str]:
    return sorted(BACKENDS)


def backend_options(name: str, *, threads: int = 1, precision: str = "fp32",
                    channels_last: bool = False, weights: str = "hot") -> dict:
    """The keyword options that the CLI's ``--threads/--precision/--channels-last/--weights``
    give backend ``name`` (each backend checks the precisions it supports; ``channels_last`` is
    a memory layout of the torch backends only and cold weights a CPU-cache protocol of ort-cpu
    only, so asking another backend for them is an input error). ``weights`` is "hot" or
    "cold" here ("auto" is resolved against the model first: ``cell_weights``)."""
    options: dict = {"threads": _usable_threads(threads)}
    if weights not in ("hot", "cold"):
        raise InputError(f"--weights {weights!r}: choose hot, cold or auto")
    if weights == "cold":
        if name != "ort-cpu":
            raise InputError(f"--weights cold is an ort-cpu option (weights streamed past the CPU's "
                             f"last-level cache); backend {name!r} times cells with hot weights")
        options["weights"] = "cold"
    if precision != "fp32":
        options["precision"] = precision
    if channels_last:
        if not name.startswith("torch-"):
            raise InputError(f"--channels-last is a torch-cpu/torch-cuda option; backend {name!r} "
                             "chooses its own memory layout")
        options["channels_last"] = True
    return options


def _usable_threads(threads: int) -> int:
    """``--threads`` capped to the cores this process may run on: more threads than cores only
    time-slice, and a thousand of them stall every timed run."""
    if threads < 1:
        raise InputError(f"--threads {threads} must be >= 1")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if threads > cores:
        _warn_capped(threads, cores)
        return cores
    return threads


@functools.cache  # once per run, though options are checked before a model loads and again after
def _warn_capped(threads: int, cores: int) -> None:
    log.warning("--threads %d: this machine lets mdp-trt use %d cores; using %d threads",
                threads, cores, cores)


def cell_weights(choice: str, backend: str, model_weight_bytes: int) -> str:
    """``--weights`` for one model: "auto" is "cold" on ort-cpu when the model's weights exceed
    the last-level cache (a whole-model run then streams every layer's weights from memory, as
    cold cells do), else "hot"; "hot"/"cold" stay as given."""
    if choice != "auto":
        return choice
    if backend != "ort-cpu":
        return "hot"
    from mdp_trt.latency.backends.ort_cpu import llc_bytes

    return "cold" if model_weight_bytes > llc_bytes() else "hot"


def get_backend(name: str, *, threads: int = 1, **options) -> LatencyBackend:
    """A usable backend named ``name`` (not yet active: use it in a ``with`` block).

    Raises BackendUnavailable when the name is unknown (the message lists the choices) or when
    the backend cannot run on this machine (the message says why and what to install).
    """
    try:
        factory = BACKENDS[name]
    except KeyError:
        raise BackendUnavailable(
            f"unknown latency backend {name!r}; choose one of: {', '.join(backend_names())} "
            "(--backend)"
        ) from None
    backend = factory(threads=threads, **options)
    reason = backend.available()
    if reason is not None:
        raise BackendUnavailable(f"latency backend {name!r} cannot run here: {reason}")
    return backend
