"""`transform` gives the same rows whatever its chunkSize, never destroys its input or a previous output."""
from __future__ import annotations

import pytest

from visiondb.errors import ConfigError
from visiondb.sql.transform import staging_table


def make_source(db, n: int = 10, name: str = "src") -> None:
    db.sql(f"CREATE OR REPLACE TABLE {name} AS SELECT 'r' || lpad(i::VARCHAR, 3, '0') AS _rowName, i % 3 AS label,"
           f" i AS x FROM range({n}) t(i)")
    db.datasets.register_output(name)


def transform(db, id: str, query: str, out: str, chunk: int, **params) -> dict:
    config = {"type": "transform", "params": {"inputData": query, "outputDataset": out, "chunkSize": chunk, **params}}
    return db.procedures.put(id, config)["status"]["firstRun"]["status"]


def rows(db, query: str) -> list[tuple]:
    return sorted(db.sql(query).fetchall(), key=repr)


def test_an_output_named_like_a_cte_of_the_query_is_not_refused(db):
    make_source(db)
    transform(db, "cte", "WITH res AS (SELECT x FROM src) SELECT * FROM res", "res", 4)
    assert db.sql("SELECT count(*), sum(x) FROM res").fetchone() == (10, 45)


@pytest.mark.parametrize("out", ["src", "SRC", "Src"])
def test_an_output_the_query_reads_is_refused(db, out):
    make_source(db)
    for chunk, query in ((4, "SELECT x FROM src"), (100, "SELECT x FROM src"),
                         (4, "SELECT x, (SELECT max(x) FROM Src) AS m FROM other")):
        db.sql("CREATE OR REPLACE TABLE other AS SELECT 1 AS x")
        with pytest.raises(ConfigError) as err:
            transform(db, f"t{chunk}", query, out, chunk)
        assert err.value.details["field"] == "params.outputDataset"
    assert db.sql("SELECT count(*), sum(x) FROM src").fetchone() == (10, 45)


def test_a_failed_chunked_rerun_keeps_the_previous_output_and_resumes(db):
    db.sql("CREATE TABLE s AS SELECT 'r' || lpad(i::VARCHAR, 3, '0') AS _rowName, i::VARCHAR AS v FROM range(10) t(i)")
    transform(db, "cast", "SELECT CAST(v AS INTEGER) AS n FROM s", "out", 4)
    db.sql("INSERT INTO s VALUES ('r999', 'oops')")  # the last chunk fails after two were written
    run = db.procedures.run("cast", raise_errors=False)
    assert run["state"] == "error"
    assert db.sql("SELECT count(*), sum(n) FROM out").fetchone() == (10, 45) and db.datasets.exists("out")
    db.sql("UPDATE s SET v = '100' WHERE _rowName = 'r999'")
    status = db.procedures.run("cast")["status"]
    assert status["resumed"] and status["rowsAlreadyPresent"] == 8 and status["rowsWritten"] == 3
    assert db.sql("SELECT count(*), count(DISTINCT _rowName), sum(n) FROM out").fetchone() == (11, 11, 145)
    assert not db.table_exists(staging_table("out"))
    # a streamed (not keyed) re-run that fails leaves the output as well
    transform(db, "agg", "SELECT count(*) AS c FROM s", "agg_out", 4)
    db.sql("UPDATE s SET v = 'oops' WHERE _rowName = 'r999'")
    db.procedures.put("agg", {"type": "transform", "params": {
        "inputData": "SELECT sum(CAST(v AS INTEGER)) AS c FROM s", "outputDataset": "agg_out", "chunkSize": 4,
        "runOnCreation": False}})
    assert db.procedures.run("agg", raise_errors=False)["state"] == "error"
    assert db.sql("SELECT * FROM agg_out").fetchall() == [(11,)]


def test_repeated_or_null_row_names_do_not_depend_on_chunk_size(db):
    db.sql("CREATE TABLE s AS SELECT * FROM (VALUES ('a', 1), ('b', 2), ('b', 3), ('c', 4), (NULL, 5)) t(_rowName, x)")
    for chunk in (1, 2, 100):
        transform(db, f"t{chunk}", "SELECT x FROM s", f"o{chunk}", chunk)
        assert rows(db, f"SELECT _rowName, x FROM o{chunk}") == rows(db, "SELECT * FROM s")


