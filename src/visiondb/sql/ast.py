"""Small, safe rewrites of SELECT statements through DuckDB's own parser (json_serialize_sql)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import duckdb

from ..errors import QueryError


@dataclass
class SelectShape:
    """What a transform needs to know about its input query."""

    source_table: str | None  # the single base table in FROM, when there is exactly one
    source_alias: str | None
    has_star: bool
    output_names: list[str]
    grouped: bool
    tree: dict


def parse_select(con: duckdb.DuckDBPyConnection, query: str) -> SelectShape:
    row = con.execute("SELECT json_serialize_sql(?::VARCHAR)", [query]).fetchall()[0]
    tree = json.loads(row[0])
    if tree.get("error"):
        raise QueryError(f"SQL error in inputData: {tree.get('error_message', 'cannot parse')}", field="inputData")
    statements = tree.get("statements", [])
    if len(statements) != 1 or statements[0]["node"]["type"] != "SELECT_NODE":
        return SelectShape(None, None, True, [], True, tree)
    node = statements[0]["node"]
    frm = node.get("from_table") or {}
    table = frm.get("table_name") if frm.get("type") == "BASE_TABLE" and not frm.get("schema_name") else None
    names = []
    has_star = False
    for item in node.get("select_list", []):
        if item.get("class") == "STAR":
            has_star = True
        elif item.get("alias"):
            names.append(item["alias"])
        elif item.get("class") == "COLUMN_REF":
            names.append(item["column_names"][-1])
    grouped = bool(node.get("group_expressions")) or bool(node.get("modifiers") and _has_limit(node))
    return SelectShape(table, frm.get("alias") or None, has_star, names, grouped, tree)


def _has_limit(node: dict) -> bool:
    return any(m.get("type") in ("LIMIT_MODIFIER", "LIMIT_PERCENT_MODIFIER") for m in node.get("modifiers", []))


def with_row_name(con: duckdb.DuckDBPyConnection, shape: SelectShape, column: str = "_rowName") -> str:
    """Return the query with `<source>._rowName` added to its select list (row identity for resumable writes)."""
    tree = json.loads(json.dumps(shape.tree))
    node = tree["statements"][0]["node"]
    qualifier = shape.source_alias or shape.source_table
    ref: dict[str, Any] = {
        "class": "COLUMN_REF",
        "type": "COLUMN_REF",
        "alias": column,
        "query_location": 18446744073709551615,
        "column_names": [qualifier, column],
    }
    node["select_list"].insert(0, ref)
    row = con.execute("SELECT json_deserialize_sql(?::JSON)", [json.dumps(tree)]).fetchall()[0]
    return row[0]
