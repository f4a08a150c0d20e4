"""The persistent latency cache: one SQLite file holding every measured table cell.

A row's meaning never depends on the file name: its key is (backend, fingerprint key, runtime
version, signature key, weights, out_channels, in_channels), where the fingerprint records the
device, thread count and precision, the signature the op, shapes, batch and dtype (``batch`` and
``precision`` are also stored as plain columns for inspection), and ``weights`` whether the cell
was timed with its weights hot in cache or streamed from memory (``WEIGHTS``). Every row keeps
its spread (p10/p90) and the machine drift seen by the reference cell when it was timed
(``drift``: relative excess over the fastest reference timing; NULL when unguarded). Rows are written in autocommit
mode, so each cell is durable as soon as ``put`` returns: an interrupted profile keeps every
finished cell. WAL journaling lets a reader (e.g. a second ``profile``) coexist with a writer.
A cache on read-only storage (a shared, pre-filled one) is read as it is: cells measured then
are kept for the run only, with a warning.

Schema version 2 (version 1 files, which lacked ``weights`` and ``drift``, are migrated in
place on opening: their cells were timed hot)::

    meta(key TEXT PRIMARY KEY, value TEXT)          -- ('schema_version', '2')
    cells(backend, fingerprint, runtime_version, signature, weights, out_channels, in_channels,
          median_ms, spread, repeats, p10_ms, p90_ms, batch, precision, measured_at, drift)
"""

from __future__ import annotations

import logging
import os
import sqlite3
import urllib.parse
from datetime import datetime, timezone
from pathlib import Path

from mdp_trt.errors import InputError
from mdp_trt.latency.protocol import WEIGHTS, DeviceFingerprint, Measurement, Weights
from mdp_trt.signature import LayerSignature

__all__ = ["LatencyCache", "SCHEMA_VERSION", "default_cache_path"]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
_SQLITE_MAGIC = b"SQLite format 3\x00"
_V1_COLUMNS = (
    "backend", "fingerprint", "runtime_version", "signature", "out_channels", "in_channels",
    "median_ms", "spread", "repeats", "p10_ms", "p90_ms", "batch", "precision", "measured_at",
)
_CELL_COLUMNS = _V1_COLUMNS + ("weights", "drift")
_CELLS = """
CREATE TABLE IF NOT EXISTS cells (
    backend TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    runtime_version TEXT NOT NULL,
    signature TEXT NOT NULL,
    weights TEXT NOT NULL,
    out_channels INTEGER NOT NULL,
    in_channels INTEGER NOT NULL,
    median_ms REAL NOT NULL,
    spread REAL NOT NULL,
    repeats INTEGER NOT NULL,
    p10_ms REAL NOT NULL,
    p90_ms REAL NOT NULL,
    batch INTEGER NOT NULL,
    precision TEXT NOT NULL,
    measured_at TEXT NOT NULL,
    drift REAL,
    PRIMARY KEY (backend, fingerprint, runtime_version, signature, weights, out_channels,
                 in_channels)
)
"""
_META = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"


