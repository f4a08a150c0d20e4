"""The latency backends this build provides, by CLI name, and the options each accepts.

``BACKENDS`` maps a name to a ``BackendSpec``: a factory taking keyword options (``threads`` and
backend-specific ones) and the CLI options the backend accepts; the CLI offers exactly its keys.
Each factory imports its module lazily, so a backend whose runtime is missing (onnxruntime-gpu,
TensorRT, a GPU) costs nothing until it is asked for, and then ``get_backend`` says what is
missing. ``GPU_BACKENDS`` are those that need one GPU per measuring process (the Ray runner
reserves one per worker).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass

from mdp_trt.errors import BackendUnavailable, InputError
from mdp_trt.extras import require
from mdp_trt.latency.backends import host
from mdp_trt.latency.protocol import WEIGHTS, LatencyBackend

__all__ = ["BACKENDS", "BackendSpec", "DEFAULT_BACKEND", "GPU_BACKENDS", "get_backend",
           "backend_names", "backend_options", "cell_weights"]

log = logging.getLogger(__name__)


def _ort_cpu(**options) -> LatencyBackend:
    from mdp_trt.latency.backends.ort_cpu import OrtCpuBackend

    return OrtCpuBackend(**options)


def _ort_cuda(**options) -> LatencyBackend:
    from mdp_trt.latency.backends.ort_cuda import OrtCudaBackend

    return OrtCudaBackend(**options)


def _torch(device: str) -> Callable[..., LatencyBackend]:
    def factory(**options) -> LatencyBackend:
        require("torch", f"the torch-{device} backend", parameters=("backend",))
        from mdp_trt.latency.backends.torch_backend import TorchBackend

        return TorchBackend(device=device, **options)

    return factory


def _tensorrt(**options) -> LatencyBackend:
    from mdp_trt.latency.backends.tensorrt_backend import TensorRTBackend

    return TensorRTBackend(**options)


@dataclass(frozen=True)
class BackendSpec:
    """One backend: how to build it and what the CLI may ask of it besides ``--threads``, which
    every backend takes. Declared here, not on the backend classes, so that flags are checked
    (and the backends that do accept a refused one are named) without importing a runtime;
    each backend's constructor still refuses what it cannot do when built directly."""

    factory: Callable[..., LatencyBackend]
    # --precision values it computes in; the first is its default (left out of its options)
    precisions: tuple[str, ...] = ("fp32",)
    # Cell weights modes it can time (protocol.WEIGHTS), the default first: "cold" needs a CPU
    # cache to overflow
    weights: tuple[str, ...] = ("hot",)
    # Whether --channels-last picks its memory layout (other runtimes choose their own)
    channels_last: bool = False
    # Whether each measuring process needs a GPU of its own
    gpu: bool = False


BACKENDS: dict[str, BackendSpec] = {
    "ort-cpu": BackendSpec(_ort_cpu, weights=WEIGHTS),
    "ort-cuda": BackendSpec(_ort_cuda, gpu=True),
    "torch-cpu": BackendSpec(_torch("cpu"), precisions=("fp32", "fp16"), channels_last=True),
    "torch-cuda": BackendSpec(_torch("cuda"), precisions=("fp32", "fp16"), channels_last=True,
                              gpu=True),
    "tensorrt": BackendSpec(_tensorrt, precisions=("fp32", "fp16", "int8"), gpu=True),
}
DEFAULT_BACKEND = "ort-cpu"
GPU_BACKENDS = frozenset(name for name, spec in BACKENDS.items() if spec.gpu)


def backend_names() -> list[str]:
    return sorted(BACKENDS)


def backend_options(name: str, *, threads: int = 1, precision: str = "fp32",
                    channels_last: bool = False, weights: str = "hot") -> dict:
    """The keyword options that the CLI's ``--threads/--precision/--channels-last/--weights``
    give backend ``name``, checked against what its ``BackendSpec`` accepts (asking a backend
    for a precision, layout or weights mode it lacks is an input error naming the flag).
    ``weights`` is "hot" or "cold" here ("auto" is resolved against the model first:
    ``cell_weights``)."""
    options: dict = {"threads": _usable_threads(threads)}
    if weights not in WEIGHTS:
        raise InputError(f"`weights` {weights!r}: choose hot, cold or auto",
                         parameters=("weights",))
    spec = _spec(name)
    _check_options(name, spec, precision=precision, channels_last=channels_last,
                   weights=weights)
    if weights != spec.weights[0]:
        options["weights"] = weights
    if precision != spec.precisions[0]:
        options["precision"] = precision
    if channels_last:
        options["channels_last"] = True
    return options


