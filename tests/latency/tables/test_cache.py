import sqlite3

import pytest

from mdp_trt.errors import InputError
from mdp_trt.latency.tables import cache as cache_module
from mdp_trt.latency.tables.cache import SCHEMA_VERSION, LatencyCache, default_cache_path
from mdp_trt.latency.protocol import DeviceFingerprint, Measurement

from tests.latency.fixtures import conv_sig

FP = DeviceFingerprint("fake", "test device, 1 core", "fake-runtime", "0.0", 1, "fp32")
SIG = conv_sig(32, 16, 8)


def test_round_trip_survives_reopening(tmp_path):
    path = tmp_path / "sub" / "latency.sqlite"
    m = Measurement(1.25, 0.05, 9, 1.2, 1.3)
    with LatencyCache(path) as cache:
        assert cache.get(FP, SIG, 16, 8) is None
        cache.put(FP, SIG, 16, 8, m)
        cache.put(FP, SIG, 32, 16, Measurement(2.0, 0.1, 5, 1.9, 2.2))
    with LatencyCache(path) as cache:
        assert len(cache) == 2
        assert cache.get(FP, SIG, 16, 8) == m
        assert set(cache.get_many(FP, SIG)) == {(16, 8), (32, 16)}


def test_rows_are_keyed_by_fingerprint_runtime_and_signature(tmp_path):
    with LatencyCache(tmp_path / "c.sqlite") as cache:
        cache.put(FP, SIG, 16, 8, Measurement(1.0, 0.0, 5, 1.0, 1.0))
        other_threads = DeviceFingerprint("fake", FP.device, FP.runtime, "0.0", 2, "fp32")
        other_version = DeviceFingerprint("fake", FP.device, FP.runtime, "0.1", 1, "fp32")
        assert cache.get(other_threads, SIG, 16, 8) is None
        assert cache.get(other_version, SIG, 16, 8) is None
        assert cache.get(FP, conv_sig(32, 16, 8, stride=2), 16, 8) is None
        assert cache.get(FP, SIG, 8, 16) is None
        row = sqlite3.connect(str(tmp_path / "c.sqlite")).execute(
            "SELECT batch, precision, runtime_version, measured_at FROM cells").fetchone()
    assert row[:3] == (1, "fp32", "0.0") and row[3].startswith("20")


def test_each_put_is_visible_to_another_connection_at_once(tmp_path):
    path = tmp_path / "c.sqlite"
    cache = LatencyCache(path)
    cache.put(FP, SIG, 16, 8, Measurement(1.0, 0.0, 5, 1.0, 1.0))
    # No close and no explicit commit: the row must already be durable.
    count = sqlite3.connect(str(path)).execute("SELECT COUNT(*) FROM cells").fetchone()[0]
    cache.close()
    assert count == 1


def test_a_file_that_is_not_sqlite_is_refused(tmp_path):
    path = tmp_path / "latency.sqlite"
    path.write_text("this is not a database\n" * 5)
    with pytest.raises(InputError, match=r"latency.sqlite.*delete the file.*`cache`"):
        LatencyCache(path)


