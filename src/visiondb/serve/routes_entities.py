"""MLDB entity routes: PUT/GET/DELETE /v1/{datasets|functions|procedures}/{id}, POST and GET /v1/{kind}."""
from __future__ import annotations

from typing import Any, Callable

from fastapi import APIRouter, Depends, Request, Response

from .encode import respond, respond_record
from .models import ERROR_RESPONSES, EntityConfigIn, EntityRecord
from .security import require_read, require_write

KINDS = ("datasets", "functions", "procedures")


def collection(request: Request, kind: str) -> Any:
    """`db.datasets`, `db.functions` or `db.procedures` of the app's database."""
    return getattr(request.app.state.db, kind)


def _forget_batcher(request: Request, kind: str, id: str) -> None:
    if kind == "functions":
        request.app.state.batchers.drop(id)


def _add_kind(router: APIRouter, kind: str) -> None:
    singular = kind[:-1]

    def put_entity(request: Request, id: str, body: EntityConfigIn) -> Response:
        config = body.model_dump(exclude_none=True)
        config.pop("id", None)
        _forget_batcher(request, kind, id)
        return respond_record(collection(request, kind).put(id, config), 201)

    def post_entity(request: Request, body: EntityConfigIn) -> Response:
        return respond_record(collection(request, kind).post(body.model_dump(exclude_none=True)), 201)

    def list_entities(request: Request) -> Response:
        return respond(collection(request, kind).list())

    def get_entity(request: Request, id: str) -> Response:
        return respond_record(collection(request, kind).get(id))

    def delete_entity(request: Request, id: str) -> Response:
        collection(request, kind).delete(id)
        _forget_batcher(request, kind, id)
        return Response(status_code=204)

    routes: list[tuple[str, str, Callable, Any, int, str, list]] = [
        ("PUT", f"/{kind}/{{id}}", put_entity, EntityRecord, 201, f"Create or replace a {singular}",
         [Depends(require_write)]),
        ("POST", f"/{kind}", post_entity, EntityRecord, 201, f"Create a {singular} with a server-chosen id",
         [Depends(require_write)]),
        ("GET", f"/{kind}", list_entities, list[str], 200, f"List {singular} ids", [Depends(require_read)]),
        ("GET", f"/{kind}/{{id}}", get_entity, EntityRecord, 200, f"Describe a {singular}",
         [Depends(require_read)]),
        ("DELETE", f"/{kind}/{{id}}", delete_entity, None, 204, f"Delete a {singular}", [Depends(require_write)]),
    ]
    for method, path, endpoint, model, code, summary, deps in routes:
        router.add_api_route(
            path, endpoint, methods=[method], response_model=model, status_code=code, summary=summary,
            dependencies=deps, responses=ERROR_RESPONSES, name=f"{method.lower()}_{singular}_{path.count('{')}",
            tags=[kind],
        )


def build_router() -> APIRouter:
    """The entity routes for all three kinds."""
    router = APIRouter(prefix="/v1")
    for kind in KINDS:
        _add_kind(router, kind)
    return router
