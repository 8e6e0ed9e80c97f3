"""JSON error bodies `{"error", "httpCode", "details"}` for every failure, so bad input never yields a 500."""
from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import AuthError, VisionDBError
from .encode import SafeJSONResponse, public_record

log = logging.getLogger("visiondb.serve")


class ForbiddenError(AuthError):
    """A bearer token was given but is not the server's token."""

    http_code = 403


class PayloadTooLargeError(VisionDBError):
    """The request body or an uploaded file is over the server's size limit."""

    http_code = 413


class ApplyTimeoutError(VisionDBError):
    """A function application did not finish within the server's `apply_timeout_s`."""

    http_code = 504


class QueryTimeoutError(VisionDBError):
    """A `/v1/query` statement ran past the server's `query_timeout_s` and was interrupted."""

    http_code = 504


def error_response(message: str, code: int, details: dict | None = None,
                   headers: dict[str, str] | None = None) -> SafeJSONResponse:
    """The one error body shape used by every route (URL passwords masked and run tracebacks left out: a failed
    run's details hold its record)."""
    body = {"error": message, "httpCode": code, "details": details or {}}
    return SafeJSONResponse(public_record(body), status_code=code, headers=headers)


def visiondb_error_code(exc: VisionDBError) -> int:
    """The HTTP status for a core error; a failed procedure run answers 400 like MLDB, whatever broke inside."""
    code = int(getattr(exc, "http_code", 400) or 400)
    if "run" in exc.details and code >= 500:
        return 400
    return code


async def on_visiondb_error(request: Request, exc: Exception) -> SafeJSONResponse:
    assert isinstance(exc, VisionDBError)
    run = exc.details.get("run")
    status = run.get("status") if isinstance(run, dict) else None
    if isinstance(status, dict) and status.get("traceback"):  # an unexpected failure inside a run: log, not body
        log.warning("run %s of procedure %s failed on %s %s:\n%s", run.get("id"), run.get("procedure"),
                    request.method, request.url.path, status["traceback"])
    return error_response(exc.message, visiondb_error_code(exc), exc.details)


async def on_validation_error(request: Request, exc: Exception) -> SafeJSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    field = ".".join(str(p) for p in first.get("loc", ()))
    if first.get("type") == "json_invalid":
        ctx = first.get("ctx") or {}
        return error_response(f"request body is not valid JSON: {ctx.get('error', first.get('msg'))}", 400,
                              {"field": "body"})
    problems = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in errors]
    return error_response(f"{field}: {first.get('msg')}", 400, {"field": field, "problems": problems})


async def on_http_error(request: Request, exc: Exception) -> SafeJSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 404 and message == "Not Found":
        message = f"no route for {request.method} {request.url.path}"
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        allowed = allowed_methods(request)
        message = f"method {request.method} is not allowed on {request.url.path} (allowed: {', '.join(allowed)})"
        headers["Allow"] = ", ".join(allowed)
    return error_response(message, exc.status_code, {"path": request.url.path}, headers=headers or None)


HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route fully matches on this path (Starlette's own 405 `Allow` names only the first
    route whose path matched, and FastAPI's included routers hide their routes' methods)."""
    from starlette.routing import Match

    routes = request.app.router.routes
    return [m for m in HTTP_METHODS
            if any(r.matches({**request.scope, "method": m})[0] == Match.FULL for r in routes)]


async def on_unexpected(request: Request, exc: Exception) -> SafeJSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return error_response(f"internal error: {type(exc).__name__}: {exc}", 500, {"path": request.url.path})


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every exception into the JSON error body."""
    handlers: dict[Any, Any] = {
        VisionDBError: on_visiondb_error,
        RequestValidationError: on_validation_error,
        StarletteHTTPException: on_http_error,
        Exception: on_unexpected,
    }
    for cls, handler in handlers.items():
        app.add_exception_handler(cls, handler)
