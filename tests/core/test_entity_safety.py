"""Entity replacement and deletion keep DuckDB objects consistent: failed PUTs, case-only id clashes, views."""
from __future__ import annotations

import pytest

from visiondb.errors import ConfigError, ConflictError, QueryError

UPPER = {"type": "sql.expression", "params": {"expression": "upper(x)"}}


def test_failed_replacement_keeps_the_old_function(db):
    db.functions.put("f", UPPER)
    with pytest.raises(ConfigError) as err:
        db.functions.put("f", {"type": "sql.expression", "params": {"expression": "upper(x"}})
    assert err.value.http_code == 400
    assert db.functions.get("f")["config"]["params"]["expression"] == "upper(x)"
    assert db.functions.apply("f", {"x": "ab"}) == {"output": "AB"}
    assert db.sql("SELECT f('ab')").fetchall() == [("AB",)]


def test_failed_replacement_after_reopen_keeps_the_old_function(tmp_path):
    import visiondb

    path = tmp_path / "reopen.duckdb"
    with visiondb.connect(path) as first:
        first.functions.put("f", UPPER)
    with visiondb.connect(path) as db:
        db.functions._instances.clear()  # not loaded yet: the old one is rebuilt from the catalog
        with pytest.raises(ConfigError):
            db.functions.put("f", {"type": "sql.expression", "params": {"expression": "upper(x"}})
        assert db.sql("SELECT f('ab')").fetchall() == [("AB",)]


def test_ids_differing_only_in_case_are_refused(db):
    db.functions.put("f", UPPER)
    with pytest.raises(ConflictError) as err:
        db.functions.put("F", {"type": "sql.expression", "params": {"expression": "lower(x)"}})
    assert err.value.http_code == 409 and err.value.details["existing"] == "f" and "'f'" in err.value.message
    assert db.functions.list() == ["f"] and db.sql("SELECT f('Ab')").fetchall() == [("AB",)]

    db.sql("CREATE TABLE d AS SELECT 42 AS v")
    db.datasets.register_output("d")
    with pytest.raises(ConflictError, match="'d'"):
        db.datasets.put("D", {"type": "tabular"})
    with pytest.raises(ConflictError, match="'d'"):
        db.datasets.register_output("D")
    assert db.datasets.list() == ["d"] and db.sql("SELECT v FROM d").fetchall() == [(42,)]
    db.datasets.put("d", {"type": "tabular"})  # the same id, same case: a replacement, not a clash
    assert db.sql("SELECT v FROM d").fetchall() == [(42,)]


@pytest.mark.parametrize("id, reason", [
    ("both", "SQL keyword"), ("select", "SQL keyword"), ("Left", "SQL keyword"), ("row", "SQL keyword"),
    ("values", "SQL keyword"), ("lower", "built-in function"), ("Range", "built-in function"),
    ("unnest", "built-in function"), ("count", "built-in function"),
    ("fetch_bytes", "visiondb uses"), ("__vdb_fetch", "visiondb uses"), ("__VDB_emb", "visiondb uses"),
])
def test_function_ids_duckdb_gives_a_meaning_are_refused(db, id, reason):
    """`both` failed with DuckDB's parser error about the macro; `row`/`values` were defined but `row(x)` called
    DuckDB's own syntax, never the function; `range` replaced DuckDB's range() in every query, the micro-batcher's
    `unnest(range(?))` too."""
    with pytest.raises(ConfigError, match=reason) as err:
        db.functions.put(id, UPPER)
    assert err.value.details["field"] == "id"
    assert db.functions.list() == []
    if reason != "visiondb uses":
        db.functions.put(f"{id}_fn", UPPER)  # a keyword inside an id is fine
        assert db.sql(f"SELECT {id}_fn('ab')").fetchall() == [("AB",)]


def test_procedure_ids_may_differ_in_case(db):
    cfg = {"type": "transform", "params": {"inputData": "SELECT 1 AS a", "outputDataset": "o",
                                           "runOnCreation": False}}
    db.procedures.put("p", cfg)
    db.procedures.put("P", cfg)
    assert db.procedures.list() == ["P", "p"]


@pytest.mark.parametrize("value", ["false", 0, [], None, {"x": 1}])
def test_run_on_creation_must_be_a_boolean(db, value):
    cfg = {"type": "transform", "params": {"inputData": "SELECT 1 AS a", "outputDataset": "out",
                                           "runOnCreation": value}}
    with pytest.raises(ConfigError) as err:
        db.procedures.put("p", cfg)
    assert err.value.details["field"] == "params.runOnCreation"
    assert db.procedures.list() == [] and not db.table_exists("out")


def test_run_on_creation_false_does_not_run(db):
    db.procedures.put("p", {"type": "transform", "params": {"inputData": "SELECT 1 AS a", "outputDataset": "out",
                                                            "runOnCreation": False}})
    assert not db.table_exists("out") and db.procedures.runs("p") == []


