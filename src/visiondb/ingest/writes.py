"""Shared writing helpers of the import procedures: image columns, atomic chunks, and the `<out>_errors` table."""
from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterator

import duckdb
import pyarrow as pa

from ..core.entities import quote_ident

ERROR_COLUMNS = "_rowName VARCHAR, uri VARCHAR, status INTEGER, cause VARCHAR, run_id VARCHAR"
IMAGE_ARROW = pa.struct([("uri", pa.string()), ("sha256", pa.string()), ("format", pa.string()),
                         ("width", pa.int32()), ("height", pa.int32()), ("bytes", pa.int64())])
"""Arrow type of an image value (cast to the DuckDB `image` type when written)."""


@contextlib.contextmanager
def registered(cur: duckdb.DuckDBPyConnection, name: str, table: pa.Table) -> Iterator[None]:
    """`table` visible to SQL as `name` for the block; when a statement failed, its error is the one raised, not
    the "transaction is aborted" that unregistering inside the failed transaction would raise."""
    cur.register(name, table)
    try:
        yield
    except BaseException:
        with contextlib.suppress(duckdb.Error):
            cur.unregister(name)
        raise
    cur.unregister(name)


def write_chunk(db: Any, out: str, table: pa.Table, *, first: bool, image_columns: tuple[str, ...] = ("image",)) -> None:
    """Create (first chunk) or append to a dataset table; struct image columns are cast to the `image` type."""
    cur = db.cursor()
    view = f"_vdb_sql_chunk_{threading.get_ident()}"
    casts = [c for c in image_columns if c in table.column_names and pa.types.is_struct(table.schema.field(c).type)]
    select = "*" if not casts else "* REPLACE (" + ", ".join(f"{quote_ident(c)}::image AS {quote_ident(c)}" for c in casts) + ")"
    with registered(cur, view, table):
        if first:
            cur.execute(f"CREATE OR REPLACE TABLE {quote_ident(out)} AS SELECT {select} FROM {view}")
        else:
            cur.execute(f"INSERT INTO {quote_ident(out)} BY NAME SELECT {select} FROM {view}")


def write_errors(db: Any, out: str, errors: list[dict], run_id: str) -> None:
    """Record per-row failures in `<out>_errors`, replacing entries earlier runs left for the same rows (re-runs)."""
    if not errors:
        return
    clear_errors(db, out, [e["_rowName"] for e in errors], run_id)
    cur = db.cursor()
    with registered(cur, "_vdb_sql_errors", pa.Table.from_pylist([{**e, "run_id": run_id} for e in errors])):
        cur.execute(
            f"INSERT INTO {quote_ident(errors_table(out))} BY NAME"
            " SELECT * REPLACE (status::INTEGER AS status) FROM _vdb_sql_errors"
        )


def clear_errors(db: Any, out: str, names: list[str], run_id: str) -> None:
    """Delete the error rows earlier runs left for `names`: rows now written (a resumed or re-run import), or rows
    failing again, whose new error `write_errors` records next."""
    if not names:
        return
    cur = db.cursor()
    with registered(cur, "_vdb_cleared_rows", pa.table({"_rowName": pa.array(names, pa.string())})):
        cur.execute(
            f"DELETE FROM {quote_ident(errors_table(out))} WHERE _rowName IN (SELECT _rowName FROM _vdb_cleared_rows)"
            " AND run_id IS DISTINCT FROM ?", [run_id]
        )


def errors_table(out: str) -> str:
    """Where an import records its per-row failures."""
    return f"{out}_errors"
