"""import.sql / export.sql edge cases: decimals wider in later chunks, empty results, mixed column types, and
SQLite files under the fetch policy's allowed roots."""
from __future__ import annotations

import contextlib
import decimal
from pathlib import Path
from typing import Iterator

import pytest
import sqlalchemy as sa

import visiondb
from visiondb.errors import AccessDeniedError, QueryError
from visiondb.ingest import FetchPolicy
from visiondb.storage import external


def _import(db, query: str, url: str, **params) -> dict:
    spec = {"type": "import.sql", "params": {"connection": url, "query": query, "outputDataset": "o", **params}}
    return db.procedures.put("imp", spec)["status"]["firstRun"]["status"]


def test_decimals_wider_in_later_chunks(remote_url: str, table_name: str) -> None:
    engine = sa.create_engine(remote_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE {table_name} (id INT, price NUMERIC(10,2), total NUMERIC(30,4))"))
        conn.execute(sa.text(f"INSERT INTO {table_name} VALUES (1, 1.50, 2), (2, 1234.50, 12345678901234567890.1234),"
                             " (3, NULL, NULL)"))
    try:
        db = visiondb.connect()
        status = _import(db, f"SELECT id, price, total FROM {table_name} ORDER BY id", remote_url, chunkSize=1)
        assert status["rowCount"] == 3
        D = decimal.Decimal
        assert db.sql("SELECT price, total FROM o ORDER BY id").fetchall() == [
            (D("1.50"), D("2.0000")), (D("1234.50"), D("12345678901234567890.1234")), (None, None)]
        price_type = db.sql("SELECT data_type FROM information_schema.columns WHERE table_name = 'o'"
                            " AND column_name = 'price'").fetchall()[0][0]
        assert price_type.startswith("DECIMAL(") and price_type.endswith(",2)")
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE {table_name}"))
        engine.dispose()


@contextlib.contextmanager
def remote_table(url: str, name: str, columns: str, values: str) -> Iterator[None]:
    """A table `name` with `values` in the remote database for the block, dropped after it."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE {name} ({columns})"))
        conn.execute(sa.text(f"INSERT INTO {name} VALUES {values}"))
    try:
        yield
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE {name}"))
        engine.dispose()


def test_empty_result_creates_or_replaces_the_output(remote_url: str, table_name: str) -> None:
    with remote_table(remote_url, table_name, "id INT, v VARCHAR(10)", "(1, 'a'), (2, 'b')"):
        db = visiondb.connect()
        none = f"SELECT id, v FROM {table_name} WHERE id > 100"
        assert _import(db, none, remote_url)["rowCount"] == 0
        assert [c[0] for c in db.sql("DESCRIBE o").fetchall()] == ["_rowName", "id", "v"]
        assert _import(db, f"SELECT id, v FROM {table_name}", remote_url)["rowCount"] == 2
        assert _import(db, none, remote_url)["rowCount"] == 0  # the earlier rows are replaced, not kept
        assert db.sql("SELECT count(*) FROM o").fetchall() == [(0,)]


def test_mixed_types_name_the_column(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (id INTEGER, v)"))
        conn.execute(sa.text("INSERT INTO t VALUES (1, 5), (2, 'five')"))
    engine.dispose()
    db = visiondb.connect()
    with pytest.raises(QueryError, match="result column .v.: values do not fit the type int64 set by earlier rows"):
        _import(db, "SELECT id, v FROM t ORDER BY id", url, chunkSize=1)


def test_sqlite_files_obey_allowed_roots(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    db = visiondb.connect(fetch_policy=FetchPolicy(allowed_roots=[root]))
    outside, inside = f"sqlite:///{tmp_path / 'outside.db'}", f"sqlite:///{root / 'inside.db'}"
    export = {"inputData": "SELECT 42 AS x", "outputTable": "t"}
    with pytest.raises(AccessDeniedError, match="outside the allowed roots"):
        db.procedures.put("e", {"type": "export.sql", "params": {"connection": outside, **export}})
    assert not (tmp_path / "outside.db").exists()
    engine = sa.create_engine(outside)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t AS SELECT 7 AS x"))
    engine.dispose()
    with pytest.raises(AccessDeniedError, match="outside the allowed roots"):
        _import(db, "SELECT * FROM t", outside)
    (root / "link.db").symlink_to(tmp_path / "outside.db")
    with pytest.raises(AccessDeniedError, match="outside the allowed roots"):
        _import(db, "SELECT * FROM t", f"sqlite:///{root / 'link.db'}")
    db.procedures.put("e", {"type": "export.sql", "params": {"connection": inside, **export}})
    assert _import(db, "SELECT * FROM t", inside)["rowCount"] == 1
    assert _import(db, "SELECT 1 AS one", "sqlite://")["rowCount"] == 1  # in memory: no file to check
    assert external.make_engine(outside).url.database == str(tmp_path / "outside.db")  # no policy: unchanged


def test_a_failed_query_keeps_the_last_runs_tables(remote_url: str, table_name: str) -> None:
    """A query that fails (missing table, refused login) replaces nothing: no new empty `<out>_errors` table either."""
    with remote_table(remote_url, table_name, "id INT", "(1), (2)"):
        db = visiondb.connect()
        assert _import(db, f"SELECT id FROM {table_name}", remote_url)["rowCount"] == 2
        db.sql("INSERT INTO o_errors (_rowName, cause) VALUES ('x', 'kept from the last run')")
        with pytest.raises(QueryError):
            _import(db, f"SELECT id FROM {table_name}_missing", remote_url)
        assert db.sql("SELECT count(*) FROM o").fetchall() == [(2,)]
        assert db.sql("SELECT cause FROM o_errors").fetchall() == [("kept from the last run",)]
        fresh = visiondb.connect()
        with pytest.raises(QueryError):
            _import(fresh, f"SELECT id FROM {table_name}_missing", remote_url)
        assert not fresh.table_exists("o_errors") and not fresh.table_exists("o")


@pytest.mark.parametrize("rows", [0, 2**63])
def test_chunk_size_is_bounded(rows: int) -> None:
    from visiondb.errors import ConfigError

    db = visiondb.connect()
    with pytest.raises(ConfigError, match="chunkSize must be between 1 and") as err:
        _import(db, "SELECT 1 AS one", "sqlite://", chunkSize=rows)
    assert err.value.details["field"] == "params.chunkSize"
    with pytest.raises(ConfigError, match="chunkSize must be between 1 and"):
        db.procedures.put("e", {"type": "export.sql", "params": {
            "connection": "sqlite://", "inputData": "SELECT 1 AS x", "outputTable": "t", "chunkSize": rows}})
