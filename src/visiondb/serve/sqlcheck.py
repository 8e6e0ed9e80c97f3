"""What a read from a caller without the server token may touch, judged on DuckDB's own parse tree.

DuckDB reads a file for any table reference it cannot find in the catalog (a replacement scan: `FROM 'x.csv'`,
`FROM leak.csv`, `FROM "/dir/leak"."csv"`), and table functions may read files, run nested SQL or write
(`read_text`, `query`, `json_execute_serialized_sql`, `checkpoint`). So every base-table reference must name a
table or view of the catalog or a CTE in scope, every table function must be on an allowlist (or be one of
visiondb's own functions), and scalar functions with side effects (`nextval`, `setseed`) are refused. The
catalog's records of entity configs and runs (`vdb.entities`, `vdb.runs`) are refused too: configs may hold
credentials (an `import.sql` connection URL with its password), which REST shows masked but SQL cannot.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from ..errors import QueryError
from ..sql.statements import sql_tree
from .errors import ForbiddenError

SAFE_TABLE_FUNCTIONS = frozenset({
    "range", "generate_series", "unnest", "repeat", "repeat_row", "json_each", "json_tree", "test_all_types",
    "duckdb_columns", "duckdb_constraints", "duckdb_databases", "duckdb_dependencies", "duckdb_extensions",
    "duckdb_functions", "duckdb_indexes", "duckdb_keywords", "duckdb_memory", "duckdb_optimizers",
    "duckdb_schemas", "duckdb_sequences", "duckdb_settings", "duckdb_tables", "duckdb_types", "duckdb_views",
    "pragma_collations", "pragma_database_size", "pragma_platform", "pragma_show", "pragma_table_info",
    "pragma_user_agent", "pragma_version", "icu_calendar_names", "pg_timezone_names", "duckdb_variables",
    "duckdb_temporary_files", "duckdb_prepared_statements",
})
# scalar functions DuckDB marks as having side effects that only read state or draw random numbers
HARMLESS_SIDE_EFFECTS = frozenset({
    "random", "uuid", "uuidv4", "uuidv7", "gen_random_uuid", "currval", "error", "stats", "vector_type",
    "current_connection_id", "current_query", "current_query_id", "current_transaction_id",
})
ALWAYS_REFUSED = frozenset({"nextval", "setval", "setseed", "sleep_ms", "write_log"})
SYSTEM_SCHEMAS = (("temp", "main"), ("system", "main"), ("system", "pg_catalog"))
VIRTUAL_SCHEMAS = ("information_schema", "pg_catalog")
FILE_CHARS = "/\\.:"
PRIVATE_TABLES = frozenset({("vdb", "entities"), ("vdb", "runs")})
"""(schema, table) of catalog records holding configs as stored: read them with the token, or through REST."""

_side_effects: frozenset[str] | None = None
_side_effects_lock = threading.Lock()


def check_read_tree(db: Any, sql: str) -> None:
    """Refuse `sql` (one read statement) if it reaches files, runs nested SQL or changes state; 403/400."""
    tree = sql_tree(db.cursor(), sql)
    if tree.get("error"):
        raise QueryError(f"SQL error: {tree.get('error_message')}", query=sql)
    _Walker(db, sql).visit(tree.get("statements", []), frozenset())


def side_effect_functions(db: Any) -> frozenset[str]:
    """Scalar functions with side effects (state changes, sleeps, log writes), looked up once per process."""
    global _side_effects
    with _side_effects_lock:
        if _side_effects is None:
            rows = db.cursor().execute(
                "SELECT DISTINCT lower(function_name) FROM duckdb_functions() WHERE has_side_effects AND internal"
            ).fetchall()
            _side_effects = frozenset(r[0] for r in rows) - HARMLESS_SIDE_EFFECTS | ALWAYS_REFUSED
        return _side_effects


@dataclass
class _Catalog:
    """Lower-cased (database, schema, name) of every table and view, and where unqualified names are looked up."""

    objects: set[tuple[str, str, str]]
    search: tuple[tuple[str, str], ...]
    databases: tuple[str, ...]
    schemas: set[tuple[str, str]]  # (database, schema) of every schema, attached databases included

    @classmethod
    def load(cls, db: Any) -> "_Catalog":
        cur = db.cursor()
        objects = set(cur.execute(
            "SELECT lower(database_name), lower(schema_name), lower(table_name) FROM duckdb_tables()"
            " UNION ALL SELECT lower(database_name), lower(schema_name), lower(view_name) FROM duckdb_views()"
        ).fetchall())
        database, schema = cur.execute("SELECT lower(current_database()), lower(current_schema())").fetchall()[0]
        schemas = set(cur.execute("SELECT lower(database_name), lower(schema_name) FROM duckdb_schemas()").fetchall())
        return cls(objects, ((database, schema), *SYSTEM_SCHEMAS), (database, "temp", "system"), schemas)

    def known_place(self, catalog: str, schema: str) -> bool:
        """Whether a qualifier names a database or schema of this catalog (`db.`, `schema.`, `db.schema.`)."""
        c, s = catalog.lower(), schema.lower()
        if c:
            return any(d == c and (not s or sch == s) for d, sch in self.schemas)
        return any(s in (d, sch) for d, sch in self.schemas)

    def resolves(self, catalog: str, schema: str, name: str) -> bool:
        """True when DuckDB finds (catalog.)(schema.)name in the catalog (so no replacement scan can happen)."""
        c, s, n = catalog.lower(), schema.lower(), name.lower()
        if s in VIRTUAL_SCHEMAS and (not c or any(d == c for d, _ in self.schemas)):
            return True  # DuckDB serves these views for every database; they are never files
        if c:
            return (c, s or "main", n) in self.objects
        if s:
            return any((d, s, n) in self.objects for d in self.databases) or (s, "main", n) in self.objects
        return any((d, sch, n) in self.objects for d, sch in self.search)


class _Walker:
    """Walks one statement's parse tree; the catalog and visiondb's function ids are read only when needed."""

    def __init__(self, db: Any, sql: str) -> None:
        self.db, self.sql = db, sql
        self._catalog: _Catalog | None = None
        self._functions: set[str] | None = None
        self._side_effects = side_effect_functions(db)

    def visit(self, node: Any, ctes: frozenset[str]) -> None:
        """Check `node` and its children; `ctes` are the (lower-cased) CTE names in scope."""
        if isinstance(node, list):
            for value in node:
                self.visit(value, ctes)
            return
        if not isinstance(node, dict):
            return
        ctes = self._visit_ctes(node.get("cte_map"), ctes)
        self._check(node, ctes)
        for key, value in node.items():
            if key != "cte_map":
                self.visit(value, ctes)

    def _visit_ctes(self, cte_map: Any, ctes: frozenset[str]) -> frozenset[str]:
        """A CTE sees the CTEs defined before it (and itself when recursive); the query sees them all."""
        entries = cte_map.get("map") if isinstance(cte_map, dict) else None
        for entry in entries or []:
            name = str(entry.get("key", "")).lower()
            body = entry.get("value") or {}
            query = body.get("query_node") or {}
            recursive = query.get("type") == "RECURSIVE_CTE_NODE" and str(query.get("cte_name", "")).lower() == name
            self.visit(body, ctes | {name} if recursive else ctes)
            ctes = ctes | {name}
        return ctes

    def _check(self, node: dict, ctes: frozenset[str]) -> None:
        kind = node.get("type")
        if kind == "BASE_TABLE":
            self._check_table(str(node.get("catalog_name") or ""), str(node.get("schema_name") or ""),
                              str(node.get("table_name") or ""), ctes)
        elif kind == "SHOW_REF" and node.get("query") is None and node.get("show_type") != "SHOW_SPECIAL":
            parts = ["", "", *str(node.get("table_name") or "").split(".")][-3:]
            if parts[2]:
                self._check_table(parts[0], parts[1], parts[2], ctes)
        elif kind == "TABLE_FUNCTION":
            self._check_table_function(str((node.get("function") or {}).get("function_name", "")).lower())
        if node.get("class") == "FUNCTION":
            name = str(node.get("function_name", "")).lower()
            if name in self._side_effects:
                raise ForbiddenError(
                    f"function {name}() has side effects (state changes, sleeps, log writes) and is not allowed in"
                    " /v1/query without the server token",
                    function=name, query=self.sql,
                )

    def _check_table(self, catalog: str, schema: str, name: str, ctes: frozenset[str]) -> None:
        if not catalog and not schema and name.lower() in ctes:
            return
        if self._catalog is None:
            self._catalog = _Catalog.load(self.db)
        if self._catalog.resolves(catalog, schema, name):
            if (schema.lower(), name.lower()) in PRIVATE_TABLES:
                raise ForbiddenError(
                    f"{schema}.{name} holds entity configs as stored (credentials included) and is not readable in"
                    f" /v1/query without the server token; GET /v1/{{kind}}/{{id}} shows configs with passwords"
                    " masked", table=f"{schema}.{name}", query=self.sql,
                )
            return
        parts = [p for p in (catalog, schema, name) if p]
        joined = ".".join(parts)
        file_like = any(ch in part for part in parts for ch in FILE_CHARS)
        if file_like or ((catalog or schema) and not self._catalog.known_place(catalog, schema)):
            raise ForbiddenError(
                f"{joined!r} is not a table or view of this database and names a file; reading files directly"
                " is not allowed in /v1/query without the server token", table=joined, query=self.sql,
            )
        raise QueryError(f"table {joined!r} does not exist (a read without the server token may use this"
                         " database's tables and views only)", table=joined, query=self.sql)

    def _check_table_function(self, name: str) -> None:
        if name in SAFE_TABLE_FUNCTIONS:
            return
        if self._functions is None:
            self._functions = {f.lower() for f in self.db.catalog.list_entities("function")}
        if name in self._functions:
            return
        raise ForbiddenError(
            f"table function {name}() is not allowed in /v1/query without the server token (it may read files,"
            " run nested SQL or change state); import files with a procedure instead", function=name,
            query=self.sql,
        )
