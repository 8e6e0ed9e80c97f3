"""REST serving for visiondb: an MLDB-compatible FastAPI app, micro-batched inference and a Python client."""
from __future__ import annotations

from typing import Any

__all__ = ["create_app", "ServerSettings", "serve", "Client"]


def __getattr__(name: str) -> Any:  # keep `import visiondb.serve` light: FastAPI/uvicorn load on first use
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "ServerSettings":
        from .settings import ServerSettings

        return ServerSettings
    if name == "serve":
        from .server import serve

        return serve
    if name == "Client":
        from .client import Client

        return Client
    raise AttributeError(name)
