"""Names DuckDB gives a meaning of its own: keywords and built-in functions, each listed once per process.

A function entity is a macro called by its id, so its id may take neither: a keyword is parsed as syntax, and a
macro named like a built-in (`lower`, `range`) replaces it for every query on the database, visiondb's own too.
"""
from __future__ import annotations

from dataclasses import dataclass

import duckdb


@dataclass(frozen=True)
class BuiltinFunctions:
    """DuckDB's built-in functions, by lower-case name: all of them, and the aggregates."""

    names: frozenset[str]
    aggregates: frozenset[str]


_builtins: BuiltinFunctions | None = None  # read once per process: the built-ins are the same for every database


def builtin_functions(con: duckdb.DuckDBPyConnection) -> BuiltinFunctions:
    """DuckDB's built-in functions (listed once per process: ~12 ms)."""
    global _builtins
    if _builtins is None:
        rows = [(name.lower(), kind) for name, kind in con.execute(
            "SELECT function_name, function_type FROM duckdb_functions() WHERE internal").fetchall()]
        _builtins = BuiltinFunctions(
            names=frozenset(name for name, _ in rows),
            aggregates=frozenset(name for name, kind in rows if kind == "aggregate"),
        )
    return _builtins


_keywords: frozenset[str] | None = None


def sql_keywords(con: duckdb.DuckDBPyConnection) -> frozenset[str]:
    """DuckDB's keywords that are more than plain identifiers (reserved, type/function and column-name ones), read
    from `duckdb_keywords()` once per process."""
    global _keywords
    if _keywords is None:
        rows = con.execute(
            "SELECT keyword_name FROM duckdb_keywords() WHERE keyword_category <> 'unreserved'").fetchall()
        _keywords = frozenset(name.lower() for (name,) in rows)
    return _keywords
