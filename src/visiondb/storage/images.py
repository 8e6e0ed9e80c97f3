"""Image values: a reference (URI) plus content hash, format and size, stored as a DuckDB STRUCT column."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..errors import ImageDecodeError, VisionDBError
from .media import INLINE_MAX_BYTES, check_sha256, is_sha256, sha256_hex

IMAGE_FIELDS = "uri VARCHAR, sha256 VARCHAR, format VARCHAR, width INTEGER, height INTEGER, bytes BIGINT"
IMAGE_SQL_TYPE = f"STRUCT({IMAGE_FIELDS})"
URI_KEYS = ("uri", "url", "path", "image", "file")
CONTENT_SCHEMES = ("mem:", "media:")
"""URI schemes that name bytes by their sha256 (uploads held in memory, the media store)."""


def uri_sha256(uri: str) -> str | None:
    """The content hash a `mem:`/`media:` URI names (so its bytes need not be read and hashed again), else None."""
    if uri.startswith(CONTENT_SCHEMES):
        sha = uri.partition(":")[2]
        if is_sha256(sha):
            return sha
    return None


@dataclass(frozen=True)
class ImageRef:
    """What an image argument resolves to: a URI and, when known, the content hash of its bytes."""

    uri: str | None
    sha256: str | None = None

    @property
    def label(self) -> str:
        return self.uri or (f"sha256:{self.sha256}" if self.sha256 else "<null>")


def image_value(uri: str, data: bytes, sha: str) -> dict:
    """The STRUCT value for bytes (header probe only; raises ImageDecodeError for non-images). Stores nothing."""
    from ..imaging.decode import probe_image

    fmt, width, height = probe_image(data)
    return {"uri": uri, "sha256": sha, "format": fmt, "width": width, "height": height, "bytes": len(data)}


def store_images(db: Any, items: list[tuple[str, bytes | None]]) -> list[dict | ImageDecodeError | None]:
    """Store many images at once: probe each header, put tiny ones inline in one statement; per-item errors returned.

    `db.store_image` is this for one item; batches make one `vdb.blobs` INSERT instead of one per image.
    """
    out: list[dict | ImageDecodeError | None] = []
    inline: list[tuple[str, bytes]] = []
    for uri, data in items:
        if data is None:
            out.append(None)
            continue
        sha = sha256_hex(data)
        try:
            out.append(image_value(uri, data, sha))
        except ImageDecodeError as exc:
            out.append(exc)
            continue
        if len(data) <= INLINE_MAX_BYTES:
            inline.append((sha, data))
        else:
            db.media.put(data, sha)
    db.media.put_inline_many(inline)
    return out


def ref_from_value(value: Any) -> ImageRef | None:
    """Turn a SQL argument (URI string, image STRUCT, or `{url: ...}` struct literal) into an ImageRef."""
    if value is None:
        return None
    if isinstance(value, str):
        return ImageRef(uri=value, sha256=uri_sha256(value))
    if isinstance(value, dict):
        sha = value.get("sha256")
        if sha is not None:
            check_sha256(sha, "image value's sha256")
        for key in URI_KEYS:
            inner = value.get(key)
            if isinstance(inner, dict):
                return ref_from_value(inner)
            if isinstance(inner, str):
                return ImageRef(uri=inner, sha256=sha or uri_sha256(inner))
        if sha:
            return ImageRef(uri=None, sha256=sha)
        if len(value) == 1:
            return ref_from_value(next(iter(value.values())))
    raise VisionDBError(f"cannot use {str(value)[:80]!r} as an image: give a URI string or an image value")


def ref_from_json(text: str | None) -> ImageRef | None:
    """The SQL macros pass arguments through `to_json`, so one UDF accepts strings and structs alike."""
    if text is None:
        return None
    return ref_from_value(json.loads(text))
