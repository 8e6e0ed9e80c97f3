"""Access control: bearer-token checks, read-only SQL detection with DuckDB's parser, and the fetch policy.

Only SELECT, EXPLAIN and show-like PRAGMAs count as reads; anything else (or several statements) is a write.
SQL sent by callers without the token may not read files directly (read_csv, 'x.parquet', leak.csv, ...),
run nested SQL or call state-changing functions (`sqlcheck`): files are reached only through visiondb's
fetcher, which enforces the allowed roots.
"""
from __future__ import annotations

import hmac
import re
from typing import Any

import duckdb
from fastapi import Request

from ..errors import AuthError, QueryError
from ..ingest.policy import FetchPolicy
from .errors import ForbiddenError
from .settings import ServerSettings
from .sqlcheck import check_read_tree

READ_STATEMENTS = {"SELECT", "EXPLAIN"}
SHOW_PRAGMAS = re.compile(
    r"^\s*PRAGMA\s+(show_tables|show_tables_expanded|table_info|show|database_size|database_list|version"
    r"|storage_info|functions|collations|platform|user_agent|metadata_info)\b",
    re.IGNORECASE,
)
EXPLAIN_PREFIX = re.compile(r"^\s*EXPLAIN(\s+ANALY[SZ]E)?\s+", re.IGNORECASE)


def bearer_token(request: Request) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, if any."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def has_token(request: Request, settings: ServerSettings) -> bool:
    """True when the server has no token or the request carries the right one (constant-time compare)."""
    if not settings.token:
        return True
    given = bearer_token(request)
    return given is not None and hmac.compare_digest(given.encode(), settings.token.encode())


def require_token(request: Request, settings: ServerSettings, what: str) -> None:
    """Raise 401 (no token) or 403 (wrong token) unless the request may do `what`."""
    if not settings.token:
        return
    given = bearer_token(request)
    if given is None:
        raise AuthError(f"{what} requires 'Authorization: Bearer <token>'", method=request.method,
                        path=request.url.path)
    if not hmac.compare_digest(given.encode(), settings.token.encode()):
        raise ForbiddenError(f"{what}: the bearer token is not valid", method=request.method, path=request.url.path)


def require_write(request: Request) -> None:
    """FastAPI dependency for routes that change state."""
    settings: ServerSettings = request.app.state.settings
    require_token(request, settings, f"{request.method} {request.url.path}")


def require_read(request: Request) -> None:
    """FastAPI dependency for reads: open unless the server protects reads."""
    settings: ServerSettings = request.app.state.settings
    if settings.protect_reads:
        require_token(request, settings, f"{request.method} {request.url.path}")


def is_read_only(db: Any, sql: str) -> bool:
    """Decide with DuckDB's own parser whether `sql` is a single read statement."""
    try:
        statements = db.cursor().extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(f"SQL error: {exc}", query=sql) from None
    if len(statements) != 1:
        return False
    stmt = statements[0]
    kind = stmt.type.name
    if kind == "SELECT":
        return True
    if kind == "EXPLAIN":  # EXPLAIN ANALYZE executes its statement: judge the inner one
        inner = EXPLAIN_PREFIX.sub("", stmt.query or "", count=1)
        return inner != (stmt.query or "") and is_read_only(db, inner)
    return kind == "PRAGMA" and bool(SHOW_PRAGMAS.match(stmt.query or ""))


def check_no_file_access(db: Any, sql: str) -> None:
    """Refuse reads that reach files or URLs directly, run nested SQL or change state (see `sqlcheck`)."""
    for stmt in db.cursor().extract_statements(sql):
        if stmt.type.name not in READ_STATEMENTS:
            continue
        check_read_tree(db, EXPLAIN_PREFIX.sub("", stmt.query or "", count=1))


def server_fetch_policy(settings: ServerSettings) -> FetchPolicy:
    """The policy every REST-triggered read goes through: local files only under the allowed roots,
    no private/loopback/link-local addresses unless listed in allow_fetch."""
    roots = list(settings.allow_roots)
    return FetchPolicy(
        allowed_roots=roots,
        allow_local=bool(roots),
        block_private=True,
        allow_fetch=list(settings.allow_fetch),
    )
