"""Table cells measured by a pool of Ray actors, each holding one activated backend.

``ray_measure_cells(...)`` returns a ``measure_cells`` callable for ``tables.profile_tables``:
given the cells the cache lacks and a drift policy, it yields a ``MeasuredChunk`` as each chunk
of cells finishes, and the caller writes its cells to the cache at once, so an interrupted
distributed profile keeps its finished chunks and a re-run measures only the rest (a complete
cache starts no Ray at all). The cells of chunks still in flight are lost: at most one chunk per
worker, which is why chunks stay a few drift batches long (``chunk_cells``).

Workers: one actor per GPU for a GPU backend (Ray sets each actor's ``CUDA_VISIBLE_DEVICES``),
else one per ``threads`` CPUs. Chunks go out through ``ray.util.ActorPool`` (a chunk to whichever
actor is free). A cell only means something with its fingerprint, so every worker's backend
fingerprint must equal the local one (same device model, runtime version, threads, precision);
otherwise the run is refused before anything is measured: the cache key would lie.

Each worker times its chunk under the reference-cell drift guard (``drift.measure_guarded``) on
its own backend, so the guard compares a worker's cells with that worker's reference timings
only, and each cell is cached with its worker's drift value. The guard is a sequential protocol
per device: it holds where each worker owns its device (one GPU each, or one machine each). CPU
workers sharing one machine compete for memory bandwidth and caches, so their reference timings
also move with what the other workers run.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

from mdp_trt.errors import BackendUnavailable, InputError
from mdp_trt.latency.backends.registry import GPU_BACKENDS, get_backend
from mdp_trt.latency.protocol import DeviceFingerprint, LatencyBackend, Measurement
from mdp_trt.latency.tables.bilayer import MeasureCells, MeasuredChunk
from mdp_trt.latency.tables.cells import Cell
from mdp_trt.latency.tables.drift import DriftPolicy, measure_guarded

__all__ = ["ray_measure_cells", "RayCells", "cells_option", "check_ray_flags", "chunk_cells", "measure_chunk", "CHUNK_BATCHES"]

# Drift batches per chunk: enough references for the guard to compare, few enough that an
# interrupted profile loses little (one chunk per worker).
CHUNK_BATCHES = 3

log = logging.getLogger(__name__)


def chunk_cells(cells: Sequence[Cell], policy: DriftPolicy | None, workers: int,
                batches: int = CHUNK_BATCHES) -> list[list[Cell]]:
    """``cells`` in order, split into the chunks that workers measure one at a time.

    Unguarded (no policy, or too few cells for one guarded batch): one cell per chunk, the finest
    resume. Guarded: contiguous chunks of near-equal size, about ``batches`` drift batches each,
    their count a multiple of ``workers`` so the last round keeps every worker busy, yet every
    chunk longer than ``policy.every_cells``: ``measure_guarded`` leaves shorter runs unguarded.
    """
    if policy is None or len(cells) <= policy.every_cells:
        return [[cell] for cell in cells]
    count = -(-len(cells) // (batches * policy.every_cells))
    count = -(-count // workers) * workers
    count = min(count, len(cells) // (policy.every_cells + 1))
    size, extra = divmod(len(cells), count)
    bounds = [k * size + min(k, extra) for k in range(count + 1)]
    return [list(cells[a:b]) for a, b in zip(bounds, bounds[1:])]


def measure_chunk(backend: LatencyBackend, cells: Sequence[Cell], policy: DriftPolicy | None,
                  worker: str) -> MeasuredChunk:
    """``cells`` timed on the active ``backend`` under the drift guard, each with its fastest
    measurement and the drift value when that one was taken."""
    kept: dict[int, tuple[Measurement, float | None]] = {}
    guard = measure_guarded(backend, [(c.signature, c.out_channels, c.in_channels) for c in cells],
                            lambda index, m, drift: kept.__setitem__(index, (m, drift)),
                            policy=policy)
    return MeasuredChunk(worker, tuple((cells[i], *kept[i]) for i in range(len(cells))), guard)


class _Worker:
    """A Ray actor's state: one activated backend for the actor's lifetime."""

    def __init__(self, name: str, options: dict, worker: str) -> None:
        self.worker = worker
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

    def measure(self, cells: Sequence[Cell], policy: DriftPolicy | None) -> MeasuredChunk:
        return measure_chunk(self.backend, cells, policy, self.worker)


def _import_ray():
    try:
        import ray
    except ImportError as exc:
        raise BackendUnavailable(f"Ray is not installed ({exc}); pip install 'mdp-trt[ray]' or "
                                 "profile without `ray`", parameters=("ray",)) from exc
    return ray


def ray_measure_cells(backend_name: str, backend_options: dict | None = None, *,
                      address: str | None = None, workers: int | None = None,
                      expected: DeviceFingerprint | None = None,
                      chunk_batches: int = CHUNK_BATCHES) -> "RayCells":
    """A ``measure_cells`` callable that farms cells out to Ray actors running ``backend_name``
    built with ``backend_options`` (``threads`` included).

    ``address``: a running cluster (``"auto"``, ``"ray://host:10001"``); None uses the Ray
    already initialised in this process or starts a local one (shut down when done).
    ``workers``: actor count (default: as many as the cluster's GPUs, or CPUs // threads).
    ``expected``: the fingerprint the cells are cached under (default: the local backend's).
    ``chunk_batches``: drift batches per chunk of cells a worker measures at once (``chunk_cells``).
    """
    ray = _import_ray()
    options = dict(backend_options or {})
    if workers is not None and workers < 1:
        raise InputError(f"`workers` must be at least 1, got {workers}", parameters=("workers",))
    if chunk_batches < 1:
        raise InputError(f"chunk_batches must be at least 1, got {chunk_batches}")
    if expected is None:
        expected = get_backend(backend_name, **options).fingerprint()
    return RayCells(ray, backend_name, options, address, workers, expected, chunk_batches)


class RayCells:
    """``ray_measure_cells``' callable. Adaptive cells call it once per round, so the cluster
    and the actors (each with its activated backend) start on the first call and stay until
    ``close`` (``profile_tables`` closes it when the profile ends; ``with`` works too): a local
    cluster's start costs seconds, more than a late round's few cells."""

    def __init__(self, ray, backend_name: str, options: dict, address: str | None,
                 workers: int | None, expected: DeviceFingerprint, chunk_batches: int) -> None:
        self._ray, self.backend_name, self.options = ray, backend_name, options
        self.address, self.workers, self.expected = address, workers, expected
        self.chunk_batches = chunk_batches
        self._gpu = backend_name in GPU_BACKENDS
        self._actors: list = []
        self._started = False

    def __enter__(self) -> "RayCells":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __call__(self, cells: Sequence[Cell], policy: DriftPolicy | None
                 ) -> Iterator[MeasuredChunk]:
        if not cells:
            return
        from ray.util import ActorPool

        try:
            # the first round (the largest) sets the worker count: no more actors than chunks
            capacity = len(self._actors) or self._connect()
            width = len(self._actors) or self.workers or capacity
            chunks = chunk_cells(cells, policy, width, self.chunk_batches)
            if not self._actors:
                self._spawn(min(width, len(chunks)))
            log.info("measuring %d cells in %d chunks on %d Ray workers (%s)", len(cells),
                     len(chunks), min(len(self._actors), len(chunks)), self.backend_name)
            pool = ActorPool(self._actors[:len(chunks)])
            yield from pool.map_unordered(
                lambda actor, chunk: actor.measure.remote(chunk, policy), chunks)
        except BaseException:  # an interrupted round: nothing of this cluster is reused
            self.close()
            raise

    def _connect(self) -> int:
        """Join (or start) the cluster; its capacity in workers."""
        ray = self._ray
        if not ray.is_initialized():
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
            self._started = True
        resources = ray.cluster_resources()
        if self._gpu:
            capacity = int(resources.get("GPU", 0))
            if capacity == 0:
                raise BackendUnavailable(f"the Ray cluster has no GPU for the GPU backend "
                                         f"{self.backend_name!r} (resources: {resources})")
            return capacity
        return max(1, int(resources.get("CPU", 1)) // int(self.options.get("threads", 1)))

    def _spawn(self, count: int) -> None:
        ray = self._ray
        threads = int(self.options.get("threads", 1))
        actor_class = ray.remote(num_cpus=0 if self._gpu else threads,
                                 num_gpus=1 if self._gpu else 0)(_Worker)
        self._actors = [actor_class.remote(self.backend_name, self.options, str(k))
                        for k in range(count)]
        for fingerprint, reason in ray.get([a.fingerprint.remote() for a in self._actors]):
            if reason is not None:
                raise BackendUnavailable(f"a Ray worker cannot run {self.backend_name!r}: {reason}")
            if fingerprint != self.expected.to_json():
                raise BackendUnavailable(
                    f"a Ray worker's {self.backend_name!r} fingerprint {fingerprint} differs from "
                    f"the local {self.expected.to_json()}; its cells would be cached under the "
                    "wrong device. Use workers identical to this machine, or profile locally")

    def close(self) -> None:
        """Stop the actors, and the cluster if this object started it."""
        for actor in self._actors:
            self._ray.kill(actor)
        self._actors = []
        if self._started:
            self._ray.shutdown()
            self._started = False


def check_ray_flags(ray: str | None, workers: int | None) -> None:
    """``--workers`` without ``--ray``, or fewer than one worker, is a usage error (checked
    before any model is loaded)."""
    if ray is None and workers is not None:
        raise InputError("`workers` needs `ray`", parameters=("workers", "ray"))
    if workers is not None and workers < 1:
        raise InputError(f"`workers` {workers} must be >= 1", parameters=("workers",))


def cells_option(ray: str | None, workers: int | None, backend: LatencyBackend,
                 backend_options: dict) -> MeasureCells | None:
    """The ``--ray ADDRESS`` / ``--workers N`` options as ``profile_tables``' ``measure_cells``:
    None (measure here) without ``--ray``; ``local`` starts a cluster on this machine. The
    workers build ``backend.name`` with ``backend_options``, which must be what built
    ``backend``, whose fingerprint they are checked against. They time their cells under the
    drift policy that ``profile_tables`` is given, as a local profile would."""
    check_ray_flags(ray, workers)
    if ray is None:
        return None
    return ray_measure_cells(backend.name, backend_options,
                             address=None if ray == "local" else ray, workers=workers,
                             expected=backend.fingerprint())