@pytest.mark.parametrize("query", [
    "SELECT DISTINCT label FROM src",
    "SELECT count(*) AS n, sum(x) AS s FROM src",
    "SELECT label, count(*) AS n FROM src GROUP BY label HAVING count(*) > 3",
    "SELECT x, sum(x) OVER () AS total FROM src",
    "SELECT x, rank() OVER (ORDER BY x DESC) AS r FROM src QUALIFY r <= 4",
    "SELECT x, (SELECT max(x) FROM src) AS top FROM src",
    "SELECT x FROM src USING SAMPLE 3 ROWS",
    "SELECT mean_of(x) AS m FROM src",
    "SELECT twice_mean(x) AS m FROM src",
    "SELECT x, position_of(x) AS p FROM src",
    "SELECT raw_mean(x) AS m FROM src",
    "PIVOT src ON label USING sum(x)",  # DuckDB plans a PIVOT without IN (...) as several statements
    "SELECT * FROM (PIVOT (SELECT label, x % 2 AS odd FROM src) ON label USING count(*)) p",
    "PIVOT src ON label IN (0, 1) USING max(x)",
    "PIVOT src ON label USING min(x); -- a trailing comment",
    # DuckDB's optimizer turns these into table statistics or folds them into the scan: the plan is read without it
    "SELECT x, seq_no() AS n FROM src",
    "SELECT n_rows() AS n FROM src",
    # a macro that reads the source again (the chunk's temp table would hide it there too)
    "SELECT x, has_next(x) AS h FROM src",
    "SELECT x, CASE WHEN x > 0 THEN all_rows() END AS n FROM src",
    "SELECT x, rowid AS r FROM src",
])
def test_queries_over_all_rows_do_not_depend_on_chunk_size(db, query):
    make_source(db)
    # sql.expression functions are macros: a call hides the aggregate or window it expands to
    db.functions.put("mean_of", {"type": "sql.expression", "params": {"expression": "avg(x)"}})
    db.functions.put("twice_mean", {"type": "sql.expression", "params": {"expression": "2 * mean_of(x)"}})
    db.functions.put("position_of", {"type": "sql.expression", "params": {"expression": "rank() OVER (ORDER BY x)"}})
    db.sql("CREATE MACRO raw_mean(x) AS avg(x)")  # one visiondb did not define
    db.sql("CREATE MACRO seq_no() AS row_number() OVER (); CREATE MACRO n_rows() AS count(*);"
           "CREATE MACRO has_next(v) AS v + 1 IN (SELECT x FROM src); CREATE MACRO all_rows() AS (SELECT count(*) FROM src)")
    for chunk in (3, 1000):
        status = transform(db, f"t{chunk}", query, f"o{chunk}", chunk)
        assert status["rowCount"] == db.sql(f"SELECT count(*) FROM o{chunk}").fetchone()[0]
    if "SAMPLE" in query:
        assert db.sql("SELECT count(*) FROM o3").fetchone() == db.sql("SELECT count(*) FROM o1000").fetchone() == (3,)
    else:
        assert rows(db, "SELECT * FROM o3") == rows(db, "SELECT * FROM o1000") == rows(db, query)


def test_a_pivot_may_replace_the_table_it_reads(db):
    make_source(db)
    transform(db, "copy", "SELECT label, x FROM src", "wide", 4)
    transform(db, "pivot", "PIVOT (SELECT label, x FROM wide) ON label USING sum(x)", "wide", 4)  # written to staging, then swapped in
    assert db.sql("SELECT * FROM wide").fetchall() == [(18, 12, 15)]


@pytest.mark.parametrize("chunk", [4, 100])
def test_row_name_is_kept_once_and_spelt_as_the_source_spells_it(db, chunk):
    make_source(db)
    for i, query in enumerate(("SELECT * EXCLUDE (_rowName) FROM src", "SELECT _rowname, x FROM src",
                               "SELECT s._ROWNAME, x FROM src s", "SELECT * RENAME (_rowName AS id) FROM src",
                               "SELECT * EXCLUDE (label) FROM src")):
        transform(db, f"t{i}", query, f"o{i}", chunk)
        names = [c[0] for c in db.sql(f"DESCRIBE o{i}").fetchall()]
        assert names.count("_rowName") == 1 and not any(n.lower().startswith("_rowname_") for n in names), names
        assert db.sql(f"SELECT count(DISTINCT _rowName) FROM o{i}").fetchone() == (10,)


