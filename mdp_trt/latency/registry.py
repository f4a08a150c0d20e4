"""The latency backends this build provides, by CLI name.

``BACKENDS`` maps a name to a factory taking keyword options (``threads`` and backend-specific
ones); the CLI offers exactly its keys. A backend is registered only once it really measures:
GPU runtimes will join here with their own module, imported lazily by their factory.
"""

from __future__ import annotations

from collections.abc import Callable

from mdp_trt.errors import BackendUnavailable
from mdp_trt.latency.protocol import LatencyBackend

__all__ = ["BACKENDS", "DEFAULT_BACKEND", "get_backend", "backend_names"]


def _ort_cpu(**options) -> LatencyBackend:
    from mdp_trt.latency.ort_cpu import OrtCpuBackend

    return OrtCpuBackend(**options)


BACKENDS: dict[str, Callable[..., LatencyBackend]] = {
    "ort-cpu": _ort_cpu,
}
DEFAULT_BACKEND = "ort-cpu"


def backend_names() -> list[str]:
    return sorted(BACKENDS)


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
