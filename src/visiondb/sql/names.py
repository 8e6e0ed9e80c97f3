"""Names a function entity's id may not take: DuckDB's keywords and built-in functions (each listed once per
process), and the SQL functions visiondb defines itself.

A function entity is a macro called by its id: a keyword is parsed as syntax, and a macro named like a built-in
(`lower`, `range`) or like `fetch_bytes` replaces it for every query on the database, visiondb's own too.
"""
from __future__ import annotations

import duckdb

IMPL_PREFIX = "__vdb_"
"""Prefix of the Python UDF behind each SQL function visiondb registers (`__vdb_<id>`)."""
VISIONDB_FUNCTIONS = frozenset({"fetch", "fetch_bytes"})
"""SQL functions every visiondb database defines (`sql.builtins` creates them from this set)."""


def reserved_by_visiondb(name: str) -> bool:
    """Whether `name` is a SQL function visiondb defines itself, or the name of a UDF behind one."""
    lowered = name.lower()
    return lowered in VISIONDB_FUNCTIONS or lowered.startswith(IMPL_PREFIX)


_builtins: frozenset[str] | None = None  # read once per process: the built-ins are the same for every database


def builtin_function_names() -> frozenset[str]:
    """Lower-case names of DuckDB's built-in functions (listed once per process, ~15 ms, on a connection of its own:
    Python UDFs registered on a database are listed as internal too)."""
    global _builtins
    if _builtins is None:
        with duckdb.connect() as fresh:
            rows = fresh.execute("SELECT function_name FROM duckdb_functions() WHERE internal").fetchall()
        _builtins = frozenset(name.lower() for (name,) in rows)
    return _builtins


_keywords: frozenset[str] | None = None


def sql_keywords() -> frozenset[str]:
    """DuckDB's keywords that are more than plain identifiers (reserved, type/function and column-name ones), read
    from `duckdb_keywords()` once per process."""
    global _keywords
    if _keywords is None:
        with duckdb.connect() as fresh:
            rows = fresh.execute(
                "SELECT keyword_name FROM duckdb_keywords() WHERE keyword_category <> 'unreserved'").fetchall()
        _keywords = frozenset(name.lower() for (name,) in rows)
    return _keywords
