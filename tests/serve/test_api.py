"""REST API over a real server: CRUD, runs, query formats, and a JSON 4xx for every kind of bad request."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests

from tests.serve.conftest import TOKEN
from tests.serve.live import LiveServer
from tests.support.httpserver import TestHTTPServer

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("allowed")
    (root / "people.csv").write_text("name,age,score\nann,31,1.5\nbob,42,nan\ncid,27,2.25\n")
    return root


@pytest.fixture(scope="module")
def www(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("www")
    (root / "pets.csv").write_text("kind,legs\ncat,4\nbird,2\n")
    with TestHTTPServer(root) as srv:
        yield srv


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, files: Path):
    db_path = tmp_path_factory.mktemp("db") / "api.vdb"
    with LiveServer(db_path, token=TOKEN, allow_roots=[files], allow_fetch=["127.0.0.1"],
                    max_body_bytes=2 * 1024 * 1024, max_upload_bytes=1024 * 1024) as srv:
        yield srv


def call(server: LiveServer, method: str, path: str, *, auth: bool = True, **kw) -> requests.Response:
    headers = dict(AUTH) if auth else {}
    headers.update(kw.pop("headers", {}))
    return requests.request(method, server.url + path, headers=headers, timeout=120, **kw)


def assert_error(resp: requests.Response, code: int, *needles: str) -> dict:
    assert resp.status_code == code, (resp.status_code, resp.text)
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert body["httpCode"] == code and isinstance(body["error"], str)
    for needle in needles:
        assert needle.lower() in (body["error"] + str(body.get("details"))).lower(), body
    return body


def test_docs_and_openapi(server: LiveServer) -> None:
    spec = call(server, "GET", "/openapi.json").json()
    assert "/v1/functions/{id}/application" in spec["paths"] and "/v1/query" in spec["paths"]
    assert "ErrorBody" in spec["components"]["schemas"] and "RunRecord" in spec["components"]["schemas"]
    assert call(server, "GET", "/docs").status_code == 200


def test_import_query_crud(server: LiveServer, files: Path) -> None:
    config = {"type": "import.text", "params": {"dataFileUrl": str(files / "people.csv"), "outputDataset": "people"}}
    resp = call(server, "PUT", "/v1/procedures/imp_people", json=config)
    assert resp.status_code == 201, resp.text
    first = resp.json()["status"]["firstRun"]
    assert first["state"] == "finished" and first["status"]["rowCount"] == 3
    assert "people" in call(server, "GET", "/v1/datasets").json()
    assert call(server, "GET", "/v1/datasets/people").json()["status"]["rowCount"] == 3
    q = "SELECT name, age, score FROM people ORDER BY name"
    table = call(server, "GET", "/v1/query", params={"q": "SELECT * FROM people ORDER BY name", "format": "table"})
    assert table.json()[0][0] == "_rowName" and len(table.json()) == 4
    aos = call(server, "GET", "/v1/query", params={"q": q}).json()
    assert aos[0] == {"name": "ann", "age": 31, "score": 1.5} and aos[1]["score"] is None  # NaN -> null
    soa = call(server, "GET", "/v1/query", params={"q": q, "format": "soa"}).json()
    assert soa["name"] == ["ann", "bob", "cid"]
    odd = call(server, "GET", "/v1/query", params={"q": "SELECT 'x'::BLOB AS b, DATE '2024-01-02' AS d, [1,2] AS l"})
    assert odd.json() == [{"b": "eA==", "d": "2024-01-02", "l": [1, 2]}]
    # runs: synchronous (default) and background
    run = call(server, "POST", "/v1/procedures/imp_people/runs", json={"params": {"outputDataset": "people2"}})
    assert run.status_code == 201 and run.json()["state"] == "finished"
    started = call(server, "POST", "/v1/procedures/imp_people/runs", params={"async": "true"})
    assert started.status_code == 201 and started.json()["state"] in ("pending", "executing", "finished")
    run_id = started.json()["id"]
    for _ in range(200):
        state = call(server, "GET", f"/v1/procedures/imp_people/runs/{run_id}").json()
        if state["state"] in ("finished", "error"):
            break
        time.sleep(0.05)
    assert state["state"] == "finished" and state["runFinished"] and state["progress"]["done"] == 3
    assert len(call(server, "GET", "/v1/procedures/imp_people/runs").json()) == 3
    # delete
    assert call(server, "DELETE", "/v1/datasets/people2").status_code == 204
    assert_error(call(server, "GET", "/v1/datasets/people2"), 404, "people2")


def test_functions_and_post(server: LiveServer) -> None:
    resp = call(server, "PUT", "/v1/functions/twice", json={"type": "sql.expression", "params": {"expression": "x * 2"}})
    assert resp.status_code == 201 and resp.json()["id"] == "twice"
    got = call(server, "GET", "/v1/functions/twice/application", params={"input": '{"x": 21}'})
    assert got.json()["output"] == {"output": 42}
    posted = call(server, "POST", "/v1/functions/twice/application", json={"input": {"x": 5}})
    assert posted.json()["output"] == {"output": 10}
    created = call(server, "POST", "/v1/functions", json={"type": "sql.expression", "params": {"expression": "x+1"}})
    assert created.status_code == 201
    fid = created.json()["id"]
    assert fid in call(server, "GET", "/v1/functions").json()
    assert call(server, "GET", f"/v1/functions/{fid}").json()["type"] == "sql.expression"
    # a single string input goes through the micro-batcher (one statement)
    call(server, "PUT", "/v1/functions/shout", json={"type": "sql.expression", "params": {"expression": "upper(s)"}})
    assert call(server, "GET", "/v1/functions/shout/application", params={"input": '{"s": "hi"}'}).json()["output"] \
        == {"output": "HI"}
    assert call(server, "GET", "/v1/batching").json()["shout"]["statements"] == 1


def test_every_bad_request_is_a_json_4xx(server: LiveServer, files: Path, www: TestHTTPServer) -> None:
    imp = lambda url: {"type": "import.text", "params": {"dataFileUrl": url, "outputDataset": "bad_out"}}  # noqa: E731
    cases = [
        (("GET", "/v1/nowhere"), {}, 404, "no route"),
        (("DELETE", "/v1/query"), {}, 405, "not allowed"),
        (("PUT", "/v1/functions/f1"), {"json": {"type": "no.such.type"}}, 400, "unknown function type"),
        (("PUT", "/v1/functions/f1"), {"data": "{not json", "headers": {"content-type": "application/json"}}, 400,
         "json"),
        (("PUT", "/v1/functions/f1"), {"json": {"params": {}}}, 400, "type"),
        (("PUT", "/v1/functions/f1"), {"json": {"type": "sql.expression", "params": {"expresion": "1"}}}, 400,
         "expresion"),
        (("PUT", "/v1/procedures/p1"), {"json": {"type": "import.text", "params": {}}}, 400, "dataFileUrl"),
        (("GET", "/v1/query"), {"params": {"q": "SELEC 1"}}, 400, "syntax"),
        (("GET", "/v1/query"), {"params": {"q": "SELECT * FROM no_such_table"}}, 400, "no_such_table"),
        (("GET", "/v1/query"), {}, 400, "q"),
        (("GET", "/v1/query"), {"params": {"q": "SELECT 1", "format": "xml"}}, 400, "format"),
        (("GET", "/v1/query"), {"params": {"q": "SELECT * FROM read_csv('/etc/passwd')"}, "auth": False}, 403,
         "read_csv"),
        (("GET", "/v1/query"), {"params": {"q": "SELECT * FROM '/etc/hosts.csv'"}, "auth": False}, 403, "file"),
        (("GET", "/v1/query"), {"params": {"q": "CREATE TABLE t1 AS SELECT 1"}, "auth": False}, 401, "token"),
        (("GET", "/v1/query"), {"params": {"q": "SELECT 1; DROP TABLE people"}, "auth": False}, 401, "token"),
        (("GET", "/v1/functions/nope/application"), {}, 404, "nope"),
        (("GET", "/v1/functions/twice/application"), {"params": {"input": "{x"}}, 400, "input"),
        (("POST", "/v1/functions/twice/application"), {"json": {"inptu": {}}}, 400, "inptu"),
        (("POST", "/v1/functions/twice/application"), {"json": {"input": {"y": 1, "z": 2}}}, 400, "x"),
        (("POST", "/v1/functions/shout/application"), {"files": {"file": ("a.txt", b"hello, not an image")}}, 400,
         "not an image"),
        (("POST", "/v1/functions/shout/application"), {"files": {"file": ("big.jpg", b"\xff\xd8\xff" + b"0" * (1 << 20))}},
         413, "upload limit"),
        (("POST", "/v1/functions/shout/application"), {"json": {"input": {"s": {"base64": "%%%"}}}}, 400, "base64"),
        (("PUT", "/v1/functions/f2"), {"data": b"x" * (3 << 20), "headers": {"content-type": "application/json"}},
         413, "limit"),
        (("PUT", "/v1/procedures/p_priv"), {"json": imp("http://10.1.2.3/x.csv")}, 403, "10.1.2.3"),
        (("PUT", "/v1/procedures/p_meta"), {"json": imp("http://169.254.169.254/latest")}, 403, "non-public"),
        (("PUT", "/v1/procedures/p_etc"), {"json": imp("/etc/passwd")}, 403, "outside the allowed roots"),
        (("PUT", "/v1/procedures/p_dots"), {"json": imp(str(files) + "/../../../etc/passwd")}, 403, "outside"),
        (("PUT", "/v1/procedures/p_file"), {"json": imp("file:///etc/hostname")}, 403, "outside"),
        (("PUT", "/v1/procedures/p_404"), {"json": imp(www.url("missing.jpg"))}, 400, "404"),
        (("PUT", "/v1/functions/f3"), {"json": {"type": "sql.expression", "params": {"expression": "1"}},
                                        "auth": False}, 401, "bearer"),
        (("PUT", "/v1/functions/f3"), {"json": {"type": "sql.expression", "params": {"expression": "1"}},
                                        "headers": {"Authorization": "Bearer wrong"}, "auth": False}, 403, "not valid"),
        (("DELETE", "/v1/functions/twice"), {"auth": False}, 401, "token"),
        (("POST", "/v1/procedures/imp_people/runs"), {"auth": False}, 401, "token"),
        (("POST", "/v1/procedures/imp_people/runs"), {"json": {"params": {"dataFileUrl": "/etc/passwd"}}}, 403,
         "outside"),
        (("GET", "/v1/procedures/imp_people/runs/nope"), {}, 404, "nope"),
    ]
    for (method, path), kw, code, needle in cases:
        body = assert_error(call(server, method, path, **kw), code, needle)
        if path.startswith("/v1/procedures/p_"):
            assert body["details"]["run"]["state"] == "error"  # the failed run's record travels with the error
        assert call(server, "GET", "/v1/ping").status_code == 200
    # reads stay open without the token; the failed PUTs left their procedures but no output dataset
    assert call(server, "GET", "/v1/functions", auth=False).status_code == 200
    assert "bad_out" not in call(server, "GET", "/v1/datasets").json()
    # a legitimate fetch from an allowed private address still works
    ok = call(server, "PUT", "/v1/procedures/p_www", json=imp(www.url("pets.csv")))
    assert ok.status_code == 201 and ok.json()["status"]["firstRun"]["status"]["rowCount"] == 2


def test_protect_reads(tmp_path: Path) -> None:
    with LiveServer(tmp_path / "p.vdb", token=TOKEN, protect_reads=True) as srv:
        assert_error(call(srv, "GET", "/v1/functions", auth=False), 401, "token")
        assert call(srv, "GET", "/v1/functions").json() == []
        assert_error(call(srv, "GET", "/v1/query", params={"q": "SELECT 1"}, auth=False), 401, "token")