def test_another_value_named_row_name_is_written_in_one_pass(db):
    make_source(db)
    for chunk in (4, 100):
        transform(db, f"t{chunk}", "SELECT upper(_rowName) AS _rowName, x FROM src", f"o{chunk}", chunk)
        assert rows(db, f"SELECT * FROM o{chunk}") == rows(db, "SELECT upper(_rowName), x FROM src")


@pytest.mark.parametrize("chunk", [0, -1])
def test_chunk_size_must_be_positive(db, chunk):
    make_source(db)
    with pytest.raises(ConfigError) as err:
        transform(db, "t", "SELECT x FROM src", "o", chunk)
    assert err.value.details["field"] == "params.chunkSize"


def test_an_empty_result_is_an_empty_table_with_the_query_columns(db):
    make_source(db, 0, "empty")
    make_source(db, 10)
    for i, (query, chunk) in enumerate((("SELECT x FROM empty", 512),
                                        ("SELECT label, count(*) AS n FROM src WHERE false GROUP BY label", 512),
                                        ("SELECT x FROM src WHERE x > 100", 4))):
        db.sql(f"CREATE TABLE o{i} AS SELECT 'old' AS stale")  # a previous output is replaced, not kept
        transform(db, f"t{i}", query, f"o{i}", chunk)
        assert db.sql(f"SELECT count(*) FROM o{i}").fetchone() == (0,) and db.datasets.exists(f"o{i}")
        names = {c[0] for c in db.sql(f"DESCRIBE o{i}").fetchall()}
        assert "stale" not in names and names - {"_rowName"} == ({"x"} if i != 1 else {"label", "n"})


def test_called_functions_are_judged_by_the_plan_without_listing_duckdbs(db):
    """Whether a query may run chunk by chunk is read from DuckDB's plan, which shows what every called macro
    expands to (~0.5 ms): `duckdb_functions()` lists thousands of built-ins (~12 ms per look, paid before a
    transform's first row) and is not read at all."""
    from visiondb.sql.ast import parse_select

    make_source(db)
    db.functions.put("mean_of", {"type": "sql.expression", "params": {"expression": "avg(x)"}})
    db.functions.put("plus_one", {"type": "sql.expression", "params": {"expression": "x + 1"}})
    db.sql("CREATE MACRO raw_plus(x) AS x + 2")
    statements: list[str] = []

    class Recording:
        def __init__(self, con) -> None:  # noqa: ANN001 - a DuckDB connection
            self.con = con

        def execute(self, sql, *args):  # noqa: ANN001, ANN202 - DuckDB's signature
            statements.append(sql)
            self.con.execute(sql, *args)
            return self

        def cursor(self):  # noqa: ANN202 - a recorded cursor too
            return Recording(self.con.cursor())

        def __getattr__(self, name: str):  # noqa: ANN204 - everything else as the connection has it
            return getattr(self.con, name)

    con = Recording(db.cursor())
    assert parse_select(con, "SELECT plus_one(x) AS y, lower('A') FROM src").whole is False
    assert parse_select(con, "SELECT mean_of(x) AS m FROM src").whole is True
    assert parse_select(con, "SELECT count(*) AS n FROM src").whole is True
    assert parse_select(con, "SELECT raw_plus(x) AS y FROM src").whole is False
    assert not [s for s in statements if "duckdb_functions" in s]
    assert len([s for s in statements if s.startswith("EXPLAIN")]) == 4


def test_a_temp_macro_of_the_running_cursor_is_seen(db):
    """The plan was taken on a cursor of its own, blind to a TEMP macro of the cursor the chunks run on: chunk by
    chunk, `sum(x) OVER ()` summed each chunk."""
    make_source(db)
    db.functions.put("mean_of", {"type": "sql.expression", "params": {"expression": "x + 1"}})
    db.cursor().execute("CREATE TEMP MACRO mean_of(x) AS sum(x) OVER ()")
    query = "SELECT x, mean_of(x) AS m FROM src"
    for chunk in (3, 1000):
        transform(db, f"t{chunk}", query, f"o{chunk}", chunk)
    assert rows(db, "SELECT * FROM o3") == rows(db, "SELECT * FROM o1000")
    assert db.cursor().execute("SELECT current_setting('enable_optimizer')").fetchall() == [(True,)]


