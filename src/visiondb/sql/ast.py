"""Small, safe rewrites of SELECT statements through DuckDB's own parser (json_serialize_sql)."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterator, Literal

import duckdb

from ..errors import QueryError
from .statements import require_one_statement, sql_tree, walk_tree

# how a select list carries the source's row-name column:
# kept (a plain star, or the column itself under its own name), renamed (the column, spelt in another case),
# absent (to be added), altered (another value under that name: the rows have no usable identity)
RowNameUse = Literal["kept", "renamed", "absent", "altered"]
ROW_NAME = "_rowName"
ROW_BY_ROW = frozenset({"PROJECTION", "FILTER", "SEQ_SCAN", "TABLE_SCAN", "UNNEST", "ORDER_BY"})
"""Plan operators that handle each source row on its own: a query made only of them may run chunk by chunk."""
PER_STATEMENT = frozenset({
    "now", "get_current_timestamp", "get_current_time", "current_date", "current_time", "current_timestamp",
    "current_localtime", "current_localtimestamp", "localtime", "localtimestamp", "transaction_timestamp",
    "current_query", "current_transaction_id", "txid_current", "stats", "vector_type"})
"""Functions whose value is the statement's or transaction's (a time, the query text, a table's statistics): each
chunk runs as a statement of its own, so a query calling one runs whole. Called in the query they are found in its
parse tree (`current_date` and the like parse as column names); through a macro, in the plan's expressions, where
the select list's aliases hide them."""
_PER_STATEMENT_CALL = re.compile(rf"\b(?:{'|'.join(sorted(PER_STATEMENT))})\(", re.IGNORECASE)


@dataclass
class SelectShape:
    """What a transform needs to know about its input query."""

    source_table: str | None  # the single base table in FROM, when there is exactly one
    source_alias: str | None
    row_name: RowNameUse
    whole: bool  # not a single-table query, or its rows depend on each other (GROUP BY, DISTINCT, aggregates,
    # windows, joins, LIMIT, a second read of the source...): the query must see every row at once
    tree: dict
    tables: list[str] = field(default_factory=list)  # every base table the statement reads, anywhere in it


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
    cte_names = {str(e.get("key", "")).lower()
                 for n in walk_tree(tree) for e in (n.get("cte_map") or {}).get("map", [])}
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
    # only a single-table query can run chunk by chunk: the plan is asked about those alone
    whole = (table is None or _needs_all_rows(node) or tables_named(tables, table) > 1
             or _plan_combines_rows(con, query))
    use = row_name_use(node.get("select_list", []), (alias or table or "").lower())
    return SelectShape(table, alias, use, whole, tree, tables)


def tables_named(tables: list[str], name: str) -> int:
    """How many of `tables` are `name` (DuckDB names ignore case)."""
    return sum(t.lower() == name.lower() for t in tables)


def _base_tables(tree: Any) -> Iterator[dict]:
    """Every BASE_TABLE reference in a parsed statement (FROM, joins, subqueries, CTEs) in the main schema."""
    for node in walk_tree(tree):
        if node.get("type") == "BASE_TABLE" and node.get("schema_name", "").lower() in ("", "main"):
            yield node


def _needs_all_rows(node: dict) -> bool:
    """Whether a SELECT's own syntax makes its rows depend on other rows: grouping, DISTINCT, HAVING, QUALIFY,
    LIMIT, sampling, window functions, `rowid` (it restarts in each chunk) or a `PER_STATEMENT` value. Aggregates,
    subqueries and what called macros expand to are left to the plan (`_plan_combines_rows`)."""
    if node.get("group_expressions") or node.get("group_sets") or node.get("having") or node.get("qualify"):
        return True
    if node.get("aggregate_handling", "STANDARD_HANDLING") != "STANDARD_HANDLING" or node.get("sample"):
        return True
    if any(m.get("type") != "ORDER_MODIFIER" for m in node.get("modifiers", [])):
        return True  # DISTINCT, LIMIT, LIMIT PERCENT
    own = {k: node.get(k) for k in ("select_list", "where_clause", "from_table")}
    for item in walk_tree(own, skip=frozenset({"SUBQUERY"})):
        if item.get("class") == "WINDOW" or item.get("sample"):
            return True
        if item.get("class") == "COLUMN_REF" and str((item.get("column_names") or [""])[-1]).lower() == "rowid":
            return True
    for item in walk_tree(node):
        name = item.get("function_name") if item.get("class") == "FUNCTION" else \
            (item.get("column_names") or [""])[-1] if item.get("class") == "COLUMN_REF" else ""
        if str(name).lower() in PER_STATEMENT:
            return True
    return False


def _plan_combines_rows(con: duckdb.DuckDBPyConnection, query: str) -> bool:
    """Whether DuckDB's plan of `query` holds an operator that is not row by row (an aggregate, window, join,
    limit, sample...) or a call whose value is the statement's (`PER_STATEMENT`). DuckDB expands macros when it
    binds, so the plan shows what every called function became (an `sql.expression` is a macro), whoever defined
    it and however; it is planned on `con`, the cursor the
    chunks run on, whose TEMP macros and search path it shares. The optimizer is off meanwhile: it would turn
    `count(*)` into table statistics and fold a `row_number()` into the scan, and it runs calls on constants (a
    Python UDF would run at planning). ~0.5 ms. A query that does not plan is taken whole: running it reports why."""
    optimizing = con.execute("SELECT current_setting('enable_optimizer')").fetchall()[0][0]
    try:
        con.execute("PRAGMA disable_optimizer")
        rows = con.execute(f"EXPLAIN (FORMAT json) {query}").fetchall()
    except duckdb.Error:
        return True
    finally:
        if optimizing:
            con.execute("PRAGMA enable_optimizer")  # (SET enable_optimizer = true does not undo the PRAGMA)
    stack = list(json.loads(rows[0][1]))
    while stack:
        operator = stack.pop()
        if str(operator.get("name", "")).strip() not in ROW_BY_ROW:
            return True
        if _PER_STATEMENT_CALL.search(json.dumps(operator.get("extra_info", ""))):
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
