"""`/v1/query` without the token: catalog tables, CTEs and safe table functions only; no files, nested SQL or
state changes. Plus the shape of query results (repeated column names), JSON-safe echoes and the query timeout."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests
from fastapi.testclient import TestClient

import visiondb
from tests.serve.conftest import TOKEN
from tests.serve.live import LiveServer
from visiondb.cli import main as cli_main
from visiondb.errors import ConfigError, QueryError
from visiondb.serve.app import create_app
from visiondb.serve.errors import QueryTimeoutError
from visiondb.serve.routes_query import time_limit
from visiondb.serve.settings import ServerSettings

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def leak(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A secret CSV in the server's working directory (so relative names like `leak.csv` reach it)."""
    (tmp_path / "leak.csv").write_text("a,b\nsecret1,secret2\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path / "leak.csv"


@pytest.fixture
def client(tmp_path: Path):
    db = visiondb.connect(tmp_path / "guard.vdb")
    db.sql("CREATE TABLE people AS SELECT * FROM (VALUES ('ann', 31), ('bob', 42)) t(name, age)")
    db.sql("CREATE TABLE pets AS SELECT * FROM (VALUES ('ann', 'cat')) t(owner, kind)")
    db.sql("CREATE VIEW adults AS SELECT name FROM people WHERE age > 40")
    db.sql("CREATE SEQUENCE seq")
    db.datasets.register_output("people")
    db.functions.put("shout", {"type": "sql.expression", "params": {"expression": "upper(s)"}})
    with TestClient(create_app(db, ServerSettings(token=TOKEN)), raise_server_exceptions=False) as c:
        yield c
    db.close()


def query(client: TestClient, sql: str, auth: bool = False, **params: str):
    return client.get("/v1/query", params={"q": sql, **params}, headers=AUTH if auth else {})


@pytest.mark.parametrize("sql, needle", [
    ("SELECT * FROM leak.csv", "leak.csv"),
    ("SELECT * FROM (FROM leak.csv)", "leak.csv"),
    ('SELECT * FROM "{dir}/leak"."csv"', "leak.csv"),
    ("SELECT * FROM '{dir}/leak.csv'", "leak.csv"),
    ('DESCRIBE "{dir}/leak.csv"', "leak.csv"),
    ("SUMMARIZE '{dir}/leak.csv'", "leak.csv"),
    ("SELECT * FROM memory.leak.csv", "memory.leak.csv"),
    ("SELECT * FROM people, leak.csv", "leak.csv"),
    ('WITH a AS (SELECT * FROM "leak.csv"), "leak.csv" AS (SELECT 1) SELECT * FROM a', "leak.csv"),
    ('WITH "leak.csv" AS (SELECT * FROM "leak.csv") SELECT * FROM "leak.csv"', "leak.csv"),
    ('SELECT * FROM (WITH "leak.csv" AS (SELECT 1 AS z) SELECT * FROM "leak.csv") x, "leak.csv" y', "leak.csv"),
    ("SELECT * FROM read_csv('{dir}/leak.csv')", "read_csv"),
    ("SELECT * FROM read_text('/etc/passwd')", "read_text"),
    ("SELECT * FROM json_execute_serialized_sql(json_serialize_sql("
     "'SELECT * FROM read_text(''/etc/passwd'')'))", "json_execute_serialized_sql"),
    ("SELECT * FROM query('SELECT * FROM leak.csv')", "query"),
    ("SELECT * FROM query_table('leak.csv')", "query_table"),
    ("SELECT * FROM glob('/etc/*')", "glob"),
    ("SELECT * FROM checkpoint()", "checkpoint"),
    ("SELECT * FROM force_checkpoint()", "force_checkpoint"),
    ("SELECT nextval('seq')", "nextval"),
    ("SELECT name FROM people WHERE age > (SELECT main.nextval('seq'))", "nextval"),
    ("SELECT setseed(0.5)", "setseed"),
    ("EXPLAIN ANALYZE SELECT * FROM leak.csv", "leak.csv"),
])
def test_anonymous_reads_cannot_reach_files_or_change_state(client: TestClient, leak: Path, sql: str,
                                                           needle: str) -> None:
    resp = query(client, sql.format(dir=leak.parent))
    assert resp.status_code == 403, resp.text
    body = resp.json()
    assert body["httpCode"] == 403 and needle in body["error"] and "secret" not in resp.text
    assert query(client, "SELECT currval('seq') AS n", auth=True).status_code == 400  # nextval never ran


@pytest.mark.parametrize("sql", [
    "WITH d AS (DELETE FROM people RETURNING *) SELECT count(*) AS n FROM d",
    "SELECT * FROM (WITH d AS (INSERT INTO people VALUES ('eve', 9) RETURNING *) SELECT * FROM d)",
    "WITH d AS (UPDATE people SET age = 0 RETURNING *) SELECT name FROM d",
    "WITH d AS (INSERT INTO people VALUES ('eve', 9) RETURNING *) PIVOT d ON name USING max(age)",
])
def test_writes_inside_a_query_need_the_token(client: TestClient, sql: str) -> None:
    """DuckDB types `WITH d AS (DELETE ... RETURNING *) SELECT ...` as a SELECT: anonymous callers emptied tables."""
    resp = query(client, sql)
    assert resp.status_code == 401, resp.text
    assert query(client, "SELECT name, age FROM people ORDER BY name", auth=True).json() == [
        {"name": "ann", "age": 31}, {"name": "bob", "age": 42}]


def test_unknown_tables_are_a_400_naming_them(client: TestClient) -> None:
    for sql, name in (("SELECT * FROM no_such_table", "no_such_table"), ("SELECT * FROM main.missing", "main.missing")):
        resp = query(client, sql)
        assert resp.status_code == 400 and name in resp.json()["error"], resp.text


@pytest.mark.parametrize("sql, expected", [
    ("SELECT name FROM people ORDER BY name", [{"name": "ann"}, {"name": "bob"}]),
    ("SELECT p.name, k.kind FROM people p JOIN pets k ON k.owner = p.name", [{"name": "ann", "kind": "cat"}]),
    ("SELECT * FROM adults", [{"name": "bob"}]),
    ("SELECT name FROM main.people WHERE age = (SELECT max(age) FROM people)", [{"name": "bob"}]),
    ("WITH old AS (SELECT * FROM people WHERE age > 40) SELECT name FROM old", [{"name": "bob"}]),
    ("WITH RECURSIVE r AS (SELECT 1 AS n UNION ALL SELECT n + 1 FROM r WHERE n < 3) SELECT max(n) AS n FROM r",
     [{"n": 3}]),
    ("WITH a AS (SELECT 1 AS x), b AS (SELECT x + 1 AS y FROM a) SELECT y FROM b", [{"y": 2}]),
    ("SELECT shout(name) AS s FROM people WHERE name = 'ann'", [{"s": "ANN"}]),
    ("SELECT count(*) AS n FROM range(5)", [{"n": 5}]),
    ("SELECT sum(generate_series) AS n FROM generate_series(1, 3)", [{"n": 6}]),
    ("SELECT unnest([1, 2]) AS u", [{"u": 1}, {"u": 2}]),
    ("SELECT table_name FROM duckdb_tables() WHERE table_name = 'pets'", [{"table_name": "pets"}]),
    ("SELECT table_name FROM information_schema.tables WHERE table_name = 'pets'", [{"table_name": "pets"}]),
    ("SELECT count(*) > 0 AS ok FROM duckdb_functions()", [{"ok": True}]),
    ("SELECT name FROM pragma_table_info('pets') ORDER BY cid", [{"name": "owner"}, {"name": "kind"}]),
    ("SELECT count(*) AS n FROM people WHERE name IN (SELECT owner FROM pets)", [{"n": 1}]),
    ("VALUES (1)", [{"col0": 1}]),
    ("SELECT count(*) >= 0 AS ok FROM duckdb_variables()", [{"ok": True}]),
    ("SELECT count(*) > 0 AS ok FROM system.information_schema.tables", [{"ok": True}]),
])
def test_legitimate_reads_still_work(client: TestClient, sql: str, expected: list) -> None:
    resp = query(client, sql)
    assert resp.status_code == 200, resp.text
    assert resp.json() == expected


def test_show_and_describe_of_tables(client: TestClient) -> None:
    assert "people" in str(query(client, "SHOW TABLES").json())
    assert [r["column_name"] for r in query(client, "DESCRIBE people").json()] == ["name", "age"]


def test_token_holders_keep_full_sql(client: TestClient, leak: Path) -> None:
    resp = query(client, f"SELECT a FROM read_csv('{leak}')", auth=True)
    assert resp.status_code == 200 and resp.json() == [{"a": "secret1"}]


def test_repeated_column_names_are_kept(client: TestClient) -> None:
    sql = "SELECT 1 AS a, 2 AS a, 3 AS a_1"
    assert query(client, sql).json() == [{"a": 1, "a_2": 2, "a_1": 3}]
    assert query(client, sql, format="soa").json() == {"a": [1], "a_2": [2], "a_1": [3]}
    assert query(client, sql, format="table").json() == [["a", "a_2", "a_1"], [1, 2, 3]]
    assert query(client, "SELECT 1 AS a, 2 AS a").json() == [{"a": 1, "a_1": 2}]


def test_lone_surrogates_are_echoed_as_valid_json(client: TestClient) -> None:
    client.put("/v1/functions/same", headers=AUTH,
               json={"type": "sql.expression", "params": {"expression": "x"}})
    resp = client.post("/v1/functions/same/application", content=b'{"input": {"x": "\\ud800"}}',
                       headers={"content-type": "application/json"})
    assert resp.status_code == 400, resp.text
    body = resp.json()  # parses: the surrogate is escaped, not emitted as invalid UTF-8
    assert body["httpCode"] == 400 and "\ud800" in body["error"]


@pytest.mark.parametrize("sql", [
    "SELECT params FROM vdb.entities",
    "SELECT * FROM guard.vdb.runs",
    'SELECT * FROM "VDB"."Entities"',
    "WITH x AS (SELECT * FROM vdb.entities) SELECT * FROM x",
    "DESCRIBE vdb.entities",
])
def test_catalog_records_with_configs_need_the_token(client: TestClient, sql: str) -> None:
    """Entity configs and run records may hold connection passwords: anonymous SQL may not read them."""
    resp = query(client, sql)
    assert resp.status_code == 403 and "token" in resp.json()["error"], resp.text
    assert query(client, sql, auth=True).status_code == 200
    assert query(client, "SELECT count(*) AS n FROM vdb.embeddings").status_code == 200  # no configs there


LONG_QUERY = "SELECT count(*) AS n FROM range(100000000000) a, range(10) b"  # 10^12 rows: hours without a limit


@pytest.fixture(scope="module")
def timed_server(tmp_path_factory: pytest.TempPathFactory):
    """A live server whose queries may run for 1 s."""
    with LiveServer(tmp_path_factory.mktemp("db") / "timeout.vdb", token=TOKEN, query_timeout_s=1) as srv:
        yield srv


@pytest.mark.parametrize("auth", [False, True], ids=["anonymous", "token"])
def test_a_long_query_is_interrupted_with_a_504(timed_server: LiveServer, auth: bool) -> None:
    headers = AUTH if auth else {}
    started = time.monotonic()
    resp = requests.get(f"{timed_server.url}/v1/query", params={"q": LONG_QUERY}, headers=headers, timeout=120)
    assert time.monotonic() - started < 60
    assert resp.status_code == 504, resp.text
    body = resp.json()
    assert body["httpCode"] == 504 and "query timeout" in body["error"] and "interrupted" in body["error"]
    assert body["details"]["timeout_s"] == 1
    for n in range(5):  # the threads (and their DuckDB cursors) that ran the interrupted query answer again
        again = requests.get(f"{timed_server.url}/v1/query", params={"q": f"SELECT {n} AS n"}, headers=headers,
                             timeout=60)
        assert again.status_code == 200 and again.json() == [{"n": n}], again.text


def test_an_interrupted_cursor_runs_the_next_statement(tmp_path: Path) -> None:
    """The same thread, so the same per-thread cursor: it is usable after the interrupt."""
    with visiondb.connect(tmp_path / "t.vdb") as db:
        with pytest.raises(QueryTimeoutError) as err:
            with time_limit(db.cursor(), 0.5, LONG_QUERY):
                db.sql(LONG_QUERY)
        assert err.value.http_code == 504 and err.value.details["timeout_s"] == 0.5
        with time_limit(db.cursor(), 60, "SELECT 7"):
            assert db.sql("SELECT 7").fetchall() == [(7,)]
        assert db.sql("SELECT 8").fetchall() == [(8,)]


def test_errors_within_the_limit_are_not_timeouts(tmp_path: Path) -> None:
    with visiondb.connect(tmp_path / "t.vdb") as db:
        with pytest.raises(QueryError):
            with time_limit(db.cursor(), 60, "SELECT * FROM missing"):
                db.sql("SELECT * FROM missing")


@pytest.mark.parametrize("value", [0, -1.0, float("nan"), float("inf"), 1e10])  # inf, 1e10: the Timer died
def test_query_timeout_must_be_positive(value: float) -> None:
    with pytest.raises(ConfigError) as err:
        ServerSettings(query_timeout_s=value)
    assert err.value.details["field"] == "query_timeout_s" and "query_timeout_s" in err.value.message


def test_cli_serve_passes_the_query_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict = {}
    monkeypatch.setattr("visiondb.serve.server.serve", lambda *args, **kwargs: seen.update(kwargs))
    assert cli_main(["--db", str(tmp_path / "x.vdb"), "serve", "--query-timeout", "2.5"]) == 0
    assert seen["query_timeout_s"] == 2.5
    assert cli_main(["--db", str(tmp_path / "x.vdb"), "serve"]) == 0
    assert seen["query_timeout_s"] == ServerSettings().query_timeout_s == 300


def test_openapi_lists_the_timeout_answer(client: TestClient) -> None:
    responses = client.get("/openapi.json").json()["paths"]["/v1/query"]["get"]["responses"]
    assert "504" in responses
