"""Names DuckDB gives a meaning of its own: keywords and built-in functions, each listed once per process.

A function entity is a macro called by its id, so its id may take neither: a keyword is parsed as syntax, and a
macro named like a built-in (`lower`, `range`) replaces it for every query on the database, visiondb's own too.
"""
from __future__ import annotations

from dataclasses import dataclass

import duckdb


@dataclass(frozen=True)
class BuiltinFunctions:
    """DuckDB's built-in functions, by lower-case name: all of them, the aggregates, and the macros' bodies."""

    names: frozenset[str]
    aggregates: frozenset[str]
    macros: dict[str, tuple[str, ...]]


_builtins: BuiltinFunctions | None = None  # read once per process: the built-ins are the same for every database


def builtin_functions(con: duckdb.DuckDBPyConnection) -> BuiltinFunctions:
    """DuckDB's built-in functions (listed once per process: ~12 ms)."""
    global _builtins
    if _builtins is None:
        rows = {(name.lower(), kind, definition) for name, kind, definition in con.execute(
            "SELECT function_name, function_type, macro_definition FROM duckdb_functions() WHERE internal").fetchall()}
        macros: dict[str, tuple[str, ...]] = {}
        for name, kind, definition in rows:
            if kind == "macro" and definition:
                macros[name] = macros.get(name, ()) + (definition,)
        _builtins = BuiltinFunctions(
            names=frozenset(name for name, _, _ in rows),
            aggregates=frozenset(name for name, kind, _ in rows if kind == "aggregate"),
            macros=macros,
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
