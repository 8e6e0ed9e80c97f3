"""visiondb: a machine-learning database for images (import, featurize, train, serve) on DuckDB."""
from __future__ import annotations

import warnings

from .engine import VisionDB, connect
from .errors import ConfigError, NotFoundError, QueryError, VisionDBError

__all__ = ["VisionDB", "connect", "VisionDBError", "ConfigError", "NotFoundError", "QueryError", "Client"]
__version__ = "0.1.0"

# DuckDB 2 warns that Arrow output from an executed statement copies rows; results here are small or chunked.
warnings.filterwarnings("ignore", message="Arrow output on a DB-API result")


def __getattr__(name: str):  # the REST client pulls in httpx only when asked for
    if name == "Client":
        from .serve.client import Client

        return Client
    raise AttributeError(name)
