"""Errors raised inside SQL functions keep their type through DuckDB: a refused file is 403 and a missing one 400 on
every route (batched application, plain application, /v1/query), with visiondb's own message."""
from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import visiondb
from tests.serve.conftest import TOKEN
from visiondb.errors import AccessDeniedError, FetchError, QueryError
from visiondb.serve.app import create_app
from visiondb.serve.settings import ServerSettings

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def client(tmp_path: Path):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "note.txt").write_text("hello")
    db = visiondb.connect(tmp_path / "udf.vdb")
    with TestClient(create_app(db, ServerSettings(token=TOKEN, allow_roots=[allowed])),
                    raise_server_exceptions=False) as c:
        c.allowed = allowed  # type: ignore[attr-defined]
        for name, expression in {"body": "fetch_bytes(x)", "pair": "octet_length(fetch_bytes(x)) + y"}.items():
            assert c.put(f"/v1/functions/{name}", headers=AUTH, json={
                "type": "sql.expression", "params": {"expression": expression}}).status_code == 201
        yield c
    db.close()


def assert_error(resp, code: int, *needles: str) -> dict:
    assert resp.status_code == code, resp.text
    body = resp.json()
    assert body["httpCode"] == code
    for needle in needles:
        assert needle in body["error"], body
    assert "Python exception occurred" not in body["error"]  # DuckDB's wrapping is gone
    return body


@pytest.mark.parametrize("route", ["batched", "plain", "query"])
def test_refused_and_missing_files_keep_their_status(client: TestClient, route: str) -> None:
    def request(path: str):
        if route == "batched":  # one URI input: the micro-batcher's statement
            return client.post("/v1/functions/body/application", headers=AUTH, json={"input": {"x": path}})
        if route == "plain":  # two inputs: `db.functions.apply`
            return client.post("/v1/functions/pair/application", headers=AUTH, json={"input": {"x": path, "y": 1}})
        return client.get("/v1/query", headers=AUTH, params={"q": f"SELECT fetch_bytes('{path}') AS b"})

    body = assert_error(request("/etc/hostname"), 403, "/etc/hostname", "outside the allowed roots")
    assert body["details"]["uri"] == "/etc/hostname"
    missing = str(client.allowed / "missing.jpg")  # type: ignore[attr-defined]
    assert_error(request(missing), 400, missing)
    good = request(str(client.allowed / "note.txt"))  # type: ignore[attr-defined]
    assert good.status_code == 200, good.text


def test_python_api_raises_the_udf_error_type(tmp_path: Path) -> None:
    db = visiondb.connect(tmp_path / "api.vdb")
    try:
        db.functions.put("body", {"type": "sql.expression", "params": {"expression": "fetch_bytes(x)"}})
        missing = str(tmp_path / "missing.jpg")
        with pytest.raises(FetchError, match="missing.jpg") as info:
            db.sql(f"SELECT body('{missing}')").fetchall()
        assert not isinstance(info.value, AccessDeniedError) and info.value.details["uri"] == missing
        with pytest.raises(FetchError, match="missing.jpg"):
            db.functions.apply("body", {"x": missing})
        with pytest.raises(QueryError, match="no_such_function"):  # plain SQL errors stay QueryError
            db.sql("SELECT no_such_function(1)")
    finally:
        db.close()


def test_a_forged_error_text_does_not_claim_a_kept_error(tmp_path: Path) -> None:
    """Errors were matched by their text alone: `SELECT error('<that text>')` came back as the other statement's
    FetchError, details and all. Each kept error now answers only to a random tag in its own statement's text."""
    from visiondb.sql import udf

    db = visiondb.connect(tmp_path / "forge.vdb")
    try:
        missing = str(tmp_path / "missing.jpg")
        with pytest.raises(FetchError) as real:
            db.sql(f"SELECT fetch_bytes('{missing}')")
        assert "visiondb error" not in real.value.message  # the tag is taken off again
        text = f"Python exception occurred while executing the UDF: FetchError: {real.value.message}"
        with pytest.raises(QueryError) as forged:
            db.sql("SELECT error(?)", [text])
        assert not isinstance(forged.value, FetchError)
        # what is kept is plain data: no exception object (its traceback would pin the UDF's batch in memory)
        assert all(isinstance(message, str) and isinstance(details, dict) for _, message, details in udf._raised.values())
    finally:
        db.close()


def test_procedures_report_a_function_error_without_its_tag(tmp_path: Path) -> None:
    """import.text, export.sql and a transform over a view formatted DuckDB's text of a function's error: the tag
    that finds it again reached run records (and with it a way to claim it); the view's transform failed only when
    chunked."""
    from visiondb.errors import VisionDBError

    db = visiondb.connect(tmp_path / "tags.vdb")
    try:
        db.sql("CREATE TABLE src AS SELECT 'r' || i AS _rowName, '/nonexistent/x' || i || '.jpg' AS uri FROM range(3) t(i)")
        db.sql("CREATE VIEW v AS SELECT _rowName, fetch_bytes(uri) AS b FROM src")
        csv = tmp_path / "a.csv"
        csv.write_text("uri\n/nonexistent/y.jpg\n")
        configs = {
            "ex": {"type": "export.sql", "params": {"connection": "sqlite://", "outputTable": "o",
                                                    "inputData": "SELECT fetch_bytes(uri) AS b FROM src"}},
            "im": {"type": "import.text", "params": {"dataFileUrl": str(csv), "outputDataset": "imp",
                                                     "select": "fetch_bytes(uri) AS b"}},
        }
        for pid, config in configs.items():
            with pytest.raises(FetchError) as err:
                db.procedures.put(pid, config)
            assert "visiondb error" not in str(err.value.details["run"]) and "no such file" in err.value.message
        for chunk in (1, 1000):  # the view runs whole: its row errors are recorded, whatever the chunk size
            run = db.procedures.put(f"tv{chunk}", {"type": "transform", "params": {
                "inputData": "SELECT * FROM v", "outputDataset": f"ov{chunk}", "chunkSize": chunk}})["status"]["firstRun"]
            assert run["state"] == "finished" and run["status"]["errorCount"] == 3, run
            assert "visiondb error" not in str(run)
    except VisionDBError as exc:
        raise AssertionError(exc.message) from None
    finally:
        db.close()