def test_a_database_with_other_tables_is_refused(tmp_path):
    path = tmp_path / "other.sqlite"
    conn = sqlite3.connect(str(path))
    conn.execute("CREATE TABLE things (x INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(InputError, match=r"other.sqlite.*no 'meta' table"):
        LatencyCache(path)


def test_a_cells_table_with_wrong_columns_is_refused(tmp_path):
    path = tmp_path / "c.sqlite"
    LatencyCache(path).close()
    conn = sqlite3.connect(str(path))
    conn.execute("DROP TABLE cells")
    conn.execute("CREATE TABLE cells (x INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(InputError, match="columns"):
        LatencyCache(path)


def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "c.sqlite"
    LatencyCache(path).close()
    conn = sqlite3.connect(str(path))
    conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'",
                 (str(SCHEMA_VERSION + 1),))
    conn.commit()
    conn.close()
    with pytest.raises(InputError, match="newer mdp-trt"):
        LatencyCache(path)


def test_an_unknown_schema_is_refused(tmp_path):
    path = tmp_path / "c.sqlite"
    LatencyCache(path).close()
    conn = sqlite3.connect(str(path))
    conn.execute("UPDATE meta SET value = 'banana' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(InputError, match="unknown schema version"):
        LatencyCache(path)


def test_default_path_is_in_the_user_cache_dir(monkeypatch, tmp_path):
    import platformdirs

    monkeypatch.setattr(platformdirs, "user_cache_dir", lambda app: str(tmp_path / app))
    assert default_cache_path() == tmp_path / "mdp-trt" / "latency.sqlite"
    with LatencyCache() as cache:
        assert cache.path == tmp_path / "mdp-trt" / "latency.sqlite"
        assert cache.path.is_file()
    assert cache_module.SCHEMA_VERSION == 2


def test_two_open_caches_on_one_file_share_rows(tmp_path):
    path = tmp_path / "c.sqlite"
    with LatencyCache(path) as a, LatencyCache(path) as b:
        a.put(FP, SIG, 16, 8, Measurement(1.0, 0.0, 5, 1.0, 1.0))
        assert b.get(FP, SIG, 16, 8) == Measurement(1.0, 0.0, 5, 1.0, 1.0)
        mode = sqlite3.connect(str(path)).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_hot_and_cold_weight_cells_are_distinct_rows_with_their_drift(tmp_path):
    with LatencyCache(tmp_path / "c.sqlite") as cache:
        hot, cold = Measurement(1.0, 0.0, 5, 1.0, 1.0), Measurement(3.0, 0.2, 5, 2.8, 3.4)
        cache.put(FP, SIG, 16, 8, hot)
        cache.put(FP, SIG, 16, 8, cold, weights="cold", drift=0.04)
        assert cache.get(FP, SIG, 16, 8) == hot
        assert cache.get_many(FP, SIG, weights="cold") == {(16, 8): cold}
        assert cache.drift(FP, SIG, 16, 8, weights="cold") == pytest.approx(0.04)
        assert cache.drift(FP, SIG, 16, 8) is None
        with pytest.raises(ValueError, match="weights"):
            cache.get(FP, SIG, 16, 8, weights="lukewarm")


V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE cells (backend TEXT NOT NULL, fingerprint TEXT NOT NULL,
    runtime_version TEXT NOT NULL, signature TEXT NOT NULL, out_channels INTEGER NOT NULL,
    in_channels INTEGER NOT NULL, median_ms REAL NOT NULL, spread REAL NOT NULL,
    repeats INTEGER NOT NULL, p10_ms REAL NOT NULL, p90_ms REAL NOT NULL, batch INTEGER NOT NULL,
    precision TEXT NOT NULL, measured_at TEXT NOT NULL,
    PRIMARY KEY (backend, fingerprint, runtime_version, signature, out_channels, in_channels));
INSERT INTO meta VALUES ('schema_version', '1');
"""


def test_a_version_1_cache_is_migrated_keeping_its_cells_as_hot(tmp_path):
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(str(path))
    conn.executescript(V1_SCHEMA)
    conn.execute("INSERT INTO cells VALUES (?, ?, ?, ?, 16, 8, 1.5, 0.1, 9, 1.4, 1.6, 1, 'fp32', "
                 "'2026-01-01T00:00:00+00:00')", (FP.backend, FP.key(), FP.runtime_version,
                                                  SIG.key()))
    conn.commit()
    conn.close()
    with LatencyCache(path) as cache:
        assert cache.get(FP, SIG, 16, 8) == Measurement(1.5, 0.1, 9, 1.4, 1.6)
        assert cache.get(FP, SIG, 16, 8, weights="cold") is None
        cache.put(FP, SIG, 16, 8, Measurement(4.0, 0.1, 9, 3.9, 4.1), weights="cold")
        assert len(cache) == 2
    version = sqlite3.connect(str(path)).execute(
        "SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
    assert version == str(SCHEMA_VERSION)
    with LatencyCache(path) as cache:  # a second opening finds it current
        assert len(cache) == 2


def test_a_version_1_cache_with_foreign_columns_is_refused(tmp_path):
    path = tmp_path / "odd.sqlite"
    conn = sqlite3.connect(str(path))
    conn.executescript("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
                       "CREATE TABLE cells (x INTEGER);"
                       "INSERT INTO meta VALUES ('schema_version', '1');")
    conn.close()
    with pytest.raises(InputError, match=r"odd.sqlite.*version-1 'cells' table.*delete the file"):
        LatencyCache(path)


def test_a_warm_cache_on_read_only_storage_is_read_and_new_cells_kept_in_memory(
        tmp_path, monkeypatch, caplog):
    path = tmp_path / "c.sqlite"
    stored, new = Measurement(1.0, 0.0, 5, 1.0, 1.0), Measurement(2.0, 0.1, 5, 1.9, 2.1)
    with LatencyCache(path) as cache:
        cache.put(FP, SIG, 16, 8, stored)
    before = path.read_bytes()
    # Tests run as root, whom file modes do not stop: read-only storage is what access() says.
    monkeypatch.setattr(cache_module.os, "access", lambda p, mode: not mode & cache_module.os.W_OK)
    with caplog.at_level("WARNING"), LatencyCache(path) as cache:
        assert cache.read_only and "read-only" in caplog.text
        assert cache.get(FP, SIG, 16, 8) == stored
        cache.put(FP, SIG, 32, 16, new, drift=0.5)
        assert cache.get(FP, SIG, 32, 16) == new and cache.drift(FP, SIG, 32, 16) == 0.5
        assert cache.get_many(FP, SIG) == {(16, 8): stored, (32, 16): new}
        assert len(cache) == 2
    assert path.read_bytes() == before


def test_an_empty_read_only_file_is_not_a_cache(tmp_path, monkeypatch):
    path = tmp_path / "c.sqlite"
    path.write_bytes(b"")
    monkeypatch.setattr(cache_module.os, "access", lambda p, mode: not mode & cache_module.os.W_OK)
    with pytest.raises(InputError, match="empty, read-only"):
        LatencyCache(path)
