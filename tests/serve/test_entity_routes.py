"""Entity routes: failed replacements keep the old entity, case-only id clashes are 409, views delete cleanly,
`runOnCreation` must be a boolean, and oversize bodies are 413 however they are sent."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest
from fastapi.testclient import TestClient

import visiondb
from tests.serve.conftest import TOKEN
from visiondb.serve.app import create_app
from visiondb.serve.settings import ServerSettings

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def client(tmp_path: Path):
    db = visiondb.connect(tmp_path / "routes.vdb")
    with TestClient(create_app(db, ServerSettings(token=TOKEN, max_body_bytes=1000)),
                    raise_server_exceptions=False) as c:
        c.db = db  # type: ignore[attr-defined]
        yield c
    db.close()


def apply(client: TestClient, fid: str, x: str) -> dict:
    return client.get(f"/v1/functions/{fid}/application", params={"input": json.dumps({"x": x})}).json()


def test_failed_put_keeps_the_old_function(client: TestClient) -> None:
    upper = {"type": "sql.expression", "params": {"expression": "upper(x)"}}
    assert client.put("/v1/functions/f", headers=AUTH, json=upper).status_code == 201
    assert apply(client, "f", "ab")["output"] == {"output": "AB"}
    broken = {"type": "sql.expression", "params": {"expression": "upper(x"}}
    bad = client.put("/v1/functions/f", headers=AUTH, json=broken)
    assert bad.status_code == 400 and bad.json()["details"]["field"] == "params.expression"
    assert client.get("/v1/functions/f").json()["config"]["params"]["expression"] == "upper(x)"
    assert apply(client, "f", "ab")["output"] == {"output": "AB"}
    assert client.get("/v1/query", params={"q": "SELECT f('ab') AS y"}).json() == [{"y": "AB"}]


def test_case_only_clash_is_409(client: TestClient) -> None:
    client.db.sql("CREATE TABLE d AS SELECT 42 AS v")  # type: ignore[attr-defined]
    client.db.datasets.register_output("d")  # type: ignore[attr-defined]
    resp = client.put("/v1/datasets/D", headers=AUTH, json={"type": "tabular"})
    assert resp.status_code == 409 and "'d'" in resp.json()["error"] and resp.json()["details"]["existing"] == "d"
    assert client.delete("/v1/datasets/D", headers=AUTH).status_code == 404
    assert client.get("/v1/query", params={"q": "SELECT v FROM d"}).json() == [{"v": 42}]


@pytest.mark.parametrize("value", ["false", "true", 0, []])
def test_run_on_creation_must_be_a_boolean(client: TestClient, value: object) -> None:
    resp = client.put("/v1/procedures/p", headers=AUTH, json={"type": "transform", "params": {
        "inputData": "SELECT 1 AS a", "outputDataset": "out", "runOnCreation": value}})
    assert resp.status_code == 400 and resp.json()["details"]["field"] == "params.runOnCreation"
    assert "runOnCreation" in resp.json()["error"]
    assert client.get("/v1/datasets").json() == []


def test_deleting_a_view_dataset(client: TestClient) -> None:
    client.db.sql("CREATE VIEW v1 AS SELECT 1 AS a")  # type: ignore[attr-defined]
    client.db.datasets.register_output("v1")  # type: ignore[attr-defined]
    assert client.delete("/v1/datasets/v1", headers=AUTH).status_code == 204
    assert client.get("/v1/datasets").json() == []
    resp = client.get("/v1/query", params={"q": "SELECT count(*) AS n FROM duckdb_views() WHERE view_name = 'v1'"})
    assert resp.json() == [{"n": 0}]


def _chunks(data: bytes, size: int = 200) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


@pytest.mark.parametrize("method, path", [
    ("PUT", "/v1/functions/big"), ("POST", "/v1/functions"), ("PUT", "/v1/datasets/big"),
    ("POST", "/v1/procedures/p/runs"),
])
def test_oversize_chunked_body_is_413(client: TestClient, method: str, path: str) -> None:
    big = json.dumps({"type": "sql.expression", "params": {"expression": "'" + "a" * 3000 + "'"}}).encode()
    resp = client.request(method, path, content=_chunks(big), headers={**AUTH, "content-type": "application/json"})
    assert resp.status_code == 413, resp.text
    assert resp.json()["httpCode"] == 413 and "limit" in resp.json()["error"]
    assert client.get("/v1/functions").json() == []
    small = client.put("/v1/functions/ok", headers={**AUTH, "content-type": "application/json"},
                       content=_chunks(json.dumps({"type": "sql.expression", "params": {"expression": "x"}}).encode()))
    assert small.status_code == 201, small.text  # a chunked body under the limit still works


def test_connection_passwords_never_leave_over_rest(client: TestClient) -> None:
    """A config keeps its connection URL as given (runs need it); REST shows it masked, in the entity, in run
    records and in a failed run's error body."""
    secret = "hunter2-do-not-show"
    url = f"mysql+pymysql://root:{secret}@127.0.0.1:3306/test"
    config = {"type": "import.sql", "params": {
        "connection": url, "query": "SELECT 1 AS x", "outputDataset": "t", "runOnCreation": False}}
    put = client.put("/v1/procedures/p", headers=AUTH, json=config)
    assert put.status_code == 201 and secret not in put.text, put.text
    got = client.get("/v1/procedures/p")
    assert got.status_code == 200 and secret not in got.text
    assert got.json()["config"]["params"]["connection"] == "mysql+pymysql://root:***@127.0.0.1:3306/test"
    run = client.post("/v1/procedures/p/runs", headers=AUTH, json={})
    assert run.status_code == 400 and secret not in run.text  # refused or denied: the body must not tell
    runs = client.get("/v1/procedures/p/runs")
    assert runs.status_code == 200 and runs.json() and secret not in runs.text
    assert client.db.catalog.get_entity("procedure", "p")[1]["connection"] == url  # stored as given
