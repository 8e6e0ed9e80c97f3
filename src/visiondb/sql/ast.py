"""Small, safe rewrites of SELECT statements through DuckDB's own parser (json_serialize_sql)."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterator, Literal

import duckdb

from ..errors import QueryError
from .names import builtin_functions
from .statements import require_one_statement

# how a select list carries the source's row-name column:
# kept (a plain star, or the column itself under its own name), renamed (the column, spelt in another case),
# absent (to be added), altered (another value under that name: the rows have no usable identity)
RowNameUse = Literal["kept", "renamed", "absent", "altered"]
ROW_NAME = "_rowName"
ROW_COMBINING = re.compile(r"AGGREGATE|GROUP_BY|WINDOW")
"""Plan operators whose output rows combine input rows (HASH_GROUP_BY, UNGROUPED_AGGREGATE, STREAMING_WINDOW...)."""


@dataclass
class SelectShape:
    """What a transform needs to know about its input query."""

    source_table: str | None  # the single base table in FROM, when there is exactly one
    source_alias: str | None
    row_name: RowNameUse
    whole: bool  # rows depend on each other (GROUP BY, DISTINCT, aggregates, windows, LIMIT, a second read
    # of the source...): the query must see every row at once, never chunk by chunk
    tree: dict
    tables: list[str] = field(default_factory=list)  # every base table the statement reads, anywhere in it


def sql_tree(con: duckdb.DuckDBPyConnection, sql: str) -> dict:
    """DuckDB's parse tree of `sql` (json_serialize_sql); a parse failure is `error` / `error_message` in it."""
    return json.loads(con.execute("SELECT json_serialize_sql(?::VARCHAR)", [sql]).fetchall()[0][0])


def parse_select(con: duckdb.DuckDBPyConnection, query: str) -> SelectShape:
    """Parse `query` (DuckDB's parser) into the facts a transform decides its path on."""
    if require_one_statement(con, query, "inputData") == "MULTI":
        # a PIVOT without an IN list (DuckDB first reads the pivot values) has no parse tree to analyse: run it
        # whole, into a staging table, as any query whose rows depend on each other
        return SelectShape(None, None, "altered", True, {}, [])
    tree = sql_tree(con, query)
    if tree.get("error"):
        raise QueryError(f"SQL error in inputData: {tree.get('error_message', 'cannot parse')}", field="inputData")
    # an unqualified reference to a CTE name reads the CTE, not a table
    cte_names = {str(e.get("key", "")).lower() for n in _walk(tree) for e in (n.get("cte_map") or {}).get("map", [])}
    tables = [t["table_name"] for t in _base_tables(tree)
              if t.get("schema_name") or t.get("catalog_name") or t["table_name"].lower() not in cte_names]
    statements = tree.get("statements", [])
    if len(statements) != 1 or statements[0]["node"]["type"] != "SELECT_NODE":
        return SelectShape(None, None, "altered", True, tree, tables)
    node = statements[0]["node"]
    frm = node.get("from_table") or {}
    ctes = {c["key"].lower() for c in node.get("cte_map", {}).get("map", [])}
    table = frm.get("table_name") if frm.get("type") == "BASE_TABLE" and not frm.get("schema_name") else None
    if table is not None and table.lower() in ctes:
        table = None
    alias = frm.get("alias") or None
    whole = _needs_all_rows(con, node, query) or (table is not None and tables_named(tables, table) > 1)
    use = row_name_use(node.get("select_list", []), (alias or table or "").lower())
    return SelectShape(table, alias, use, whole, tree, tables)


def tables_named(tables: list[str], name: str) -> int:
    """How many of `tables` are `name` (DuckDB names ignore case)."""
    return sum(t.lower() == name.lower() for t in tables)


def _base_tables(tree: Any) -> Iterator[dict]:
    """Every BASE_TABLE reference in a parsed statement (FROM, joins, subqueries, CTEs) in the main schema."""
    for node in _walk(tree):
        if node.get("type") == "BASE_TABLE" and node.get("schema_name", "").lower() in ("", "main"):
            yield node


def _walk(tree: Any, skip: frozenset[str] = frozenset()) -> Iterator[dict]:
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


