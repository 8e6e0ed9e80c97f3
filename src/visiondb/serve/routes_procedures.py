"""Procedure runs: start (sync like MLDB, or `async=true` in a background thread), list, and poll."""
from __future__ import annotations

import logging
import threading

from fastapi import APIRouter, Depends, Query, Request, Response

from .encode import respond_record
from .models import ERROR_RESPONSES, RunRecord, RunRequest, parse_body
from .security import require_read, require_write

log = logging.getLogger("visiondb.serve")
router = APIRouter(prefix="/v1", tags=["procedures"], responses=ERROR_RESPONSES)


async def _run_request(request: Request) -> RunRequest:
    return parse_body(await request.body(), RunRequest, "run request", '{"params": {...}}')  # type: ignore[return-value]


@router.post(
    "/procedures/{id}/runs", response_model=RunRecord, status_code=201, dependencies=[Depends(require_write)],
    summary="Run a procedure (synchronously, or in the background with async=true)",
    openapi_extra={"requestBody": {"required": False, "content": {"application/json": {
        "schema": RunRequest.model_json_schema(by_alias=True)}}}},
)
async def start_run(request: Request, id: str, run_async: bool | None = Query(None, alias="async")) -> Response:
    body = await _run_request(request)
    db = request.app.state.db
    background = body.run_async if run_async is None else run_async
    from starlette.concurrency import run_in_threadpool

    if not background:
        record = await run_in_threadpool(db.procedures.run, id, body.params or None)
        return respond_record(record, 201)
    record, ctx = await run_in_threadpool(db.procedures.start, id, body.params or None)
    snapshot = dict(record)
    thread = threading.Thread(target=_execute, args=(db, ctx), name=f"visiondb-run-{id}", daemon=True)
    thread.start()
    return respond_record(snapshot, 201)


def _execute(db, ctx) -> None:  # noqa: ANN001 - background thread body
    try:
        db.procedures.execute(ctx, raise_errors=False)
    except Exception:  # noqa: BLE001 - the run record already says what happened
        log.exception("background run %s of %s failed", ctx.run_id, ctx.procedure_id)


@router.get("/procedures/{id}/runs", response_model=list[RunRecord], dependencies=[Depends(require_read)],
            summary="List a procedure's runs")
def list_runs(request: Request, id: str) -> Response:
    return respond_record(request.app.state.db.procedures.runs(id))


@router.get("/procedures/{id}/runs/{run_id}", response_model=RunRecord, dependencies=[Depends(require_read)],
            summary="State, progress, timings, errors and results of one run")
def get_run(request: Request, id: str, run_id: str) -> Response:
    return respond_record(request.app.state.db.procedures.get_run(id, run_id))
