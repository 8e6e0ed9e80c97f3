"""Default weights opener: local paths, file://, http(s):// and archive+<source>#<member> (zip/tar members).

The ingest layer passes its own policy-checked opener; this one lets the models package work standalone.
"""
from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import httpx

from visiondb.errors import FetchError
from visiondb.ingest.archives import ZIP_SIGNATURES
from visiondb.ingest.fetch import parse_uri

HTTP_TIMEOUT_S = 30.0
ARCHIVE_PREFIX = "archive+"


def is_weights_source(model: str) -> bool:
    """True when `model` names where to read weights from (path, URL, archive member) rather than a registry name."""
    return (
        model.startswith((ARCHIVE_PREFIX, "file://", "http://", "https://"))
        or model.endswith((".pth", ".pt", ".bin"))
        or "/" in model
        or "\\" in model
    )


def _read_local(path: Path, uri: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise FetchError(f"weights file not found: {path}", uri=uri, status=404) from exc
    except OSError as exc:
        raise FetchError(f"cannot read weights file {path}: {exc.strerror or exc}", uri=uri) from exc


def _read_http(uri: str) -> bytes:
    try:
        response = httpx.get(uri, timeout=HTTP_TIMEOUT_S, follow_redirects=True)
    except httpx.TimeoutException as exc:
        raise FetchError(f"timed out after {HTTP_TIMEOUT_S:.0f} s fetching {uri}", uri=uri) from exc
    except httpx.HTTPError as exc:
        raise FetchError(f"cannot fetch {uri}: {exc}", uri=uri) from exc
    if response.status_code != 200:
        raise FetchError(f"HTTP {response.status_code} fetching {uri}", uri=uri, status=response.status_code)
    return response.content


def _archive_member(archive: bytes, member: str, uri: str) -> bytes:
    """Extract one member from zip or tar (any compression) bytes; a zip is known by its leading signature."""
    buffer = io.BytesIO(archive)
    if archive.startswith(ZIP_SIGNATURES):
        try:
            with zipfile.ZipFile(buffer) as zf:
                return zf.read(member)
        except KeyError as exc:
            raise FetchError(f"archive member not found: {member!r} in {uri}", uri=uri, status=404) from exc
        except zipfile.BadZipFile as exc:
            raise FetchError(f"corrupt zip archive {uri}: {exc}", uri=uri) from exc
    try:
        with tarfile.open(fileobj=buffer, mode="r:*") as tf:
            try:
                handle = tf.extractfile(member)
            except KeyError as exc:
                raise FetchError(f"archive member not found: {member!r} in {uri}", uri=uri, status=404) from exc
            if handle is None:
                raise FetchError(f"archive member is not a regular file: {member!r} in {uri}", uri=uri)
            return handle.read()
    except tarfile.TarError as exc:
        raise FetchError(f"not a zip or tar archive: {uri}", uri=uri) from exc


def default_opener(uri: str) -> bytes:
    """Read the bytes named by `uri`: a path, file://, http(s):// or archive+<uri>#<member>, split as the ingest
    layer does (`ingest.fetch.parse_uri`: at the first `#` after an archive suffix)."""
    parsed = parse_uri(uri)
    if parsed.kind == "archive":
        assert parsed.inner is not None and parsed.member is not None
        return _archive_member(default_opener(parsed.inner), parsed.member, uri)
    if parsed.kind == "http":
        return _read_http(uri)
    assert parsed.path is not None
    return _read_local(parsed.path, uri)
