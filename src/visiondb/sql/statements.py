"""Statement kinds by DuckDB's own parser: which SQL only reads (the server's token rule, the CLI's file rule)."""
from __future__ import annotations

import json
import re
from typing import Any, Iterator

import duckdb

from ..errors import ConfigError, QueryError

READ_STATEMENTS = {"SELECT", "EXPLAIN"}
SHOW_PRAGMAS = re.compile(
    r"^\s*PRAGMA\s+(show_tables|show_tables_expanded|table_info|show|database_size|database_list|version"
    r"|storage_info|functions|collations|platform|user_agent|metadata_info)\b",
    re.IGNORECASE,
)
EXPLAIN_PREFIX = re.compile(r"^\s*EXPLAIN(\s+ANALY[SZ]E)?\s+", re.IGNORECASE)
WRITE_KEYWORDS = frozenset({"insert", "update", "delete", "merge"})
"""Keywords of the data-changing statements a query may hold in a CTE (`WITH d AS (DELETE ... RETURNING *)`)."""
_WORD = re.compile(r"[A-Za-z_]+")


def sql_tree(con: duckdb.DuckDBPyConnection, sql: str) -> dict:
    """DuckDB's parse tree of `sql` (json_serialize_sql); a parse failure is `error` / `error_message` in it."""
    return json.loads(con.execute("SELECT json_serialize_sql(?::VARCHAR)", [sql]).fetchall()[0][0])


def walk_tree(tree: Any, skip: frozenset[str] = frozenset()) -> Iterator[dict]:
    """Every object in a JSON tree, depth first; objects whose `class` is in `skip` are not entered."""
    stack = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if item.get("class") in skip:
                continue
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def changes_data(db: Any, sql: str, kind: str) -> bool:
    """Whether a statement DuckDB types as a query (`kind` SELECT or MULTI) holds an INSERT, UPDATE, DELETE or
    MERGE: one in a CTE leaves the statement a SELECT. A SELECT's parse tree is walked for their nodes; a MULTI
    one (a PIVOT, which has no tree) is read token by token."""
    if kind == "MULTI":
        return any(token.name == "keyword" and (_WORD.match(sql, at) or [""])[0].lower() in WRITE_KEYWORDS
                   for at, token in duckdb.tokenize(sql))
    tree = sql_tree(db.cursor(), sql)
    if tree.get("error"):
        return True  # not a tree we can read: not known to only read
    # INSERT_QUERY_NODE, UPDATE_QUERY_NODE...; reads are SELECT_NODE, SET_OPERATION_NODE...
    return any(str(item.get("type", "")).endswith("_QUERY_NODE") for item in walk_tree(tree))


def is_read_only(db: Any, sql: str) -> bool:
    """Decide with DuckDB's own parser whether `sql` is a single read statement (`db`: anything with `cursor()`,
    a VisionDB or a plain DuckDB connection); QueryError when it does not parse."""
    try:
        statements = db.cursor().extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(f"SQL error: {exc}", query=sql) from None
    if len(statements) != 1:
        return False
    stmt = statements[0]
    kind = stmt.type.name
    if kind == "SELECT":
        return not changes_data(db, sql, kind)
    if kind == "EXPLAIN":  # EXPLAIN ANALYZE executes its statement: judge the inner one
        inner = EXPLAIN_PREFIX.sub("", stmt.query or "", count=1)
        return inner != (stmt.query or "") and is_read_only(db, inner)
    return kind == "PRAGMA" and bool(SHOW_PRAGMAS.match(stmt.query or ""))


QUERY_STATEMENTS = {"SELECT", "MULTI"}
"""Statement kinds that only produce rows: SELECT (FROM-first, VALUES, SHOW, DESCRIBE, UNPIVOT too) and MULTI
(PIVOT, which DuckDB plans as several statements)."""


def require_one_statement(db: Any, sql: str, field: str) -> str:
    """The kind of `sql` (SELECT or MULTI); ConfigError naming `field` unless it is exactly one query: an empty or
    `;` query has no statement (DuckDB would answer it with no result at all), and a write (`INSERT ... RETURNING`,
    `CREATE TABLE ... AS`) would run again with every chunk and every resume. QueryError when it does not parse."""
    try:
        statements = db.cursor().extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(f"SQL error in {field}: {exc}", field=field) from None
    if len(statements) != 1:
        what = "is empty" if not statements else f"holds {len(statements)} statements"
        raise ConfigError(f"{field} {what}: give one query, e.g. SELECT ... FROM <table>", field=f"params.{field}")
    kind = statements[0].type.name
    if (kind not in QUERY_STATEMENTS or changes_data(db, sql, kind)
            or (kind == "MULTI" and not _reads_as_subquery(db, sql))):
        what = f"a {kind} statement" if kind not in QUERY_STATEMENTS else "a statement that changes data"
        raise ConfigError(f"{field} must be one query (SELECT ...), not {what}", field=f"params.{field}")
    return kind


def _reads_as_subquery(db: Any, sql: str) -> bool:
    """Whether `sql` parses inside `SELECT * FROM (...)`: a PIVOT does; a CREATE, COPY, INSERT, UPDATE or DELETE
    holding a PIVOT (all of which DuckDB also plans as several statements) does not."""
    body = sql
    for at, token in reversed(duckdb.tokenize(sql)):  # cut trailing `;`s and the comments around them
        if token.name == "comment" or (token.name == "operator" and sql[at] == ";"):
            body = sql[:at]
        else:
            break
    try:
        db.cursor().extract_statements(f"SELECT * FROM ({body}\n)")  # \n: a trailing -- comment
    except duckdb.Error:
        return False
    return True
