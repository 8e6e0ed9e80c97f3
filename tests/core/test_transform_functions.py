"""`sql.expression` functions used in a transform: their arguments are the expression's free columns only."""
from __future__ import annotations


def expression(db, name: str, text: str) -> list[str]:
    db.functions.put(name, {"type": "sql.expression", "params": {"expression": text}})
    return db.functions.instance(name).input_names()


def test_lambda_parameters_and_subquery_columns_are_not_arguments(db):
    assert expression(db, "doubled", "list_transform(v, lambda x: x * 2)") == ["v"]
    assert expression(db, "scaled", "list_transform(v, lambda x, i: x * i + k)") == ["v", "k"]
    assert expression(db, "shadow", "list_transform(v, lambda v: v + 1)") == ["v"]
    assert expression(db, "plus_count", "a + (SELECT count(*) FROM range(3) r(b) WHERE b > 0)") == ["a"]
    called = db.sql("SELECT doubled([1, 2]), scaled([1, 2], 10), plus_count(1)").fetchone()
    assert called == ([2, 4], [11, 14], 3)  # list positions count from 1
    db.sql("CREATE TABLE src AS SELECT 'r' || i AS _rowName, [i, i + 1] AS v FROM range(3) t(i)")
    db.procedures.put("t", {"type": "transform", "params": {
        "inputData": "SELECT doubled(v) AS w FROM src", "outputDataset": "out", "chunkSize": 2}})
    assert db.sql("SELECT w FROM out ORDER BY _rowName").fetchall() == [([0, 2],), ([2, 4],), ([4, 6],)]


def test_reserved_words_are_fine_argument_names(db):
    assert expression(db, "add_kw", 'a + "select"') == ["a", "select"]
    assert db.sql("SELECT add_kw(1, 2)").fetchone() == (3,)
    assert db.functions.apply("add_kw", {"a": 4, "select": 5}) == {"output": 9}
