"""Typed request/response bodies of the REST API (they also drive the OpenAPI schema at /openapi.json)."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel


class EntityConfigIn(BaseModel):
    """An MLDB entity config: `{"type": ..., "params": {...}}` (an `id` is allowed on POST)."""

    model_config = ConfigDict(extra="forbid")
    type: str = Field(description="registered type name, e.g. image.embedding, import.text, transform")
    params: dict[str, Any] = Field(default_factory=dict, description="the type's params (camelCase, MLDB names)")
    id: str | None = Field(default=None, description="entity id (POST only; the server picks one if absent)")


class EntityRecord(BaseModel):
    """What PUT/POST/GET answer for a dataset, function or procedure."""

    model_config = ConfigDict(extra="allow")
    id: str
    type: str
    config: dict[str, Any]
    state: str = "ok"
    created: str | None = None
    status: dict[str, Any] | None = None


class RunRecord(BaseModel):
    """A procedure run: state pending/executing/finished/error, progress, timings, errors and results."""

    model_config = ConfigDict(extra="allow")
    procedure: str
    id: str
    state: Literal["pending", "executing", "finished", "error"]
    params: dict[str, Any] = Field(default_factory=dict)
    status: dict[str, Any] | None = None
    errors: list[dict[str, Any]] = Field(default_factory=list)
    progress: dict[str, Any] = Field(default_factory=dict)
    runStarted: str | None = None
    runFinished: str | None = None


class RunRequest(BaseModel):
    """Body of `POST /v1/procedures/{id}/runs`: param overrides and whether to run in the background."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    params: dict[str, Any] = Field(default_factory=dict)
    run_async: bool = Field(default=False, alias="async")


class ApplicationRequest(BaseModel):
    """Body of `POST /v1/functions/{id}/application`; an image may be given as `{"base64": "..."}`."""

    model_config = ConfigDict(extra="forbid")
    input: dict[str, Any] = Field(default_factory=dict)


class ApplicationResponse(BaseModel):
    """The function's output; classifier-like outputs also get the top `label`, `scores` and `timing_ms`."""

    model_config = ConfigDict(extra="allow")
    output: dict[str, Any] | None
    label: Any | None = None
    scores: Any | None = None
    timing_ms: float | None = None


class QueryResponse(RootModel):
    """`table`: rows with the column names first; `json`/`aos`: array of objects; `soa`: object of arrays."""

    root: list[list[Any]] | list[dict[str, Any]] | dict[str, list[Any]]


class ErrorBody(BaseModel):
    """Every error answer: a message naming the field/row/file/URI at fault, the HTTP code and details."""

    error: str
    httpCode: int
    details: dict[str, Any] = Field(default_factory=dict)


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 401, 403, 404, 409, 413)
}


def parse_body(raw: bytes, model: type[BaseModel], what: str, example: str) -> BaseModel:
    """Validate a JSON request body into `model`; an empty body is the model's defaults. Errors name the field."""
    from pydantic import ValidationError

    from ..core.config import json_object, validation_error

    if not raw.strip():
        return model()
    data = json_object(raw, f"{what} body", "body", example)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, what, prefix="body.") from None
