"""ASGI middleware capping request bodies (413 JSON error) before any route buffers them."""
from __future__ import annotations

from typing import Any

from .errors import PayloadTooLargeError, error_response

DRAIN_FACTOR = 4  # read (and drop) up to this many times the limit so the client sees the 413, not a reset


class BodyLimitMiddleware:
    """Refuse bodies over `max_bytes`: at once from Content-Length, or while streaming for chunked bodies."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _content_length(scope)
        if length is not None and length > self.max_bytes:
            await _drain(receive, self.max_bytes * DRAIN_FACTOR)
            response = error_response(
                f"request body of {length} bytes is over the limit of {self.max_bytes} bytes", 413,
                {"limit": self.max_bytes, "path": scope.get("path")},
            )
            await response(scope, receive, send)
            return
        await self._stream_limited(scope, receive, send)

    async def _stream_limited(self, scope: dict, receive: Any, send: Any) -> None:
        """Count streamed (chunked) body bytes; once over the limit, answer 413 whatever the route made of the
        failed read (FastAPI turns a failed body read into a 400 'error parsing the body')."""
        received, over, replaced = 0, False, False

        async def limited() -> dict:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    over = True
                    raise PayloadTooLargeError(
                        f"request body is over the limit of {self.max_bytes} bytes", limit=self.max_bytes
                    )
            return message

        async def guarded_send(message: dict) -> None:
            nonlocal replaced
            if message["type"] == "http.response.start":
                replaced = over and message.get("status") != 413
                if replaced:  # the route's own answer to the failed read (a 400) is dropped for the 413
                    response = error_response(
                        f"request body is over the limit of {self.max_bytes} bytes", 413,
                        {"limit": self.max_bytes, "path": scope.get("path")},
                    )
                    await response(scope, receive, send)
                    return
            if not replaced:
                await send(message)

        await self.app(scope, limited, guarded_send)


def _content_length(scope: dict) -> int | None:
    for key, value in scope.get("headers", ()):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _drain(receive: Any, cap: int) -> None:
    seen = 0
    while seen <= cap:
        message = await receive()
        if message["type"] != "http.request":
            return
        seen += len(message.get("body", b""))
        if not message.get("more_body"):
            return
