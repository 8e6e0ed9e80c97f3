"""`GET /v1/query?q=<SQL>&format=table|json|aos|soa`: SQL through `db.sql`, read-only unless authorised, and
interrupted once it runs past the server's `query_timeout_s`."""
from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterator, Literal

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from .encode import respond
from .errors import QueryTimeoutError
from .models import ERROR_RESPONSES, ErrorBody, QueryResponse
from .security import check_no_file_access, has_token, is_read_only, require_token

router = APIRouter(prefix="/v1", tags=["query"], responses=ERROR_RESPONSES)

Format = Literal["table", "json", "aos", "soa"]


@router.get("/query", response_model=QueryResponse, summary="Run SQL and return rows as table/json/aos/soa",
            responses={504: {"model": ErrorBody, "description": "the query ran past the server's query_timeout_s"}})
async def query(request: Request, q: str = Query(..., description="the SQL statement"),
                format: Format = Query("json")) -> Response:
    return respond(await run_in_threadpool(run_query, request, q, format))


def run_query(request: Request, sql: str, format: str) -> Any:
    """Check access for `sql`, run it and shape the rows."""
    db, settings = request.app.state.db, request.app.state.settings
    if not is_read_only(db, sql):
        require_token(request, settings, "a SQL statement that is not a single read-only SELECT")
    elif settings.protect_reads:
        require_token(request, settings, "GET /v1/query")
    if not settings.token or not has_token(request, settings):
        check_no_file_access(db, sql)
    with time_limit(db.cursor(), settings.query_timeout_s, sql):  # db.sql runs on this thread's cursor
        table = db.sql(sql).arrow()  # execution and the fetch into Arrow; shaping below is outside the limit
    names = list(table.column_names)
    columns = [column_values(table.column(i)) for i in range(table.num_columns)]
    return shape_rows(names, columns, format)


class Interrupter:
    """Calls `cursor.interrupt()` once `seconds` pass unless `stop()` came first; the lock keeps a timer that
    fires as the statement ends from interrupting whatever the cursor runs next."""

    def __init__(self, cursor: Any, seconds: float) -> None:
        self.cursor, self.fired, self._running = cursor, False, True
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._interrupt)
        self._timer.daemon = True
        self._timer.start()

    def _interrupt(self) -> None:
        with self._lock:
            if self._running:
                self.fired = True
                self.cursor.interrupt()

    def stop(self) -> bool:
        """Cancel the timer (idempotent); True when it interrupted the statement."""
        self._timer.cancel()
        with self._lock:
            self._running = False
        return self.fired


@contextlib.contextmanager
def time_limit(cursor: Any, seconds: float, sql: str) -> Iterator[None]:
    """Run the block with `cursor` interrupted after `seconds`. An interrupted block raises QueryTimeoutError,
    whatever it raised itself (`db.sql` wraps DuckDB's InterruptException into a QueryError) or if it finished
    just as the limit passed."""
    guard = Interrupter(cursor, seconds)
    try:
        yield
    except Exception:
        if not guard.stop():
            raise
    finally:
        guard.stop()
    if guard.fired:
        raise QueryTimeoutError(f"query did not finish within {seconds:g} s (the server's query timeout); "
                                "it was interrupted", timeout_s=seconds, query=sql)


def column_values(column: Any) -> list[Any]:
    """A result column as Python values. Dates and timestamps outside Python's datetime range (DuckDB's
    'infinity'/'-infinity', year 294247, ...) cannot become `datetime` objects: such a column is answered with
    its temporal values as ISO-like strings ('infinity', '-infinity' for DuckDB's sentinels) instead."""
    try:
        return column.to_pylist()
    except OverflowError:
        return [v for chunk in column.chunks for v in _temporal_as_text(chunk).to_pylist()]


_INFINITE = {2**31 - 1: "infinity", -(2**31 - 1): "-infinity", 2**63 - 1: "infinity", -(2**63 - 1): "-infinity"}


def _temporal_as_text(array: Any) -> Any:
    """`array` (an Arrow array, nested or not) with every date/timestamp leaf replaced by strings."""
    import numpy as np
    import pyarrow as pa

    kind = array.type
    if pa.types.is_date(kind) or pa.types.is_timestamp(kind):
        if pa.types.is_date32(kind):
            unit, ints = "D", array.cast(pa.int32())
        elif pa.types.is_date64(kind):
            unit, ints = "ms", array.cast(pa.int64())
        else:
            unit, ints = kind.unit, array.cast(pa.int64())
        suffix = "+00:00" if pa.types.is_timestamp(kind) and kind.tz else ""
        texts = [None if v is None else _INFINITE.get(v) or f"{np.datetime64(v, unit)}{suffix}"
                 for v in ints.to_pylist()]
        return pa.array(texts, pa.string())
    mask = array.is_null() if array.null_count else None
    if pa.types.is_struct(kind):
        fields = [_temporal_as_text(child) for child in array.flatten()]  # flatten() honours a slice offset
        return pa.StructArray.from_arrays(fields, names=[kind.field(i).name for i in range(kind.num_fields)],
                                          mask=mask)
    if pa.types.is_map(kind):
        return pa.MapArray.from_arrays(array.offsets, _temporal_as_text(array.keys),
                                       _temporal_as_text(array.items), mask=mask)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        cls = pa.ListArray if pa.types.is_list(kind) else pa.LargeListArray
        return cls.from_arrays(array.offsets, _temporal_as_text(array.values), mask=mask)
    if pa.types.is_fixed_size_list(kind):
        return pa.FixedSizeListArray.from_arrays(_temporal_as_text(array.values), kind.list_size, mask=mask)
    return array


def shape_rows(names: list[str], columns: list[list[Any]], format: str) -> Any:
    """Arrange column lists in the MLDB output formats (repeated column names become `a`, `a_1`, ...)."""
    names = unique_names(names)
    if "_rowName" in names and names[0] != "_rowName":
        i = names.index("_rowName")
        names = [names[i]] + names[:i] + names[i + 1:]
        columns = [columns[i]] + columns[:i] + columns[i + 1:]
    if format == "soa":
        return dict(zip(names, columns))
    rows = list(zip(*columns)) if columns else []
    if format == "table":
        return [names] + [list(r) for r in rows]
    return [dict(zip(names, r)) for r in rows]


def unique_names(names: list[str]) -> list[str]:
    """Rename repeated column names `a, a` to `a, a_1` (skipping names already used) so no column is lost."""
    taken, out = set(names), []
    for name in names:
        new, n = name, 0
        while new in out or (n and new in taken):
            n += 1
            new = f"{name}_{n}"
        out.append(new)
    return out
