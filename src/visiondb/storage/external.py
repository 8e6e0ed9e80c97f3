"""External SQL databases (MariaDB/MySQL, PostgreSQL, SQLite) through SQLAlchemy: streamed reads, idempotent upserts.

Reads stream through server-side cursors in Arrow chunks; writes upsert one Arrow chunk per transaction with the
dialect's own `INSERT ... ON DUPLICATE KEY UPDATE` / `ON CONFLICT DO UPDATE` (values always bound). Passwords never
appear in messages: every URL is rendered with `hide_password=True`.
"""
from __future__ import annotations

import datetime
import decimal
import json
import os
from typing import Any, Iterator, Sequence
from urllib.parse import urlsplit

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite

from ..errors import ConfigError, QueryError, VisionDBError

PASSWORD_ENV = "VISIONDB_SQL_PASSWORD"
KEY_STRING_LENGTH = 255


def make_engine(url: str, *, password: str | None = None, policy: Any = None) -> sa.Engine:
    """An engine for a SQLAlchemy URL; the password comes from the URL, `password` or env VISIONDB_SQL_PASSWORD.

    With a FetchPolicy, a SQLite database file must pass its local-path rules (allowed roots, local access)."""
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ConfigError(f"connection is not a valid SQLAlchemy URL: {exc}", field="connection") from None
    if policy is not None:
        parsed = _check_sqlite_path(parsed, policy)
    secret = password if password is not None else os.environ.get(PASSWORD_ENV)
    if parsed.password is None and secret:
        parsed = parsed.set(password=secret)
    try:
        return sa.create_engine(parsed, pool_pre_ping=True)
    except (sa.exc.ArgumentError, ImportError, sa.exc.NoSuchModuleError) as exc:
        raise ConfigError(f"cannot use connection {masked(parsed)}: {exc}", field="connection") from None


def _check_sqlite_path(parsed: sa.URL, policy: Any) -> sa.URL:
    """Apply the policy's `check_path` to a SQLite URL's database file (in-memory databases pass); the checked,
    resolved path replaces the URL's so a symlink cannot be swapped in between."""
    if parsed.get_backend_name() != "sqlite":
        return parsed
    database = parsed.database or ""
    uri_mode = str(parsed.query.get("uri", "")).lower() in ("true", "1")
    path = urlsplit(database).path if uri_mode and database.startswith("file:") else database
    if path in ("", ":memory:") or (uri_mode and parsed.query.get("mode") == "memory"):
        return parsed
    real = policy.check_path(path, masked(parsed))
    return parsed if uri_mode else parsed.set(database=str(real))


def masked(target: sa.Engine | sa.URL | str) -> str:
    """The URL with any password replaced by ***, safe for messages and logs."""
    if isinstance(target, sa.Engine):
        target = target.url
    if isinstance(target, str):
        try:
            target = sa.engine.make_url(target)
        except sa.exc.ArgumentError:
            return "<invalid URL>"
    return target.render_as_string(hide_password=True)


def _error(engine: sa.Engine, what: str, exc: Exception) -> VisionDBError:
    """A QueryError naming the (masked) database, without echoing bound values."""
    text = str(getattr(exc, "orig", None) or exc).splitlines()[0]
    return QueryError(f"{what} on {masked(engine)}: {text}", connection=masked(engine))


# reading --------------------------------------------------------------------------------------
def stream_query(
    engine: sa.Engine, query: str, params: dict[str, Any] | None = None, *, chunk_size: int = 10_000
) -> Iterator[pa.Table]:
    """Run a SELECT with a server-side cursor and yield Arrow tables of at most `chunk_size` rows; a SELECT without
    rows yields one empty table (string columns) so callers still see its columns. A statement that returns no
    result set yields nothing.

    Column types are inferred from the first chunk that has a non-null value; all-null columns become strings.
    Decimals take the precision/scale the driver reports (else precision 38), so wider values in later chunks fit.
    """
    if chunk_size < 1:
        raise ConfigError(f"chunkSize must be >= 1, got {chunk_size}", field="chunkSize")
    schema: dict[str, pa.DataType] = {}
    try:
        with engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=chunk_size).execute(
                sa.text(query), params or {}
            )
            if not result.returns_rows:
                return
            names = list(result.keys())
            specs = _numeric_specs(getattr(result.cursor, "description", None), len(names))
            empty = True
            for part in result.partitions(chunk_size):
                empty = False
                yield _to_arrow(names, [tuple(r) for r in part], schema, specs)
            if empty:
                yield _to_arrow(names, [], schema, specs)
    except sa.exc.SQLAlchemyError as exc:
        raise _error(engine, "query failed", exc) from None


