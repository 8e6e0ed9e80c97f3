"""Exception hierarchy: every error visiondb raises names the entity, field, row or file at fault."""
from __future__ import annotations

from typing import Any


class VisionDBError(Exception):
    """Base class; `http_code` is what the REST layer answers with, `details` goes into the JSON body."""

    http_code = 400

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = {k: v for k, v in details.items() if v is not None}


class ConfigError(VisionDBError):
    """An entity config is malformed: unknown type, missing or invalid param (named in `field`)."""


class NotFoundError(VisionDBError):
    """A dataset, function, procedure, run or model does not exist."""

    http_code = 404


class ConflictError(VisionDBError):
    """An entity already exists where a new one was asked for."""

    http_code = 409


class QueryError(VisionDBError):
    """A SQL statement failed to parse, bind or run."""


class FetchError(VisionDBError):
    """A URI could not be read: HTTP status, timeout, refused address, size limit, missing archive member."""

    def __init__(self, message: str, *, uri: str | None = None, status: int | None = None, **details: Any) -> None:
        super().__init__(message, uri=uri, status=status, **details)
        self.uri = uri
        self.status = status


class AccessDeniedError(FetchError):
    """A URI or path is outside what this server is allowed to read (private address, path outside roots)."""

    http_code = 403


class ImageDecodeError(VisionDBError):
    """Bytes are not a decodable image (corrupt, truncated, empty, not an image, too many pixels)."""


class TrainingError(VisionDBError):
    """Training data cannot be used: one class, empty input, NaN features, mismatched lengths."""


class AuthError(VisionDBError):
    """A write was attempted without the configured bearer token."""

    http_code = 401
