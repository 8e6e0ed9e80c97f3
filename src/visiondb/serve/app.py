"""The FastAPI app factory: MLDB-shaped routes over one open VisionDB, with auth, limits and batching."""
from __future__ import annotations

import io
import logging
import weakref
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from fastapi import APIRouter, Depends, FastAPI, Request, Response

from .. import __version__
from ..core.registry import DATASET_TYPES, FUNCTION_TYPES, PROCEDURE_TYPES
from .batching import BatcherPool
from .encode import respond
from .errors import install_error_handlers
from .limits import BodyLimitMiddleware
from .security import require_read, server_fetch_policy
from .settings import ServerSettings

log = logging.getLogger("visiondb.serve")


def create_app(db: Any, settings: ServerSettings | None = None) -> FastAPI:
    """Build the REST app over `db` (one process, one open database); installs the server's fetch policy."""
    settings = settings or ServerSettings()
    if settings.install_fetch_policy:
        db.set_fetch_policy(server_fetch_policy(settings))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from starlette.concurrency import run_in_threadpool

        app.state.warm_problems = await run_in_threadpool(warm_functions, app, settings.warm)
        try:
            yield
        finally:
            app.state.batchers.close()

    app = FastAPI(
        title="visiondb", version=__version__, lifespan=lifespan,
        description="MLDB-compatible REST API of visiondb: datasets, functions, procedures, SQL queries and "
                    "micro-batched real-time image classification.",
    )
    app.state.db = db
    app.state.settings = settings
    app.state.batchers = BatcherPool(db, settings.max_batch, settings.max_wait_ms)
    app.state.input_names = InputNames(db)
    app.state.warm_problems = []
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)

    from . import routes_entities, routes_functions, routes_procedures, routes_query

    app.include_router(routes_functions.router)
    app.include_router(routes_procedures.router)
    app.include_router(routes_query.router)
    app.include_router(routes_entities.build_router())
    app.include_router(_meta_router())
    return app


class InputNames:
    """Memoised `function.input_names()` per live function object (sql.expression parses SQL to find them)."""

    def __init__(self, db: Any) -> None:
        self._db = db
        self._names: "weakref.WeakKeyDictionary[Any, list[str]]" = weakref.WeakKeyDictionary()

    def __call__(self, function: Any) -> list[str]:
        names = self._names.get(function)
        if names is None:
            names = list(function.input_names())
            self._names[function] = names
        return names


def _meta_router() -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["server"], dependencies=[Depends(require_read)])

    @router.get("/types", summary="Registered entity types per kind")
    def types() -> Response:
        return respond({"datasets": DATASET_TYPES.names(), "functions": FUNCTION_TYPES.names(),
                        "procedures": PROCEDURE_TYPES.names()})

    @router.get("/batching", summary="Micro-batching counters per function (requests, SQL statements)")
    def batching(request: Request) -> Response:
        return respond(request.app.state.batchers.stats())

    @router.get("/ping", summary="Liveness check")
    def ping() -> Response:
        return respond({"ok": True, "version": __version__})

    return router


def warm_functions(app: FastAPI, function_ids: Any) -> list[dict]:
    """Load each function's model and push one tiny generated image through the batched path."""
    problems = []
    db = app.state.db
    for fid in function_ids:
        try:
            db.functions.instance(fid)
            uri = db.media.put_transient(_tiny_jpeg())
            app.state.batchers.submit(fid, uri).result(timeout=app.state.settings.apply_timeout_s)
        except Exception as exc:  # noqa: BLE001 - a failed warm-up is reported, the server still starts
            message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            log.warning("warm-up of function %r failed: %s", fid, message)
            problems.append({"function": fid, "error": message})
    return problems


def _tiny_jpeg() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (128, 96, 64)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()
