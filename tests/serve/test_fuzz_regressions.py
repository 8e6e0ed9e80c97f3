"""Regressions found by fuzzing the REST API (schemathesis + hypothesis + hand-made bad requests): each answered a
500 or leaked a traceback before. Bad input must be a JSON 4xx naming the field; odd values must not break output."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import visiondb
from tests.serve.conftest import TOKEN
from visiondb.core.registry import PROCEDURE_TYPES
from visiondb.serve.app import create_app
from visiondb.serve.settings import ServerSettings

AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {**AUTH, "content-type": "application/json"}


@pytest.fixture
def client(tmp_path: Path):
    db = visiondb.connect(tmp_path / "fuzz.vdb")
    with TestClient(create_app(db, ServerSettings(token=TOKEN)), raise_server_exceptions=False) as c:
        c.db = db  # type: ignore[attr-defined]
        assert c.put("/v1/functions/up", headers=AUTH,
                     json={"type": "sql.expression", "params": {"expression": "upper(x)"}}).status_code == 201
        assert c.put("/v1/procedures/p", headers=AUTH, json={"type": "transform", "params": {
            "inputData": "SELECT 1 AS a", "outputDataset": "out", "runOnCreation": False}}).status_code == 201
        yield c
    db.close()


def assert_400(resp, field: str, *needles: str) -> dict:
    assert resp.status_code == 400, resp.text
    body = resp.json()
    assert set(body) == {"error", "httpCode", "details"} and body["httpCode"] == 400
    assert body["details"]["field"] == field, body
    for needle in needles:
        assert needle in body["error"], body
    assert "Traceback" not in resp.text
    return body


BAD_BODIES = {
    "not utf-8": (b'\xd2\t\xd4\x83@', "not UTF-8"),
    "deep objects": (b'{"a":' * 5000 + b"1" + b"}" * 5000, "nested too deeply"),
    "deep arrays": (b"[" * 100000, "nested too deeply"),
    "huge integer": (b'{"params": {"x": 1' + b"0" * 5000 + b"}}", "not valid JSON"),
}


@pytest.mark.parametrize("name", sorted(BAD_BODIES))
@pytest.mark.parametrize("path", ["/v1/procedures/p/runs", "/v1/functions/up/application"])
def test_malformed_json_bodies_are_400(client: TestClient, path: str, name: str) -> None:
    """Non-UTF-8 bytes, nesting past the recursion limit and integers past Python's digit limit were 500s
    (UnicodeDecodeError, RecursionError, ValueError) on the routes that parse their own bodies."""
    raw, needle = BAD_BODIES[name]
    assert_400(client.post(path, headers=JSON, content=raw), "body", needle)


@pytest.mark.parametrize("raw, needle", [
    ('{"a":' * 3000 + "1" + "}" * 3000, "nested too deeply"),
    ("[" * 3000, "nested too deeply"),
    ('{"x": 1' + "0" * 5000 + "}", "not valid JSON"),
])
def test_malformed_application_input_query_is_400(client: TestClient, raw: str, needle: str) -> None:
    resp = client.get("/v1/functions/up/application", params={"input": raw})
    assert_400(resp, "input", needle)
    ok = client.get("/v1/functions/up/application", params={"input": json.dumps({"x": "ab"})})
    assert ok.status_code == 200 and ok.json()["output"] == {"output": "AB"}


def test_out_of_range_dates_in_query_results(client: TestClient) -> None:
    """DuckDB's infinite and far-future dates/timestamps do not fit Python's datetime: they were a 500
    (OverflowError); now such a column answers strings, nested values included, other columns unchanged."""
    sql = ("SELECT 'infinity'::DATE AS d, '-infinity'::TIMESTAMP AS t, DATE '294247-01-10' AS far, "
           "[DATE 'infinity', NULL] AS l, {'a': 'infinity'::TIMESTAMP, 'b': 1} AS s, DATE '2024-01-02' AS ok")
    for fmt in ("json", "table", "soa"):
        resp = client.get("/v1/query", params={"q": sql, "format": fmt})
        assert resp.status_code == 200, resp.text
    row = client.get("/v1/query", params={"q": sql}).json()[0]
    assert row == {"d": "infinity", "t": "-infinity", "far": "294247-01-10", "l": ["infinity", None],
                   "s": {"a": "infinity", "b": 1}, "ok": "2024-01-02"}


@pytest.mark.parametrize("method, path, allowed", [
    ("PATCH", "/v1/functions/up", "GET, PUT, DELETE"),
    ("TRACE", "/v1/query", "GET"),
    ("PUT", "/v1/functions/up/application", "GET, POST"),
    ("DELETE", "/v1/functions", "GET, POST"),
])
def test_405_names_every_allowed_method(client: TestClient, method: str, path: str, allowed: str) -> None:
    """A 405 had no `Allow` header (RFC 9110 requires it); Starlette's own would name only one route's methods."""
    resp = client.request(method, path, headers=AUTH)
    assert resp.status_code == 405 and resp.headers["allow"] == allowed
    assert resp.json()["httpCode"] == 405 and allowed in resp.json()["error"]


def test_failed_run_bodies_carry_no_traceback(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unexpected exception inside a run is stored with its traceback (Python API); REST answers the error
    message and run record, never the Python traceback, in the 400 and in the run records."""
    def broken(self, ctx):  # noqa: ANN001
        raise RuntimeError("boom in the procedure")

    monkeypatch.setattr(PROCEDURE_TYPES.get("transform"), "run", broken)
    resp = client.post("/v1/procedures/p/runs", headers=AUTH, json={})
    assert resp.status_code == 400, resp.text
    body = resp.json()
    assert "RuntimeError: boom in the procedure" in body["error"]
    status = body["details"]["run"]["status"]
    assert status["error"] == body["error"] and "traceback" not in status
    assert "Traceback" not in resp.text and 'File "' not in resp.text
    run_id = body["details"]["run"]["id"]
    for path in ("/v1/procedures/p/runs", f"/v1/procedures/p/runs/{run_id}"):
        got = client.get(path)
        assert got.status_code == 200 and "Traceback" not in got.text and "boom in the procedure" in got.text
    stored = client.db.procedures.get_run("p", run_id)  # type: ignore[attr-defined]
    assert "Traceback" in stored["status"]["traceback"]  # the Python API keeps it
