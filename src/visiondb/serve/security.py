"""Access control: bearer-token checks, read-only SQL detection with DuckDB's parser, and the fetch policy.

Only SELECT, EXPLAIN and show-like PRAGMAs count as reads; anything else (or several statements) is a write.
SQL sent by callers without the token may not read files directly (read_csv, 'x.parquet', leak.csv, ...),
run nested SQL or call state-changing functions (`sqlcheck`): files are reached only through visiondb's
fetcher, which enforces the allowed roots.
"""
from __future__ import annotations

import hmac
from typing import Any

from fastapi import Request

from ..errors import AuthError
from ..ingest.policy import FetchPolicy
from ..sql.statements import EXPLAIN_PREFIX, READ_STATEMENTS, is_read_only
from .errors import ForbiddenError
from .settings import ServerSettings
from .sqlcheck import check_read_tree



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