def _numeric_specs(description: Any, width: int) -> list[tuple[Any, Any]]:
    """(precision, scale) per result column from the DB-API cursor description ((None, None) where unknown)."""
    specs: list[tuple[Any, Any]] = [(None, None)] * width
    if description is None or len(description) != width:
        return specs
    for i, d in enumerate(description):
        try:
            specs[i] = (d[4], d[5])
        except (IndexError, TypeError):
            pass
    return specs


def _to_arrow(names: list[str], rows: list[tuple], schema: dict[str, pa.DataType],
              specs: list[tuple[Any, Any]] | None = None) -> pa.Table:
    columns = list(zip(*rows)) if rows else [() for _ in names]
    arrays = []
    for i, (name, values) in enumerate(zip(names, columns)):
        values = [_plain(v) for v in values]
        try:
            arrays.append(_column(name, values, schema, specs[i] if specs else (None, None)))
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError) as exc:
            known = schema.get(name)
            what = f"the type {known} set by earlier rows" if known is not None else "one Arrow type"
            raise QueryError(f"query result column {name!r}: values do not fit {what} ({exc}); cast the column in"
                             " the query to one type", column=name) from None
    return pa.Table.from_arrays(arrays, names=names)


def _column(name: str, values: list[Any], schema: dict[str, pa.DataType], spec: tuple[Any, Any]) -> pa.Array:
    """One column as Arrow, in the type fixed for `name` by earlier chunks, else inferred (and then fixed)."""
    known = schema.get(name)
    if known is not None:
        return pa.array(values, type=known)
    arr = pa.array(values)
    if pa.types.is_null(arr.type):
        return pa.array(values, type=pa.string())
    if pa.types.is_decimal(arr.type) and arr.type.precision <= 38:
        arr = pa.array(values, type=_decimal_type(arr.type, *spec))
    schema[name] = arr.type
    return arr


def _decimal_type(inferred: pa.DataType, precision: Any, scale: Any) -> pa.DataType:
    """A decimal wide enough for every value of the column: the reported precision/scale (never narrower than the
    first chunk's), or decimal(38, scale) when the driver does not report them (e.g. an unconstrained NUMERIC)."""
    s = max(scale, inferred.scale) if _is_int(scale) and scale >= 0 else inferred.scale
    p = max(precision, inferred.precision) if _is_int(precision) and s <= precision <= 38 and precision > 0 else 38
    return pa.decimal128(p, s)