def _needs_all_rows(con: duckdb.DuckDBPyConnection, node: dict, query: str) -> bool:
    """Whether a SELECT's rows depend on other rows: grouping, DISTINCT, HAVING, QUALIFY, LIMIT, sampling,
    aggregates or window functions in its own expressions (subqueries, which run as written, are not looked at),
    or in what the functions it calls expand to (then the plan decides, subqueries included)."""
    if node.get("group_expressions") or node.get("group_sets") or node.get("having") or node.get("qualify"):
        return True
    if node.get("aggregate_handling", "STANDARD_HANDLING") != "STANDARD_HANDLING" or node.get("sample"):
        return True
    if any(m.get("type") != "ORDER_MODIFIER" for m in node.get("modifiers", [])):
        return True  # DISTINCT, LIMIT, LIMIT PERCENT
    calls = _own_calls({k: node.get(k) for k in ("select_list", "where_clause", "from_table")})
    if calls is None or not builtin_functions(con).aggregates.isdisjoint(calls):
        return True
    return bool(calls) and _plan_combines_rows(con, query)


def _own_calls(tree: Any) -> set[str] | None:
    """Lower-case names of the functions `tree` calls outside its subqueries, or None when it holds a window or a
    sample (rows that depend on each other whatever the functions are)."""
    calls: set[str] = set()
    for item in _walk(tree, skip=frozenset({"SUBQUERY"})):
        if item.get("class") == "WINDOW" or item.get("sample"):
            return None
        if item.get("class") == "FUNCTION":
            calls.add(str(item.get("function_name", "")).lower())
    return calls


def _plan_combines_rows(con: duckdb.DuckDBPyConnection, query: str) -> bool:
    """Whether DuckDB's plan of `query` aggregates or windows rows anywhere. DuckDB expands macros when it binds,
    so the plan shows what every called function became (an `sql.expression` is a macro: `mean_of(x)` may be
    `avg(x)`), whoever defined it and however (a `CREATE MACRO` on any cursor, another connection). ~0.4 ms. A
    query that does not bind is taken whole: running it reports the error."""
    try:
        rows = con.execute(f"EXPLAIN (FORMAT json) {query}").fetchall()
    except duckdb.Error:
        return True
    stack = list(json.loads(rows[0][1]))
    while stack:
        operator = stack.pop()
        if ROW_COMBINING.search(str(operator.get("name", ""))):
            return True
        stack.extend(operator.get("children", []))
    return False



def row_name_use(select_list: list[dict], source: str, column: str = ROW_NAME) -> RowNameUse:
    """How the select list carries the source's `column` (see RowNameUse); `source` is its lower-case qualifier."""
    uses = {_item_use(item, source, column) for item in select_list}
    for use in ("altered", "kept", "renamed"):
        if use in uses:
            return use  # type: ignore[return-value]
    return "absent"


def _item_use(item: dict, source: str, column: str) -> RowNameUse:
    """What one select item does with the row-name column."""
    lower = column.lower()
    alias = item.get("alias") or ""
    if item.get("class") == "STAR":
        return _star_use(item, source, lower)
    if item.get("class") == "COLUMN_REF" and item["column_names"][-1].lower() == lower:
        if alias.lower() not in ("", lower):
            return "absent"
        return "kept" if (alias or item["column_names"][-1]) == column else "renamed"
    return "altered" if alias.lower() == lower else "absent"


def _star_use(item: dict, source: str, lower: str) -> RowNameUse:
    """A star keeps the column unless it excludes or renames it; one that replaces it, or a COLUMNS(...)
    expression (which may or may not match it), alters it."""
    if item.get("columns") or item.get("expr") or (item.get("relation_name") or "").lower() not in ("", source):
        return "altered"
    if any(r["key"].lower() == lower for r in item.get("replace_list", [])):
        return "altered"
    excluded = [str(e).lower() for e in item.get("exclude_list", [])]
    excluded += [str(e.get("column", "")).lower() for e in item.get("qualified_exclude_list", [])
                 if isinstance(e, dict)]
    excluded += [str(r["key"].get("column", "")).lower() for r in item.get("rename_list", [])]
    return "absent" if lower in excluded else "kept"


def with_row_name(con: duckdb.DuckDBPyConnection, shape: SelectShape, column: str = ROW_NAME) -> str:
    """Return the query with `<source>._rowName` in its select list under exactly that name (row identity for
    resumable writes): added when absent, or re-aliased when the query spells it in another case."""
    tree = json.loads(json.dumps(shape.tree))
    node = tree["statements"][0]["node"]
    qualifier = shape.source_alias or shape.source_table
    if shape.row_name == "renamed":
        for item in node["select_list"]:
            if item.get("class") == "COLUMN_REF" and item["column_names"][-1].lower() == column.lower():
                item["alias"] = column
    else:
        node["select_list"].insert(0, {
            "class": "COLUMN_REF",
            "type": "COLUMN_REF",
            "alias": column,
            "query_location": 18446744073709551615,
            "column_names": [qualifier, column],
        })
    row = con.execute("SELECT json_deserialize_sql(?::JSON)", [json.dumps(tree)]).fetchall()[0]
    return row[0]
