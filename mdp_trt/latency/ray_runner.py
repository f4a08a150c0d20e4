"""Table cells measured by a pool of Ray actors, each holding one activated backend.

``ray_measure_cells(...)`` returns a ``measure_cells`` callable for ``tables.profile_tables``:
given the cells the cache lacks, it yields ``(cell, measurement)`` as each finishes, and the
caller writes every one to the cache at once, so an interrupted distributed profile keeps its
finished cells and a re-run measures only the rest (a complete cache starts no Ray at all).

Workers: one actor per GPU for a GPU backend (Ray sets each actor's ``CUDA_VISIBLE_DEVICES``),
else one per ``threads`` CPUs. Cells go out through ``ray.util.ActorPool`` (a cell to whichever
actor is free). A cell only means something with its fingerprint, so every worker's backend
fingerprint must equal the local one (same device model, runtime version, threads, precision);
otherwise the run is refused before anything is measured: the cache key would lie.

Workers on one machine time cells concurrently, so they compete for memory bandwidth and
shared caches; the reference-cell drift guard (``drift.py``) is a sequential protocol and does
not run here. Use it where each worker owns its device (one GPU each, or one machine each).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

from mdp_trt.errors import BackendUnavailable, InputError
from mdp_trt.latency.protocol import DeviceFingerprint, LatencyBackend, Measurement
from mdp_trt.latency.registry import GPU_BACKENDS, get_backend
from mdp_trt.latency.tables import Cell, MeasureCells

__all__ = ["ray_measure_cells", "cells_option"]

log = logging.getLogger(__name__)


class _Worker:
    """A Ray actor's state: one activated backend for the actor's lifetime."""

    def __init__(self, name: str, options: dict) -> None:
        self.reason: str | None = None
        try:
            self.backend = get_backend(name, **options)
            self.backend.activate()
        except BackendUnavailable as exc:
            # Reported through fingerprint(): a failed actor constructor surfaces only as an
            # opaque RayActorError on the next call.
            self.reason = str(exc)

    def fingerprint(self) -> tuple[dict | None, str | None]:
        if self.reason is not None:
            return None, self.reason
        return self.backend.fingerprint().to_json(), None

    def measure(self, cell: Cell) -> tuple[Cell, Measurement]:
        return cell, self.backend.measure_layer(cell.signature, cell.out_channels,
                                                cell.in_channels)


def _import_ray():
    try:
        import ray
    except ImportError as exc:
        raise BackendUnavailable(f"Ray is not installed ({exc}); pip install 'mdp-trt[ray]' or "
                                 "profile without --ray") from exc
    return ray


def ray_measure_cells(backend_name: str, backend_options: dict | None = None, *,
                      address: str | None = None, workers: int | None = None,
                      expected: DeviceFingerprint | None = None) -> MeasureCells:
    """A ``measure_cells`` callable that farms cells out to Ray actors running ``backend_name``
    built with ``backend_options`` (``threads`` included).

    ``address``: a running cluster (``"auto"``, ``"ray://host:10001"``); None uses the Ray
    already initialised in this process or starts a local one (shut down when done).
    ``workers``: actor count (default: as many as the cluster's GPUs, or CPUs // threads).
    ``expected``: the fingerprint the cells are cached under (default: the local backend's).
    """
    ray = _import_ray()
    from ray.util import ActorPool
    options = dict(backend_options or {})
    if workers is not None and workers < 1:
        raise InputError(f"--workers must be at least 1, got {workers}")
    if expected is None:
        expected = get_backend(backend_name, **options).fingerprint()
    gpu = backend_name in GPU_BACKENDS
    threads = int(options.get("threads", 1))

    def measure_cells(cells: Sequence[Cell]) -> Iterator[tuple[Cell, Measurement]]:
        if not cells:
            return
        started = not ray.is_initialized()
        if started:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        actors = []
        try:
            resources = ray.cluster_resources()
            if gpu:
                capacity = int(resources.get("GPU", 0))
                if capacity == 0:
                    raise BackendUnavailable(f"the Ray cluster has no GPU for the GPU backend "
                                             f"{backend_name!r} (resources: {resources})")
            else:
                capacity = max(1, int(resources.get("CPU", 1)) // threads)
            count = min(workers or capacity, len(cells))
            actor_class = ray.remote(num_cpus=0 if gpu else threads, num_gpus=1 if gpu else 0)(
                _Worker)
            actors = [actor_class.remote(backend_name, options) for _ in range(count)]
            for fingerprint, reason in ray.get([a.fingerprint.remote() for a in actors]):
                if reason is not None:
                    raise BackendUnavailable(f"a Ray worker cannot run {backend_name!r}: {reason}")
                if fingerprint != expected.to_json():
                    raise BackendUnavailable(
                        f"a Ray worker's {backend_name!r} fingerprint {fingerprint} differs from "
                        f"the local {expected.to_json()}; its cells would be cached under the "
                        "wrong device. Use workers identical to this machine, or profile locally")
            log.info("measuring %d cells on %d Ray workers (%s)", len(cells), count, backend_name)
            pool = ActorPool(actors)
            yield from pool.map_unordered(lambda actor, cell: actor.measure.remote(cell), cells)
        finally:
            for actor in actors:
                ray.kill(actor)
            if started:
                ray.shutdown()

    return measure_cells


def cells_option(ray: str | None, workers: int | None, backend: LatencyBackend,
                 backend_options: dict) -> MeasureCells | None:
    """The ``--ray ADDRESS`` / ``--workers N`` options as ``profile_tables``' ``measure_cells``:
    None (measure here) without ``--ray``; ``local`` starts a cluster on this machine. The
    workers build ``backend.name`` with ``backend_options``, which must be what built
    ``backend``, whose fingerprint they are checked against."""
    if ray is None:
        if workers is not None:
            raise InputError("--workers needs --ray")
        return None
    return ray_measure_cells(backend.name, backend_options,
                             address=None if ray == "local" else ray, workers=workers,
                             expected=backend.fingerprint())