def _is_int(value: Any) -> bool:
    """A real integer (drivers report None, or booleans in some description fields)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _plain(value: Any) -> Any:
    """Driver values Arrow cannot take directly (memoryview, UUID, ...) become bytes/str."""
    if isinstance(value, (memoryview, bytearray)):
        return bytes(value)
    if value is None or isinstance(value, (str, bytes, int, float, bool, decimal.Decimal, datetime.date,
                                           datetime.datetime, datetime.time, datetime.timedelta)):
        return value
    return str(value)


# writing --------------------------------------------------------------------------------------
def sql_type(arrow_type: pa.DataType, *, key: bool = False) -> sa.types.TypeEngine:
    """The SQLAlchemy column type for an Arrow type (nested values are stored as JSON text)."""
    t = arrow_type
    if pa.types.is_boolean(t):
        return sa.Boolean()
    if pa.types.is_integer(t):
        return sa.BigInteger() if t.bit_width > 32 or t == pa.uint32() else sa.Integer()
    if pa.types.is_floating(t):
        return sa.Double()
    if pa.types.is_decimal(t):
        return sa.Numeric(t.precision, t.scale)
    if pa.types.is_timestamp(t):
        return sa.DateTime(timezone=t.tz is not None)
    if pa.types.is_date(t):
        return sa.Date()
    if pa.types.is_time(t):
        return sa.Time()
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")
    if key:
        return sa.String(KEY_STRING_LENGTH)
    return sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")


def _json_safe(value: Any) -> Any:
    if isinstance(value, (datetime.date, datetime.datetime, datetime.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _normalise(data: pa.Table) -> pa.Table:
    """Nested columns (structs such as image values, lists, maps) become JSON text columns."""
    cols = []
    for name in data.column_names:
        col = data.column(name)
        if pa.types.is_nested(col.type):
            text = [None if v is None else json.dumps(v, default=_json_safe, sort_keys=True) for v in col.to_pylist()]
            col = pa.chunked_array([pa.array(text, pa.string())])
        elif pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        cols.append(col)
    return pa.Table.from_arrays(cols, names=data.column_names)


def ensure_table(engine: sa.Engine, name: str, schema: pa.Schema, key: Sequence[str]) -> sa.Table:
    """Reflect `name`, or create it from the Arrow schema with `key` as primary key; returns the Table."""
    missing = [k for k in key if k not in schema.names]
    if missing:
        raise ConfigError(f"key column(s) {missing} are not in the data (columns: {schema.names})", field="key")
    meta = sa.MetaData()
    try:
        return sa.Table(name, meta, autoload_with=engine)
    except sa.exc.NoSuchTableError:
        pass
    except sa.exc.SQLAlchemyError as exc:
        raise _error(engine, f"cannot inspect table {name!r}", exc) from None
    columns = [
        sa.Column(f.name, sql_type(f.type, key=f.name in key), primary_key=f.name in key, autoincrement=False)
        for f in schema
    ]
    table = sa.Table(name, meta, *columns)
    try:
        meta.create_all(engine, checkfirst=True)
    except sa.exc.SQLAlchemyError as exc:
        raise _error(engine, f"cannot create table {name!r}", exc) from None
    return table


def _upsert_statement(engine: sa.Engine, table: sa.Table, key: Sequence[str], columns: list[str]) -> Any:
    """The dialect's upsert for `table` keyed by `key`, or None when the dialect or table cannot upsert."""
    pk = {c.name for c in table.primary_key.columns}
    unique = [{c.name for c in con.columns} for con in table.constraints if isinstance(con, sa.UniqueConstraint)]
    if not key or (set(key) != pk and set(key) not in unique):
        return None
    others = [c for c in columns if c not in key]
    name = engine.dialect.name
    if name in ("mysql", "mariadb"):
        stmt = mysql.insert(table)
        updates = {c: stmt.inserted[c] for c in (others or list(key)[:1])}
        return stmt.on_duplicate_key_update(updates)
    if name in ("postgresql", "sqlite"):
        stmt = (postgresql if name == "postgresql" else sqlite).insert(table)
        if not others:
            return stmt.on_conflict_do_nothing(index_elements=list(key))
        return stmt.on_conflict_do_update(index_elements=list(key), set_={c: stmt.excluded[c] for c in others})
    return None


def upsert_arrow(engine: sa.Engine, table: sa.Table, data: pa.Table, key: Sequence[str]) -> int:
    """Write one chunk in one transaction; with a key, re-writing the same rows updates instead of duplicating.

    Uses the dialect's native upsert when `key` is the table's primary key/unique constraint, otherwise deletes the
    chunk's keys and inserts them (same transaction). Without a key it appends.
    """
    if data.num_rows == 0:
        return 0
    data = _normalise(data)
    unknown = [c for c in data.column_names if c not in table.columns]
    if unknown:
        raise ConfigError(
            f"column(s) {unknown} are not in remote table {table.name!r} (it has {list(table.columns.keys())})",
            field="inputData",
        )
    rows = data.to_pylist()
    stmt = _upsert_statement(engine, table, key, data.column_names)
    try:
        with engine.begin() as conn:
            if stmt is not None:
                conn.execute(stmt, rows)
            else:
                if key:
                    keys = [tuple(r[k] for k in key) for r in rows]
                    cond = sa.tuple_(*[table.c[k] for k in key]).in_(keys) if len(key) > 1 else table.c[key[0]].in_(
                        [k[0] for k in keys]
                    )
                    conn.execute(sa.delete(table).where(cond))
                conn.execute(sa.insert(table), rows)
    except sa.exc.SQLAlchemyError as exc:
        raise _error(engine, f"writing {data.num_rows} rows to {table.name!r} failed", exc) from None
    return data.num_rows


def drop_table(engine: sa.Engine, name: str) -> None:
    """Drop a remote table if it exists (used by tests and examples to clean up)."""
    meta = sa.MetaData()
    sa.Table(name, meta).drop(engine, checkfirst=True)
