"""import.sql / export.sql and the external-DB helpers against real MariaDB, PostgreSQL and SQLite."""
from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
import pytest
import sqlalchemy as sa
from PIL import Image

import visiondb
from visiondb.errors import VisionDBError
from visiondb.storage import external
from tests.support.httpserver import TestHTTPServer, make_jpeg


def png(value: int, size: int = 28) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (size, size), value).save(buf, format="PNG")
    return buf.getvalue()


def count(url: str, table: str) -> int:
    engine = external.make_engine(url)
    try:
        return next(external.stream_query(engine, f"SELECT COUNT(*) AS n FROM {table}")).column(0)[0].as_py()
    finally:
        engine.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'remote.db'}"


def _roundtrip(url: str, name: str) -> None:
    """Upsert twice (idempotent), stream back in chunks, import with images, export back, re-export."""
    engine = external.make_engine(url)
    images = [png(i * 20) for i in range(7)] + [b"<html>not an image</html>"]
    data = pa.table({"id": pa.array(range(8), pa.int32()), "image": pa.array(images, pa.binary()),
                     "tag": [f"t{i}" for i in range(7)] + [None]})
    try:
        table = external.ensure_table(engine, name, data.schema, ["id"])
        external.upsert_arrow(engine, table, data, ["id"])
        external.upsert_arrow(engine, table, data, ["id"])
        assert count(url, name) == 8
        chunks = list(external.stream_query(engine, f"SELECT * FROM {name} ORDER BY id", chunk_size=3))
        assert [c.num_rows for c in chunks] == [3, 3, 2]
        assert pa.concat_tables(chunks).column("image").to_pylist()[:7] == images[:7]

        db = visiondb.connect()
        run = db.procedures.put("imp", {"type": "import.sql", "params": {
            "connection": url, "query": f"SELECT * FROM {name} ORDER BY id", "outputDataset": "items",
            "named": "id", "chunkSize": 3}})["status"]["firstRun"]
        assert run["status"]["rowCount"] == 7 and run["status"]["errorCount"] == 1
        assert run["errors"][0]["row"] == "7" and "not an image" in run["errors"][0]["cause"]
        rows = db.sql("SELECT _rowName, image, tag FROM items ORDER BY id").fetchall()
        assert [r[0] for r in rows] == [str(i) for i in range(7)]
        assert rows[2][1]["uri"] == f"sql:{name}/2" and rows[2][1]["width"] == 28
        assert db.media.get(rows[2][1]["sha256"]) == images[2]
        assert db.sql("SELECT _rowName, uri FROM items_errors").fetchall() == [("7", f"sql:{name}/7")]

        export = {"type": "export.sql", "params": {"connection": url, "outputTable": name + "_out", "key": "_rowName",
                  "inputData": "SELECT _rowName, id, image, tag FROM items", "chunkSize": 4}}
        assert db.procedures.put("exp", export)["status"]["firstRun"]["status"]["rowsWritten"] == 7
        db.sql("UPDATE items SET tag = 'changed' WHERE _rowName = '3'")
        db.procedures.run("exp")
        assert count(url, name + "_out") == 7
        back = next(external.stream_query(engine, f"SELECT tag, image FROM {name}_out WHERE id = 3"))
        assert back.column("tag")[0].as_py() == "changed"
        assert f"sql:{name}/3" in back.column("image")[0].as_py()  # image values travel as JSON text
        db.close()
    finally:
        external.drop_table(engine, name)
        external.drop_table(engine, name + "_out")
        engine.dispose()


def test_roundtrip_remote(remote_url: str, table_name: str) -> None:
    _roundtrip(remote_url, table_name)


def test_roundtrip_sqlite(sqlite_url: str) -> None:
    _roundtrip(sqlite_url, "things")


def test_import_sql_fetches_uri_column(sqlite_url: str, tmp_path: Path) -> None:
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "a.jpg").write_bytes(make_jpeg(40, 30))
    with TestHTTPServer(tmp_path / "www") as srv:
        engine = external.make_engine(sqlite_url)
        data = pa.table({"id": [1, 2, 3], "image": [srv.url("a.jpg"), srv.url("missing.jpg"), None]})
        external.upsert_arrow(engine, external.ensure_table(engine, "uris", data.schema, ["id"]), data, ["id"])
        db = visiondb.connect()
        run = db.procedures.put("imp", {"type": "import.sql", "params": {
            "connection": sqlite_url, "query": "SELECT * FROM uris", "outputDataset": "pics"}})["status"]["firstRun"]
        assert run["status"]["rowCount"] == 2 and run["status"]["errorCount"] == 1
        got = dict(db.sql("SELECT _rowName, image FROM pics").fetchall())
        assert got["1"]["uri"] == srv.url("a.jpg") and got["1"]["width"] == 40 and got["3"] is None
        assert db.sql("SELECT status FROM pics_errors").fetchall() == [(404,)]
        db.procedures.put("keep", {"type": "import.sql", "params": {"connection": sqlite_url, "fetchImages": False,
                                    "query": "SELECT * FROM uris", "outputDataset": "raw"}})
        assert db.sql("SELECT typeof(image) FROM raw LIMIT 1").fetchall() == [("VARCHAR",)]
        engine.dispose()


def test_password_is_masked_in_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VISIONDB_SQL_PASSWORD", "s3cret-from-env")
    engine = external.make_engine("postgresql+psycopg://someone@127.0.0.1:1/test")
    assert engine.url.password == "s3cret-from-env"
    assert "s3cret" not in external.masked(engine) and "***" in external.masked(engine)
    db = visiondb.connect()
    with pytest.raises(VisionDBError) as info:
        db.procedures.put("imp", {"type": "import.sql", "params": {
            "connection": "mysql+pymysql://u:hunter2@127.0.0.1:1/test", "query": "SELECT 1", "outputDataset": "x"}})
    text = str(info.value) + repr(info.value.details)
    assert "hunter2" not in text and "127.0.0.1:1" in text


def test_bad_query_names_database(sqlite_url: str) -> None:
    db = visiondb.connect()
    with pytest.raises(VisionDBError, match="no such table"):
        db.procedures.put("imp", {"type": "import.sql", "params": {
            "connection": sqlite_url, "query": "SELECT * FROM nope", "outputDataset": "x"}})


def test_export_without_key_column_is_config_error(sqlite_url: str) -> None:
    db = visiondb.connect()
    db.sql("CREATE TABLE t AS SELECT 1 AS a")
    with pytest.raises(VisionDBError, match="key column"):
        db.procedures.put("exp", {"type": "export.sql", "params": {
            "connection": sqlite_url, "inputData": "SELECT * FROM t", "outputTable": "t", "key": "b"}})
    assert sa.inspect(external.make_engine(sqlite_url)).get_table_names() == []
