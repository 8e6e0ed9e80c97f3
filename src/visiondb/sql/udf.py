"""Registering Python functions into DuckDB: a vectorised Arrow UDF behind a SQL macro per entity.

Row errors: a statement that collects them (a `transform`) sets the DuckDB variable `__vdb_sink` on its own
cursor; every UDF takes that variable as a hidden last argument, so a failing row is recorded in the sink of
the statement it belongs to (and yields NULL), while statements without one (a REST call) raise.
"""
from __future__ import annotations

import inspect
import json
import re
import secrets
import threading
import uuid
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import duckdb
from duckdb import func as duckdb_func
import pyarrow as pa

from ..core.entities import quote_ident
from ..errors import ConfigError, QueryError, VisionDBError
from .names import IMPL_PREFIX

if TYPE_CHECKING:
    from ..core.entities import Function
    from ..engine import VisionDB

SINK_VARIABLE = "__vdb_sink"
_current = threading.local()  # .sink: the ErrorSink of the statement whose UDF runs on this thread
RAISED_KEPT = 256  # recent UDF errors kept for `raised_in_udf`
_TAG = re.compile(r" \[visiondb error ([0-9a-f]{16})\]")
_raised: OrderedDict[str, tuple[type[VisionDBError], str, dict]] = OrderedDict()  # tag -> (type, message, details)
_raised_lock = threading.Lock()


def impl_name(name: str) -> str:
    return f"{IMPL_PREFIX}{name}"


def udf_call(name: str, *args: str) -> str:
    """SQL calling a UDF registered by `register_arrow_udf`: its arguments plus the statement's error-sink token."""
    return f"{name}({', '.join([*args, f'getvariable({SINK_VARIABLE!r})'])})"


def register_arrow_udf(
    db: "VisionDB", name: str, fn: Callable[..., pa.Array], arg_types: Sequence[str], return_type: str
) -> None:
    """Register `fn` (Arrow arrays in, Arrow array out) as a vectorised DuckDB function, replacing any old one.

    The registered function takes one more VARCHAR argument, the sink token (call it through `udf_call`)."""
    con = db.connection
    fn = with_arity(with_sink(fn), len(arg_types) + 1)
    try:
        con.remove_function(name)
    except duckdb.Error:
        pass
    con.create_function(
        name,
        fn,
        [duckdb.sqltype(t) for t in [*arg_types, "VARCHAR"]],
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


def with_sink(fn: Callable[..., pa.Array]) -> Callable[..., pa.Array]:
    """Run `fn` on all but the last column, with the sink that column names as this thread's current sink
    (DuckDB calls UDFs on its own worker threads as well as the caller's, so the statement must say)."""

    def call(*args: pa.Array) -> pa.Array:
        *columns, tokens = args
        token = tokens[0].as_py() if len(tokens) else None
        previous = getattr(_current, "sink", None)
        _current.sink = _sinks.get(token) if token is not None else None
        try:
            return fn(*columns)
        except VisionDBError as exc:
            raise _tagged(exc) from None
        finally:
            _current.sink = previous

    return call


def _tagged(exc: VisionDBError) -> VisionDBError:
    """`exc` with a random tag ending its message; its type, message and details are kept under the tag. DuckDB
    keeps only the text of a UDF's exception: the tag finds the error again, and no other text can claim it."""
    tag = secrets.token_hex(8)
    with _raised_lock:
        _raised[tag] = (type(exc), exc.message, dict(exc.details))
        while len(_raised) > RAISED_KEPT:
            _raised.popitem(last=False)
    return type(exc)(f"{exc.message} [visiondb error {tag}]", **exc.details)


def raised_in_udf(exc: duckdb.Error, **context: Any) -> VisionDBError | None:
    """The visiondb error (a fresh copy, `context` added to its details) whose raising inside a UDF failed the
    statement with `exc`, or None. Callers get back its class (a refused path stays AccessDeniedError, 403 over
    REST) and its own message, without DuckDB's wrapping."""
    tags = _TAG.findall(str(exc))  # the last is the outermost UDF's: it may quote an inner statement's error
    if not tags:
        return None
    with _raised_lock:
        kept = _raised.get(tags[-1])
    if kept is None:
        return None
    cls, message, details = kept
    return cls(message, **{**context, **details})


def statement_error(exc: duckdb.Error, message: str, **details: Any) -> VisionDBError:
    """The error to raise for a statement that failed with `exc`: the visiondb error a function raised inside it
    (`details` added), else QueryError(`message`, **details), any tag taken out of its text."""
    return raised_in_udf(exc, **details) or QueryError(_TAG.sub("", message), **details)


def fail_row(function: str, item: str, error: Exception) -> None:
    """A row of `function` failed: record it in the running statement's sink, or (no sink: a plain SELECT, a REST
    call) raise it naming the function and the row, keeping a visiondb error's type and details."""
    if report_row_error(function, item, error):
        return
    if isinstance(error, VisionDBError):
        raise type(error)(f"{function}({item}): {error.message}", **error.details) from None
    raise VisionDBError(f"{function}({item}): {type(error).__name__}: {error}") from None


def create_macro(db: "VisionDB", name: str, args: Sequence[str], body: str) -> None:
    """`name(args...)` as a SQL macro expanding to `body`; argument names are quoted (`select` is a fine one)."""
    try:
        db.connection.execute(f"CREATE OR REPLACE MACRO {name}({', '.join(map(quote_ident, args))}) AS {body}")
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
        raise statement_error(exc, f"function {function.id!r} failed: {exc}", function=function.id) from None
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


_sinks: dict[str, ErrorSink] = {}  # token -> sink of a statement collecting its row errors


class collect_errors:
    """Context manager: while statements on `cursor` run, UDF row failures are recorded in a sink and the row
    yields NULL; failures of other statements (other cursors) are not affected."""

    def __init__(self, cursor: duckdb.DuckDBPyConnection) -> None:
        self.cursor = cursor
        self.sink = ErrorSink()
        self.token = uuid.uuid4().hex

    def __enter__(self) -> ErrorSink:
        self.cursor.execute(f"SET VARIABLE {SINK_VARIABLE} = ?", [self.token])
        _sinks[self.token] = self.sink
        return self.sink

    def __exit__(self, *exc: Any) -> None:
        _sinks.pop(self.token, None)
        try:
            self.cursor.execute(f"RESET VARIABLE {SINK_VARIABLE}")
        except duckdb.Error:
            pass  # the cursor is closed already: its variables went with it


def report_row_error(function: str, item: str, error: Exception) -> bool:
    """Record a row failure in the sink of the statement running on this thread; False when that statement
    collects none (the caller should raise)."""
    sink: ErrorSink | None = getattr(_current, "sink", None)
    if sink is None:
        return False
    cause = error.message if isinstance(error, VisionDBError) else f"{type(error).__name__}: {error}"
    sink.add(function, item, cause)
    return True


def dumps(value: Any) -> str:
    return json.dumps(value, default=str)
