"""Function application: `GET ?input=<JSON>` and `POST {"input": ...}` or a multipart image upload.

Single-input applications on a URI/uploaded image go through the per-function micro-batcher; anything
else calls `db.functions.apply` directly. Uploads stay in memory (`mem:<sha>`), never in the media store.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import time
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from ..errors import ConfigError, ImageDecodeError
from ..ingest.formats import looks_like_image
from ..core.config import load_json
from ..sql.udf import input_value
from .batching import shape_output
from .encode import respond
from .errors import ApplyTimeoutError, PayloadTooLargeError
from .models import ERROR_RESPONSES, ApplicationRequest, ApplicationResponse, parse_body
from .security import require_token

router = APIRouter(prefix="/v1", tags=["functions"], responses=ERROR_RESPONSES)

APPLICATION_BODY = {
    "requestBody": {
        "required": False,
        "content": {
            "application/json": {"schema": ApplicationRequest.model_json_schema()},
            "multipart/form-data": {"schema": {
                "type": "object",
                "properties": {"file": {"type": "string", "format": "binary"}},
                "additionalProperties": {"type": "string"},
            }},
        },
    }
}


def _check_read(request: Request) -> None:
    settings = request.app.state.settings
    if settings.protect_reads:
        require_token(request, settings, f"{request.method} {request.url.path}")


@router.get("/functions/{id}/application", response_model=ApplicationResponse,
            summary="Apply a function to the JSON-encoded input in the query string")
async def apply_get(request: Request, id: str, input: str | None = Query(None)) -> Response:
    _check_read(request)
    started = time.perf_counter()
    parsed: Any = load_json(input, "query parameter 'input'", "input") if input else {}
    if not isinstance(parsed, dict):
        raise ConfigError("query parameter 'input' must be a JSON object of named inputs", field="input")
    return await _apply(request, id, _decode_inline_images(request, parsed), started)


@router.post("/functions/{id}/application", response_model=ApplicationResponse, openapi_extra=APPLICATION_BODY,
             summary="Apply a function to {\"input\": {...}} or to an uploaded image (multipart field 'file')")
async def apply_post(request: Request, id: str) -> Response:
    _check_read(request)
    started = time.perf_counter()
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        inputs = await _form_inputs(request)
    else:
        inputs = _decode_inline_images(request, await _json_input(request))
    return await _apply(request, id, inputs, started)


async def _json_input(request: Request) -> dict:
    body = parse_body(await request.body(), ApplicationRequest, "application request", '{"input": {...}}')
    return body.input  # type: ignore[attr-defined]


async def _form_inputs(request: Request) -> dict:
    settings = request.app.state.settings
    form = await request.form(max_files=8, max_fields=64)
    inputs: dict[str, Any] = {}
    try:
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                data = await value.read(settings.max_upload_bytes + 1)
                inputs[name] = _transient_image(request, data, f"upload field {name!r} ({value.filename})")
            else:
                inputs[name] = value
    finally:
        await form.close()
    return inputs


def _decode_inline_images(request: Request, inputs: dict) -> dict:
    out = dict(inputs)
    for name, value in inputs.items():
        if isinstance(value, dict) and "base64" in value:
            try:
                data = base64.b64decode(value["base64"], validate=True)
            except (binascii.Error, TypeError, ValueError) as exc:
                raise ConfigError(f"input.{name}.base64 is not valid base64: {exc}", field=f"input.{name}.base64")
            out[name] = _transient_image(request, data, f"input.{name}.base64")
    return out


def _transient_image(request: Request, data: bytes, what: str) -> str:
    settings = request.app.state.settings
    if len(data) > settings.max_upload_bytes:
        raise PayloadTooLargeError(f"{what} is over the upload limit of {settings.max_upload_bytes} bytes",
                                   field=what, limit=settings.max_upload_bytes)
    if not data:
        raise ImageDecodeError(f"{what} is empty", field=what)
    if looks_like_image(data) is None:
        raise ImageDecodeError(f"{what} is not an image (content starts with {bytes(data[:12])!r})", field=what)
    return request.app.state.db.media.put_transient(data)


def _single_value(function: Any, names: list[str], inputs: dict) -> Any:
    """The one URI string a single-input function is applied to, or None when it cannot be batched."""
    if len(names) != 1 or not inputs:
        return None
    value = input_value(function.id, inputs, names[0], 0, 1)
    return value if isinstance(value, str) else None


async def _apply(request: Request, id: str, inputs: dict, started: float) -> Response:
    db = request.app.state.db
    function = db.functions.loaded(id) or await run_in_threadpool(db.functions.instance, id)
    names = request.app.state.input_names(function)
    if "file" in inputs and "file" not in names:
        missing = [n for n in names if n not in inputs]
        if missing:
            inputs[missing[0]] = inputs.pop("file")
    value = _single_value(function, names, inputs)
    if value is not None:
        output = shape_output(await _batched(request, id, value), function.output_name())
    else:
        output = await run_in_threadpool(db.functions.apply, id, inputs)
    body: dict[str, Any] = {"output": output}
    if isinstance(output, dict) and "label" in output and "scores" in output:
        body["label"] = output["label"]
        body["scores"] = _scores(output["scores"])
    body["timing_ms"] = round((time.perf_counter() - started) * 1000.0, 3)
    return respond(body)


async def _batched(request: Request, id: str, value: str) -> Any:
    """Run `value` through the function's micro-batcher, waiting at most `apply_timeout_s`."""
    timeout = request.app.state.settings.apply_timeout_s
    future = request.app.state.batchers.submit(id, value)
    try:
        return await asyncio.wait_for(asyncio.wrap_future(future), timeout)
    except asyncio.TimeoutError:
        future.cancel()  # still queued: no worker will run it
        raise ApplyTimeoutError(f"function {id!r} did not answer within {timeout:g} s", function=id,
                                timeout_s=timeout) from None


def _scores(scores: Any) -> Any:
    """MAP values arrive as [(key, value), ...]; answer them as an object."""
    if isinstance(scores, list) and scores and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in scores):
        return {str(k): v for k, v in scores}
    return scores
