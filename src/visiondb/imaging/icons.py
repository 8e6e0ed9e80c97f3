"""Sizes of the frames embedded in icon files (ICO/CUR, ICNS), read from their headers before Pillow decodes them.

Pillow decodes an ICO's largest frame while opening it, and an ICNS frame when loading it, at whatever size the
embedded PNG, BMP or JPEG 2000 declares rather than the size in the icon's directory (which tops out at 256 for ICO);
only frames over twice its own pixel limit are refused. The icon's directory or records are read here with Pillow's
own parsers, the way its plugins walk the file, and each distinct frame's header after them (a PNG's chunk headers
up to its pixel data, no text chunk inflated), so no pixel is decoded and the work stays bounded.
"""
from __future__ import annotations

import io
import struct
from typing import Callable, TypeVar

from PIL import BmpImagePlugin, IcnsImagePlugin, IcoImagePlugin, Jpeg2KImagePlugin

from visiondb.errors import ImageDecodeError

T = TypeVar("T")

_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG2000 = (b"\xff\x4f\xff\x51", b"\x0d\x0a\x87\x0a", b"\x00\x00\x00\x0cjP  \x0d\x0a\x87\x0a")  # as IcnsImagePlugin
_ICO_KINDS = (b"\x00\x00\x01\x00", b"\x00\x00\x02\x00")  # icon, cursor
MAX_FRAMES = 64  # distinct frames an icon may hold (real ones have a handful); more are refused unread
MAX_PNG_CHUNKS = 4096  # chunks a PNG frame may have before its pixel data


def embedded_frame_sizes(data: bytes) -> list[tuple[int, int]]:
    """(width, height) of every frame an ICO/CUR or ICNS file embeds whose header parses; [] for other files."""
    if bytes(data[:4]) in _ICO_KINDS:
        return _ico_frames(data)
    if bytes(data[:4]) == b"icns":
        return _icns_frames(data)
    return []


def _ico_frames(data: bytes) -> list[tuple[int, int]]:
    """Frames of an ICO/CUR, found through Pillow's directory reader: PNG or BMP (its height counts the AND mask)."""
    directory = _parsed(lambda: IcoImagePlugin.IcoFile(io.BytesIO(data)))
    if directory is None:
        return []
    sizes = []
    for offset in _distinct({entry.offset for entry in directory.entry}):
        if bytes(data[offset:offset + 8]) == _PNG:
            size = _png_size(data, offset)
        else:
            stream = io.BytesIO(data)
            stream.seek(offset)
            frame = _parsed(lambda: BmpImagePlugin.DibImageFile(stream))
            size = frame.size if frame is not None else None
        if size is not None:
            sizes.append(size)
    return sizes


def _icns_frames(data: bytes) -> list[tuple[int, int]]:
    """The PNG and JPEG 2000 records of an ICNS, found through Pillow's record walk and opened as it opens them."""
    records = _parsed(lambda: IcnsImagePlugin.IcnsFile(io.BytesIO(data)))
    if records is None:
        return []
    sizes = []
    images = {(start, length) for start, length in records.dct.values()
              if bytes(data[start:start + 8]) == _PNG or bytes(data[start:start + 12]).startswith(_JPEG2000[:2])
              or bytes(data[start:start + 12]) == _JPEG2000[2]}
    for start, length in _distinct(images):
        if bytes(data[start:start + 8]) == _PNG:
            size = _png_size(data, start)
        else:
            frame = _parsed(lambda: Jpeg2KImagePlugin.Jpeg2KImageFile(io.BytesIO(data[start:start + length])))
            size = frame.size if frame is not None else None
        if size is not None:
            sizes.append(size)
    return sizes


def _distinct(frames: set[T]) -> list[T]:
    """The distinct frames in file order; ImageDecodeError when there are more than MAX_FRAMES."""
    if len(frames) > MAX_FRAMES:
        raise ImageDecodeError(f"unsupported image: an icon with {len(frames)} frames (at most {MAX_FRAMES})")
    return sorted(frames)  # type: ignore[type-var]


def _png_size(data: bytes, at: int) -> tuple[int, int] | None:
    """The largest size an IHDR chunk declares before the PNG's pixel data (Pillow reads the chunks in order up to
    there, ancillary ones before IHDR included), from chunk headers alone; None when it has none."""
    largest, pos = None, at + 8
    for _ in range(MAX_PNG_CHUNKS):
        if pos + 8 > len(data):
            return largest
        length, kind = struct.unpack_from(">I4s", data, pos)
        if kind in (b"IDAT", b"IEND"):
            return largest
        if kind == b"IHDR" and pos + 16 <= len(data):
            width, height = struct.unpack_from(">II", data, pos + 8)
            if largest is None or width * height > largest[0] * largest[1]:
                largest = (width, height)
        pos += 12 + length
    raise ImageDecodeError(f"unsupported image: a PNG icon frame with more than {MAX_PNG_CHUNKS} chunks before its "
                           "pixel data")


def _parsed(open_header: Callable[[], T]) -> T | None:
    """A header Pillow parsed, or None when it cannot: the file's real open then reports what is wrong with it."""
    try:
        return open_header()
    except Exception:  # noqa: BLE001 - Pillow's parsers raise many kinds; none of them is this check's to report
        return None