def test_deleting_a_view_dataset_drops_the_view(db):
    db.sql("CREATE TABLE base AS SELECT 1 AS a")
    db.sql("CREATE VIEW v1 AS SELECT a FROM base")
    db.datasets.register_output("v1")
    db.datasets.delete("v1")
    assert db.datasets.list() == []
    assert db.sql("SELECT count(*) FROM duckdb_views() WHERE view_name = 'v1'").fetchall() == [(0,)]
    assert db.sql("SELECT a FROM base").fetchall() == [(1,)]


def test_a_refused_drop_is_a_query_error(db):
    db.sql("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
    db.sql("CREATE TABLE child (pid INTEGER REFERENCES parent(id))")
    db.datasets.register_output("parent")
    with pytest.raises(QueryError) as err:
        db.datasets.delete("parent")
    assert err.value.http_code == 400 and "parent" in err.value.message
    assert db.datasets.list() == ["parent"]


@pytest.mark.parametrize("config, field", [
    ({"type": "sql.expression", "params": {"expression": "upper(x)", "args": ["\udc80"]}}, "params.args[0]"),
    ({"type": "transform", "params": {"inputData": "SELECT '\ud800'", "outputDataset": "o"}}, "params.inputData"),
])
def test_lone_surrogates_in_configs_name_the_field(db, config, field):
    """JSON's "\\ud800" escape decodes to text nothing can store: a ConfigError naming the field, not a DuckDB error."""
    kind = db.functions if config["type"] == "sql.expression" else db.procedures
    with pytest.raises(ConfigError) as err:
        kind.put("x", config)
    assert err.value.details["field"] == field and "surrogate" in err.value.message


@pytest.mark.parametrize("query", ["", "  ;  ", "SELECT 1; SELECT 2", "INSERT INTO t VALUES ([0.0], 'b') RETURNING *",
                                   "CREATE TABLE u AS SELECT 1", "PRAGMA show_tables",
                                   # a PIVOT without IN (...) makes any statement holding it a MULTI one, as a
                                   # plain PIVOT query is: these ran
                                   "CREATE TABLE u AS PIVOT t ON label USING count(*)",
                                   "INSERT INTO t SELECT features, 'b' FROM (PIVOT t ON label USING count(*))",
                                   # DuckDB types a query with a write in a CTE as a SELECT
                                   "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
                                   "WITH d AS (INSERT INTO t VALUES ([0.0], 'b') RETURNING *) PIVOT d ON label USING "
                                   "count(*)"])
def test_input_data_must_be_one_query(db, query):
    db.sql("CREATE TABLE t AS SELECT [1.0, 2.0]::FLOAT[] AS features, 'a' AS label")
    for config in ({"type": "transform", "params": {"inputData": query, "outputDataset": "o"}},
                   {"type": "classifier.train", "params": {"inputData": query, "functionName": "f"}},
                   {"type": "classifier.experiment", "params": {"inputData": query, "experimentName": "e"}}):
        with pytest.raises(ConfigError) as err:
            db.procedures.put("p", config)
        assert err.value.details["field"] == "params.inputData" and "one query" in err.value.message, err.value
    assert db.sql("SELECT count(*) FROM t").fetchone() == (1,) and not db.table_exists("u")  # nothing ran


def test_queries_of_every_read_form_are_input_data(db):
    db.sql("CREATE TABLE t AS SELECT range AS i, range % 2 AS k FROM range(4)")
    for i, query in enumerate(("FROM t SELECT i", "VALUES (1), (2)", "SHOW TABLES", "UNPIVOT t ON k INTO NAME n VALUE v",
                               "(SELECT 1 AS a) UNION ALL (SELECT 2)")):
        status = db.procedures.put(f"p{i}", {"type": "transform", "params": {"inputData": query,
                                                                             "outputDataset": f"o{i}"}})
        assert status["status"]["firstRun"]["state"] == "finished"


def test_a_second_object_on_an_open_file_is_refused(db):
    """DuckDB hands a second connection in one process the same instance, where the first object's Python functions
    are registered: opening failed with a raw CatalogException ("__vdb_fetch already exists")."""
    import visiondb

    with pytest.raises(ConflictError, match="already open in this process") as err:
        visiondb.connect(db.path)
    assert err.value.details["path"] == str(db.path)
    assert db.sql("SELECT 1").fetchall() == [(1,)]  # the first object is untouched
    db.close()
    with visiondb.connect(db.path) as again:  # closed: the file may be opened again
        assert again.sql("SELECT 2").fetchall() == [(2,)]


def test_a_failed_open_leaves_the_file_free(tmp_path, monkeypatch):
    """An open that failed after the SQL functions were registered (Ctrl-C while a model loads) left its DuckDB
    connection open, so the next open got that instance and failed on the functions already there."""
    import visiondb
    from visiondb.core.entities import FunctionCollection

    path = tmp_path / "f.duckdb"
    visiondb.connect(path).close()

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(FunctionCollection, "load_all", interrupted)
    with pytest.raises(KeyboardInterrupt):
        visiondb.connect(path)
    monkeypatch.undo()
    with visiondb.connect(path) as db:
        assert db.sql("SELECT 1").fetchall() == [(1,)]
