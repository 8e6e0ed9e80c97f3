"""Per-row UDF failures land in the sink of the statement they belong to; other statements still raise."""
from __future__ import annotations

import threading

import duckdb
import pytest

from visiondb.sql.udf import collect_errors


def test_row_errors_go_to_the_collecting_statement_only(db, tmp_path):
    good = tmp_path / "good.bin"
    good.write_bytes(b"abc")
    missing = str(tmp_path / "missing.jpg")
    collecting, other = db.connection.cursor(), db.connection.cursor()
    with collect_errors(collecting) as sink:
        # a statement on another cursor collects nothing: its bad row fails the statement, naming the file
        with pytest.raises(duckdb.Error, match="missing.jpg"):
            other.execute("SELECT fetch_bytes(?)", [missing]).fetchall()
        rows = collecting.execute(
            "SELECT fetch_bytes(u) FROM (VALUES (?), (?)) t(u)", [str(good), missing]).fetchall()
        assert rows == [(b"abc",), (None,)]
        # thousands of rows: DuckDB runs the UDF on its worker threads too, and their failures still arrive
        many = collecting.execute(
            "SELECT count(fetch_bytes(? || i::VARCHAR)) FROM range(5000) t(i)", [missing]).fetchone()[0]
        assert many == 0
    errors = sink.drain()
    assert len(errors) == 1 + 5000
    assert all(e["function"] == "fetch" and "missing.jpg" in e["uri"] for e in errors)
    assert errors[0]["uri"] == missing  # the URI as given, not its JSON text
    # the sink is gone with the block: the same cursor raises again
    with pytest.raises(duckdb.Error, match="missing.jpg"):
        collecting.execute("SELECT fetch_bytes(?)", [missing]).fetchall()


def test_concurrent_statements_keep_their_own_errors(db, tmp_path):
    missing = str(tmp_path / "nope.jpg")
    results: dict[str, object] = {}
    start = threading.Barrier(2)

    def collect() -> None:
        cur = db.connection.cursor()
        with collect_errors(cur) as sink:
            start.wait()
            cur.execute("SELECT count(fetch_bytes(? || i::VARCHAR)) FROM range(3000) t(i)", [missing]).fetchall()
        results["collected"] = len(sink.drain())

    def plain() -> None:
        cur = db.connection.cursor()
        start.wait()
        failures = 0
        for _ in range(20):
            try:
                cur.execute("SELECT fetch_bytes(?)", [missing]).fetchall()
            except duckdb.Error:
                failures += 1
        results["raised"] = failures

    threads = [threading.Thread(target=collect), threading.Thread(target=plain)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert results == {"collected": 3000, "raised": 20}