def default_cache_path() -> Path:
    """``<user cache dir>/mdp-trt/latency.sqlite`` (platformdirs)."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("mdp-trt")) / "latency.sqlite"


class LatencyCache:
    """Measured cells keyed by device fingerprint, layer signature and widths.

    The file is opened (and created if missing) on construction; a file that is not an
    mdp-trt latency cache raises InputError naming it. Use as a context manager or ``close()``.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_cache_path()
        self.read_only = self.path.is_file() and not (
            os.access(self.path, os.W_OK) and os.access(self.path.parent, os.W_OK | os.X_OK))
        # Cells measured while the file is read-only: (key..., out, in) -> (measurement, drift)
        self._unsaved: dict[tuple, tuple[Measurement, float | None]] = {}
        self._conn = self._open()
        if self.read_only:
            log.warning("%s is read-only: cells measured now are used in this run but not "
                        "saved; give a writable cache path to keep them", self.path)

    def _corrupt(self, why: str) -> InputError:
        return InputError(
            f"{self.path}: not a usable mdp-trt latency cache ({why}); delete the file to start "
            "a fresh cache, or pass `cache` with another path", parameters=("cache",)
        )

    def _open(self) -> sqlite3.Connection:
        path = self.path
        if path.exists():
            if not path.is_file():
                raise self._corrupt("it is not a regular file")
            with open(path, "rb") as head:
                magic = head.read(len(_SQLITE_MAGIC))
            # An empty file is what sqlite itself leaves for a brand-new database.
            if magic and magic != _SQLITE_MAGIC:
                raise self._corrupt("it is not an SQLite database")
        else:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise InputError(f"{path}: cannot create the cache directory ({exc}); "
                                 "pass `cache` with a writable path",
                                 parameters=("cache",)) from exc
        try:
            # isolation_level=None: autocommit, every put is its own durable transaction.
            # immutable: a WAL file cannot get its shared-memory index on read-only storage.
            conn = (sqlite3.connect(f"file:{urllib.parse.quote(str(path.resolve()))}"
                                    "?mode=ro&immutable=1", uri=True, isolation_level=None)
                    if self.read_only else
                    sqlite3.connect(str(path), timeout=30.0, isolation_level=None))
        except sqlite3.Error as exc:
            raise InputError(f"{path}: cannot open the latency cache ({exc}); pass `cache` "
                             "with a writable path", parameters=("cache",)) from exc
        try:
            self._check_or_create(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _check_or_create(self, conn: sqlite3.Connection) -> None:
        try:
            tables = self._tables(conn)
            if not tables and self.read_only:
                raise self._corrupt("it is an empty, read-only file")
            if not tables:
                conn.execute("PRAGMA journal_mode=WAL")  # persistent: stored in the file
                # IMMEDIATE takes the write lock first and IF NOT EXISTS tolerates a concurrent
                # creator, so two processes opening a new cache at once both succeed.
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(_META)
                conn.execute(_CELLS)
                conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
                             (str(SCHEMA_VERSION),))
                conn.execute("COMMIT")
                log.info("created latency cache %s (schema %d)", self.path, SCHEMA_VERSION)
                tables = self._tables(conn)
            if "meta" not in tables:
                raise self._corrupt(f"no 'meta' table; it holds {', '.join(sorted(tables))}")
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                raise self._corrupt("no schema_version in its 'meta' table")
            try:
                version = int(row[0])
            except (TypeError, ValueError):
                raise self._corrupt(f"unknown schema version {row[0]!r}") from None
            if version > SCHEMA_VERSION:
                raise InputError(
                    f"{self.path}: latency cache schema version {version} was written by a newer "
                    f"mdp-trt (this one reads version {SCHEMA_VERSION}); upgrade mdp-trt, or pass "
                    "`cache` with another path", parameters=("cache",)
                )
            if version == 1 and "cells" in tables and self.read_only:
                raise InputError(f"{self.path}: a version-1 latency cache on read-only storage "
                                 "(it needs a migration); copy it to a writable place and pass "
                                 "`cache` with that path", parameters=("cache",))
            if version == 1 and "cells" in tables:
                self._migrate_v1(conn)
            elif version != SCHEMA_VERSION:
                raise self._corrupt(f"unknown schema version {version}")
            if "cells" not in tables:
                raise self._corrupt("no 'cells' table")
            columns = {row[1] for row in conn.execute("PRAGMA table_info(cells)")}
            if columns != set(_CELL_COLUMNS):
                raise self._corrupt(f"its 'cells' table has columns {sorted(columns)}")
        except sqlite3.DatabaseError as exc:
            raise self._corrupt(str(exc)) from exc

    def _migrate_v1(self, conn: sqlite3.Connection) -> None:
        """Version 1 -> 2 in one transaction (SQLite cannot widen a primary key in place)."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have migrated while this one waited for the write lock.
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row[0] == "1":
                columns = {r[1] for r in conn.execute("PRAGMA table_info(cells)")}
                if columns != set(_V1_COLUMNS):
                    raise self._corrupt(f"its version-1 'cells' table has columns {sorted(columns)}")
                conn.execute("ALTER TABLE cells RENAME TO cells_v1")
                conn.execute(_CELLS)
                conn.execute(f"INSERT INTO cells ({', '.join(_CELL_COLUMNS)}) "
                             f"SELECT {', '.join(_V1_COLUMNS)}, 'hot', NULL FROM cells_v1")
                conn.execute("DROP TABLE cells_v1")
                conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'",
                             (str(SCHEMA_VERSION),))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        log.info("migrated latency cache %s to schema %d (old cells: timed with hot weights)",
                 self.path, SCHEMA_VERSION)

    @staticmethod
    def _tables(conn: sqlite3.Connection) -> set[str]:
        return {row[0] for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}

    # -- access -----------------------------------------------------------------------------

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "LatencyCache":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @staticmethod
    def _key(fp: DeviceFingerprint, sig: LayerSignature,
             weights: str) -> tuple[str, str, str, str, str]:
        if weights not in WEIGHTS:
            raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
        return fp.backend, fp.key(), fp.runtime_version, sig.key(), weights

    _WHERE = ("backend = ? AND fingerprint = ? AND runtime_version = ? AND signature = ? AND "
              "weights = ?")

    def get(self, fp: DeviceFingerprint, sig: LayerSignature, out_channels: int,
            in_channels: int, *, weights: Weights = "hot") -> Measurement | None:
        key = (*self._key(fp, sig, weights), out_channels, in_channels)
        if key in self._unsaved:
            return self._unsaved[key][0]
        row = self._conn.execute(
            f"SELECT median_ms, spread, repeats, p10_ms, p90_ms FROM cells WHERE {self._WHERE} "
            "AND out_channels = ? AND in_channels = ?", key).fetchone()
        return None if row is None else Measurement(*row)

    def get_many(self, fp: DeviceFingerprint, sig: LayerSignature, *,
                 weights: Weights = "hot") -> dict[tuple[int, int], Measurement]:
        """Every cached cell of ``sig`` on ``fp``, by (out_channels, in_channels)."""
        prefix = self._key(fp, sig, weights)
        rows = self._conn.execute(
            "SELECT out_channels, in_channels, median_ms, spread, repeats, p10_ms, p90_ms "
            f"FROM cells WHERE {self._WHERE}", prefix)
        cells = {(row[0], row[1]): Measurement(*row[2:]) for row in rows}
        cells.update({key[-2:]: m for key, (m, _) in self._unsaved.items() if key[:-2] == prefix})
        return cells

    def drift(self, fp: DeviceFingerprint, sig: LayerSignature, out_channels: int,
              in_channels: int, *, weights: Weights = "hot") -> float | None:
        """The reference-cell drift recorded with a cell (None: unguarded or absent)."""
        key = (*self._key(fp, sig, weights), out_channels, in_channels)
        if key in self._unsaved:
            return self._unsaved[key][1]
        row = self._conn.execute(
            f"SELECT drift FROM cells WHERE {self._WHERE} AND out_channels = ? AND "
            "in_channels = ?", key).fetchone()
        return None if row is None else row[0]

    def put(self, fp: DeviceFingerprint, sig: LayerSignature, out_channels: int,
            in_channels: int, m: Measurement, *, weights: Weights = "hot",
            drift: float | None = None) -> None:
        """Store (or replace) a cell; durable when this returns."""
        measured_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        backend, fingerprint, version, signature, weights = self._key(fp, sig, weights)
        if self.read_only:
            self._unsaved[(backend, fingerprint, version, signature, weights, out_channels,
                           in_channels)] = (m, drift)
            return
        try:
            self._conn.execute(
                f"INSERT OR REPLACE INTO cells ({', '.join(_CELL_COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(_CELL_COLUMNS))})",
                (backend, fingerprint, version, signature, out_channels, in_channels, m.median_ms,
                 m.spread, m.repeats, m.p10_ms, m.p90_ms, sig.batch, fp.precision, measured_at,
                 weights, drift))
        except sqlite3.OperationalError as exc:  # read-only file or directory, disk full
            raise InputError(f"{self.path}: cannot write to the latency cache ({exc}); pass "
                             "`cache` with a writable path", parameters=("cache",)) from exc

    def __len__(self) -> int:
        stored = self._conn.execute("SELECT COUNT(*) FROM cells").fetchone()[0]
        return stored + len(self._unsaved)