@pytest.mark.parametrize("cursor", ["cursor", "connection"])
def test_functions_redefined_outside_visiondb_are_seen(db, cursor):
    """A macro replaced on a raw cursor or on the connection was not noticed when visiondb kept the bodies it
    defined in memory; the plan shows the body DuckDB holds now."""
    make_source(db)
    db.functions.put("mean_of", {"type": "sql.expression", "params": {"expression": "x + 1"}})
    (db.cursor() if cursor == "cursor" else db.connection).execute("CREATE OR REPLACE MACRO mean_of(x) AS avg(x)")
    query = "SELECT mean_of(x) AS m FROM src"
    for chunk in (3, 1000):
        transform(db, f"t{chunk}", query, f"o{chunk}", chunk)
    assert rows(db, "SELECT * FROM o3") == rows(db, "SELECT * FROM o1000") == [(4.5,)]


@pytest.mark.parametrize("ddl, query", [
    ("CREATE OR REPLACE MACRO mean_of(x) AS sum(x) OVER ()", "SELECT x, mean_of(x) AS m FROM src"),
    ("DROP MACRO mean_of; CREATE MACRO MEAN_OF(x) AS avg(x)", "SELECT mean_of(x) AS m FROM src"),
    ("CREATE MACRO abs(x) AS sum(x) OVER ()", "SELECT x, abs(x) AS a FROM src"),
])
def test_functions_redefined_by_hand_are_looked_up(db, ddl, query):
    """SQL typed by hand may replace a function visiondb defined or shadow a built-in: a window or aggregate it now
    hides still makes the query whole."""
    make_source(db)
    db.functions.put("mean_of", {"type": "sql.expression", "params": {"expression": "x + 1"}})
    db.sql(ddl)
    for chunk in (3, 1000):
        transform(db, f"t{chunk}", query, f"o{chunk}", chunk)
    assert rows(db, "SELECT * FROM o3") == rows(db, "SELECT * FROM o1000") == rows(db, query)


def test_a_user_macro_named_lower_does_not_hide_an_aggregate_macro(db):
    """The lookup of hand-made macros matched names with `lower(...)` in SQL, which then called the user's macro."""
    make_source(db)
    db.sql("CREATE MACRO lower(s) AS 'shadowed'")
    db.sql("CREATE MACRO raw_mean(x) AS avg(x)")
    for chunk in (3, 1000):
        transform(db, f"t{chunk}", "SELECT raw_mean(x) AS m FROM src", f"o{chunk}", chunk)
    assert db.sql("SELECT * FROM o3").fetchall() == db.sql("SELECT * FROM o1000").fetchall() == [(4.5,)]


def test_a_rerun_judges_the_functions_as_they_are_now(db):
    """The chunk-or-whole decision was kept with the procedure: a function redefined between runs kept the old
    decision, and a rerun wrote per-chunk results."""
    make_source(db)
    db.functions.put("centred", {"type": "sql.expression", "params": {"expression": "x - 1"}})
    query = "SELECT x, centred(x) AS c FROM src"
    transform(db, "t", query, "o", 3)
    db.functions.put("centred", {"type": "sql.expression", "params": {"expression": "x - avg(x) OVER ()"}})
    db.procedures.run("t")
    assert rows(db, "SELECT x, c FROM o") == rows(db, query)


def test_planning_a_query_runs_none_of_its_functions(db):
    """With DuckDB's optimizer on, EXPLAIN folded calls on constants by running them: a Python UDF (a file fetch,
    a forward pass) ran while the transform only decided its path."""
    from visiondb.sql.ast import parse_select

    make_source(db)
    calls = []

    def noted(x):  # noqa: ANN001, ANN202 - a DuckDB scalar UDF
        calls.append(x)
        return x

    db.connection.create_function("noted", noted, ["BIGINT"], "BIGINT")
    assert parse_select(db.cursor(), "SELECT x, noted(3) AS n FROM src").whole is False
    assert calls == []


@pytest.mark.parametrize("query", [
    "SELECT x, stats(x) AS s FROM src", "SELECT x, current_query() AS q FROM src",
    "SELECT x, current_timestamp AS t FROM src", "SELECT x FROM src WHERE x < (SELECT epoch(now()))",
    "SELECT x, stamp() FROM src",
])
def test_values_of_the_statement_run_whole(db, query):
    """Each chunk is a statement and a transaction of its own: `stats(x)` described the chunk, `now()` and
    `current_query()` differed from chunk to chunk."""
    from visiondb.sql.ast import parse_select

    make_source(db)
    db.sql("CREATE MACRO stamp() AS transaction_timestamp()")
    assert parse_select(db.cursor(), query).whole is True