def _spec(name: str) -> BackendSpec:
    try:
        return BACKENDS[name]
    except KeyError:
        raise BackendUnavailable(
            f"unknown latency backend {name!r}; choose one of: {', '.join(backend_names())} "
            "(`backend`)", parameters=("backend",)
        ) from None


def _check_options(name: str, spec: BackendSpec, *, precision: str, channels_last: bool,
                   weights: str) -> None:
    """Refuse the options ``spec`` does not accept, naming the flag and the backends that do."""
    if weights not in spec.weights:
        raise InputError(f"`weights` {weights} is an {_accepting(lambda s: weights in s.weights)} "
                         "option (weights streamed past the CPU's last-level cache); backend "
                         f"{name!r} times cells with hot weights", parameters=("weights",))
    if precision not in spec.precisions:
        raise InputError(_precision_refusal(name, spec.precisions, precision),
                         parameters=("precision",))
    if channels_last and not spec.channels_last:
        raise InputError(f"`channels_last` is a {_accepting(lambda s: s.channels_last)} option; "
                         f"backend {name!r} chooses its own memory layout",
                         parameters=("channels_last",))


def _accepting(accepts: Callable[[BackendSpec], bool]) -> str:
    """The backends whose spec ``accepts`` an option, as the CLI names them ("a/b")."""
    return "/".join(name for name in backend_names() if accepts(BACKENDS[name]))


def _precision_refusal(name: str, precisions: tuple[str, ...], precision: str) -> str:
    if len(precisions) == 1:
        return (f"{name} runs models in their own precision; only {precisions[0]!r} is "
                f"supported as `precision`, got {precision!r}")
    choices = f"{', '.join(precisions[:-1])} or {precisions[-1]}"
    return f"`precision` must be {choices} for {name}, got {precision!r}"


def _usable_threads(threads: int) -> int:
    """``--threads`` capped to the cores this process may run on: more threads than cores only
    time-slice, and a thousand of them stall every timed run."""
    if threads < 1:
        raise InputError(f"`threads` {threads} must be >= 1", parameters=("threads",))
    cores = host.usable_cores()
    if threads > cores:
        _warn_capped(threads, cores)
        return cores
    return threads


@functools.cache  # once per run, though options are checked before a model loads and again after
def _warn_capped(threads: int, cores: int) -> None:
    log.warning("%d threads asked for: this machine lets mdp-trt use %d cores; using %d threads",
                threads, cores, cores)


def cell_weights(choice: str, backend: str, model_weight_bytes: int) -> str:
    """``--weights`` for one model: "auto" is "cold" on a backend that can time cold cells
    (ort-cpu) when the model's weights exceed the last-level cache (a whole-model run then
    streams every layer's weights from memory, as cold cells do), else "hot"; "hot"/"cold" stay
    as given."""
    if choice != "auto":
        return choice
    if "cold" not in _spec(backend).weights:
        return "hot"
    return "cold" if model_weight_bytes > host.llc_bytes() else "hot"


def get_backend(name: str, *, threads: int = 1, **options) -> LatencyBackend:
    """A usable backend named ``name`` (not yet active: use it in a ``with`` block).

    Raises BackendUnavailable when the name is unknown (the message lists the choices) or when
    the backend cannot run on this machine (the message says why and what to install), and
    InputError for a precision, layout or weights mode its ``BackendSpec`` does not accept.
    """
    spec = _spec(name)
    _check_options(name, spec, precision=options.get("precision", spec.precisions[0]),
                   channels_last=options.get("channels_last", False),
                   weights=options.get("weights", spec.weights[0]))
    backend = spec.factory(threads=threads, **options)
    reason = backend.available()
    if reason is not None:
        raise BackendUnavailable(f"latency backend {name!r} cannot run here: {reason}")
    return backend
