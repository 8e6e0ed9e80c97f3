"""Registering Python functions into DuckDB: a vectorised Arrow UDF behind a SQL macro per entity."""
from __future__ import annotations

import inspect
import json
import threading
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import duckdb
from duckdb import func as duckdb_func
import pyarrow as pa

from ..errors import ConfigError, QueryError, VisionDBError

if TYPE_CHECKING:
    from ..core.entities import Function
    from ..engine import VisionDB

_active_sinks = threading.local()


def impl_name(name: str) -> str:
    return f"__vdb_{name}"


def register_arrow_udf(
    db: "VisionDB", name: str, fn: Callable[..., pa.Array], arg_types: Sequence[str], return_type: str
) -> None:
    """Register `fn` (Arrow arrays in, Arrow array out) as a vectorised DuckDB function, replacing any old one."""
    con = db.connection
    fn = with_arity(fn, len(arg_types))
    try:
        con.remove_function(name)
    except duckdb.Error:
        pass
    con.create_function(
        name,
        fn,
        [duckdb.sqltype(t) for t in arg_types],
        duckdb.sqltype(return_type),
        type=duckdb_func.PythonUDFType.ARROW,
        null_handling=duckdb_func.FunctionNullHandling.SPECIAL,
        exception_handling=duckdb.PythonExceptionHandling.DEFAULT,
        side_effects=False,
    )


def with_arity(fn: Callable[..., pa.Array], n: int) -> Callable[..., pa.Array]:
    """DuckDB checks a UDF's Python signature against its declared arguments; give `*args` bodies an exact one."""
    params = [inspect.Parameter(f"a{i}", inspect.Parameter.POSITIONAL_ONLY) for i in range(n)]

    def wrapper(*args: pa.Array) -> pa.Array:
        return fn(*args)

    wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return wrapper


def create_macro(db: "VisionDB", name: str, args: Sequence[str], body: str) -> None:
    try:
        db.connection.execute(f"CREATE OR REPLACE MACRO {name}({', '.join(args)}) AS {body}")
    except duckdb.Error as exc:
        raise ConfigError(f"function {name!r}: cannot define SQL macro: {exc}", field="params.expression") from None


def drop_function(db: "VisionDB", name: str) -> None:
    con = db.connection
    con.execute(f"DROP MACRO IF EXISTS {name}")
    for udf in (impl_name(name), name):
        try:
            con.remove_function(udf)
        except duckdb.Error:
            pass


def apply_via_sql(function: "Function", input: Mapping[str, Any]) -> dict:
    """Bind the named inputs as parameters of `id(?, ...)`; a STRUCT result becomes the output object."""
    names = function.input_names()
    values = [input_value(function.id, input, n, i, len(names)) for i, n in enumerate(names)]
    # raw image bytes (an upload) are held in memory and passed by their `mem:` URI
    values = [function.db.media.put_transient(bytes(v)) if isinstance(v, (bytes, bytearray)) else v for v in values]
    placeholders = ", ".join("?" for _ in names)
    try:
        cur = function.db.cursor()
        cur.execute(f"SELECT {function.id}({placeholders}) AS output", values)
        column = cur.to_arrow_table().column(0).to_pylist(maps_as_pydicts="strict")
    except duckdb.Error as exc:
        raise QueryError(f"function {function.id!r} failed: {exc}", function=function.id) from None
    return output_object(column[0] if column else None, function.output_name())


def input_value(function_id: str, input: Mapping[str, Any], name: str, position: int, count: int) -> Any:
    if name in input:
        return input[name]
    if count == 1 and len(input) == 1:
        return next(iter(input.values()))
    raise ConfigError(
        f"function {function_id!r}: input is missing {name!r} (expects {count} input(s))", field=f"input.{name}"
    )


def output_object(value: Any, name: str) -> dict:
    if isinstance(value, dict):
        return dict(value)
    if hasattr(value, "tolist"):
        value = value.tolist()
    return {name: value}


class ErrorSink:
    """Collects per-row failures raised inside UDFs while a procedure runs (instead of failing the query)."""

    def __init__(self) -> None:
        self.errors: list[dict] = []
        self._lock = threading.Lock()

    def add(self, function: str, item: str, cause: str) -> None:
        with self._lock:
            self.errors.append({"function": function, "uri": item, "cause": cause})

    def drain(self) -> list[dict]:
        with self._lock:
            out, self.errors = self.errors, []
        return out


_global_sinks: list[ErrorSink] = []
_global_lock = threading.Lock()


class collect_errors:
    """Context manager: UDF failures during the block are recorded in a sink and the row yields NULL."""

    def __init__(self) -> None:
        self.sink = ErrorSink()

    def __enter__(self) -> ErrorSink:
        with _global_lock:
            _global_sinks.append(self.sink)
        return self.sink

    def __exit__(self, *exc: Any) -> None:
        with _global_lock:
            _global_sinks.remove(self.sink)


def report_row_error(function: str, item: str, error: Exception) -> bool:
    """Send a row failure to the active sinks; False when nobody collects (the caller should raise)."""
    cause = error.message if isinstance(error, VisionDBError) else f"{type(error).__name__}: {error}"
    with _global_lock:
        sinks = list(_global_sinks)
    for sink in sinks:
        sink.add(function, item, cause)
    return bool(sinks)


def dumps(value: Any) -> str:
    return json.dumps(value, default=str)
