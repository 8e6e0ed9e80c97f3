"""Entities are built from MLDB-shaped configs, validated with errors naming the field, and survive a restart."""
from __future__ import annotations

import pytest

import visiondb
from visiondb.errors import ConfigError, NotFoundError, QueryError


def test_put_get_list_delete_each_kind(db):
    db.datasets.put("people", {"type": "tabular", "params": {"columns": {"name": "VARCHAR", "age": "INTEGER"}}})
    db.functions.put("double_it", {"type": "sql.expression", "params": {"expression": "x * 2"}})
    db.procedures.put("copy", {"type": "transform", "params": {
        "inputData": "SELECT * FROM people", "outputDataset": "people_copy", "runOnCreation": False}})
    assert db.datasets.list() == ["people"]
    assert db.functions.list() == ["double_it"]
    assert db.procedures.list() == ["copy"]
    record = db.functions.get("double_it")
    assert record["type"] == "sql.expression" and record["config"]["params"]["expression"] == "x * 2"
    assert db.functions.apply("double_it", {"x": 21}) == {"output": 42}
    assert db.sql("SELECT double_it(4)").fetchall() == [(8,)]
    db.functions.delete("double_it")
    with pytest.raises(NotFoundError):
        db.functions.get("double_it")
    with pytest.raises(QueryError):
        db.sql("SELECT double_it(4)")


def test_entities_survive_reopen(tmp_path):
    path = tmp_path / "keep.duckdb"
    with visiondb.connect(path) as db:
        db.sql("CREATE TABLE src AS SELECT 'r' || i AS _rowName, i AS v FROM range(10) t(i)")
        db.functions.put("plus_one", {"type": "sql.expression", "params": {"expression": "v + 1"}})
        run = db.procedures.put("bump", {"type": "transform", "params": {
            "inputData": "SELECT plus_one(v) AS w FROM src", "outputDataset": "bumped"}})
        assert run["status"]["firstRun"]["state"] == "finished"
    with visiondb.connect(path) as db:
        assert db.functions.list() == ["plus_one"]
        assert db.procedures.list() == ["bump"]
        assert "bumped" in db.datasets.list()
        assert db.sql("SELECT sum(w) FROM bumped").fetchone()[0] == sum(range(1, 11))
        assert db.sql("SELECT plus_one(41)").fetchone()[0] == 42
        runs = db.procedures.runs("bump")
        assert len(runs) == 1 and runs[0]["state"] == "finished" and runs[0]["runFinished"]


def test_unknown_type_names_the_field(db):
    with pytest.raises(ConfigError) as err:
        db.procedures.put("p", {"type": "import.nothing", "params": {}})
    assert err.value.details["field"] == "type" and "import.nothing" in err.value.message


def test_missing_param_names_the_field(db):
    with pytest.raises(ConfigError) as err:
        db.procedures.put("p", {"type": "transform", "params": {"inputData": "SELECT 1"}})
    assert err.value.details["field"] == "params.outputDataset"


def test_unknown_param_and_bad_json_are_named(db):
    with pytest.raises(ConfigError) as err:
        db.functions.put("f", {"type": "sql.expression", "params": {"expression": "1", "colour": "red"}})
    assert err.value.details["field"] == "params.colour"
    with pytest.raises(ConfigError) as err:
        db.functions.put("f", '{"type": "sql.expression", "params": ')
    assert "not valid JSON" in err.value.message
    with pytest.raises(ConfigError):
        db.functions.put("bad id", {"type": "sql.expression", "params": {"expression": "1"}})


def test_failed_run_is_recorded(db):
    with pytest.raises(visiondb.VisionDBError) as err:
        db.procedures.put("broken", {"type": "transform", "params": {
            "inputData": "SELECT * FROM no_such_table", "outputDataset": "out"}})
    run = err.value.details["run"]
    assert run["state"] == "error" and "no_such_table" in run["status"]["error"]
    assert db.procedures.runs("broken")[0]["state"] == "error"


def test_sql_results_have_relation_accessors(db):
    result = db.sql("SELECT 1 AS a, 'x' AS b")
    assert result.fetchall() == [(1, "x")]
    assert list(result.df().columns) == ["a", "b"]
    assert result.arrow().num_rows == 1
    assert db.sql("SELECT ? + 1 AS v", [41]).fetchone() == (42,)
    with pytest.raises(QueryError):
        db.sql("SELEC 1")
