import sqlite3

import pytest

from mdp_trt.errors import InputError
from mdp_trt.latency import cache as cache_module
from mdp_trt.latency.cache import SCHEMA_VERSION, LatencyCache, default_cache_path
from mdp_trt.latency.protocol import DeviceFingerprint, Measurement

from .fixtures import conv_sig

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
    with pytest.raises(InputError, match=r"latency.sqlite.*delete the file.*--cache"):
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
    assert cache_module.SCHEMA_VERSION == 1


def test_two_open_caches_on_one_file_share_rows(tmp_path):
    path = tmp_path / "c.sqlite"
    with LatencyCache(path) as a, LatencyCache(path) as b:
        a.put(FP, SIG, 16, 8, Measurement(1.0, 0.0, 5, 1.0, 1.0))
        assert b.get(FP, SIG, 16, 8) == Measurement(1.0, 0.0, 5, 1.0, 1.0)
        mode = sqlite3.connect(str(path)).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
