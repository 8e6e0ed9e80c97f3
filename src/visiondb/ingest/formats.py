"""Content sniffing: image magic bytes and transparent decompression of .gz/.bz2/.xz/.zst data files."""
from __future__ import annotations

import bz2
import gzip
import io
import lzma
from typing import IO, Callable

import zstandard

from visiondb.errors import FetchError

_IMAGE_MAGIC: list[tuple[bytes, str]] = [
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
]


def looks_like_image(data: bytes, content_type: str | None = None) -> str | None:
    """Return the image format ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF") from magic bytes, else None.

    Only the bytes decide: a server's `content_type` claim never makes non-image bytes an image.
    """
    head = bytes(data[:16])
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    for magic, fmt in _IMAGE_MAGIC:
        if head.startswith(magic):
            if fmt == "BMP" and len(head) < 14:
                return None
            return fmt
    return None


_COMPRESSED_SUFFIX = {".gz": "gz", ".tgz": "gz", ".bz2": "bz2", ".xz": "xz", ".zst": "zst", ".zstd": "zst"}


def compression_of(name: str, data: bytes) -> str | None:
    """Detect "gz", "bz2", "xz" or "zst" from the file name suffix or, failing that, the magic bytes."""
    lower = name.lower().split("?", 1)[0]
    for suffix, kind in _COMPRESSED_SUFFIX.items():
        if lower.endswith(suffix):
            return kind
    if data[:2] == b"\x1f\x8b":
        return "gz"
    if data[:3] == b"BZh":
        return "bz2"
    if data[:6] == b"\xfd7zXZ\x00":
        return "xz"
    if data[:4] == b"\x28\xb5\x2f\xfd":
        return "zst"
    return None


def _opener(kind: str) -> Callable[[IO[bytes]], IO[bytes]]:
    if kind == "gz":
        return lambda f: gzip.GzipFile(fileobj=f)
    if kind == "bz2":
        return lambda f: bz2.BZ2File(f)
    if kind == "xz":
        return lambda f: lzma.LZMAFile(f)
    return lambda f: zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True)


def read_capped(stream: IO[bytes], limit: int, chunk: int = 1 << 20) -> bytes:
    """Read from `stream` until EOF or `limit` bytes, whichever comes first."""
    buf = bytearray()
    while len(buf) < limit:
        piece = stream.read(min(chunk, limit - len(buf)))
        if not piece:
            break
        buf += piece
    return bytes(buf)


def maybe_decompress(data: bytes, name: str, *, max_bytes: int, uri: str | None = None) -> bytes:
    """Decompress `data` if its name or magic says gz/bz2/xz/zst; the output is capped at `max_bytes`."""
    kind = compression_of(name, data)
    if kind is None:
        return data
    uri = uri or name
    try:
        with _opener(kind)(io.BytesIO(data)) as stream:
            out = read_capped(stream, max_bytes + 1)
    except (OSError, EOFError, lzma.LZMAError, zstandard.ZstdError) as exc:
        raise FetchError(f"cannot decompress {uri} as {kind}: {exc}", uri=uri) from exc
    if len(out) > max_bytes:
        raise FetchError(f"decompressed {uri} is larger than {max_bytes} bytes", uri=uri)
    return out
