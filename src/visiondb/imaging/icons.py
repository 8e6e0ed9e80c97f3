"""Sizes of the frames embedded in icon files (ICO/CUR, ICNS), read from their headers before Pillow decodes them.

Pillow decodes an ICO's largest frame while opening it, and an ICNS frame when loading it, at whatever size the
embedded PNG, BMP or JPEG 2000 declares rather than the size in the icon's directory (which tops out at 256 for ICO);
only frames over twice its own pixel limit are refused. The headers are read here with Pillow's own parsers, the
way its icon plugins walk the file, so the sizes are the ones it would decode, and no pixel is decoded.
"""
from __future__ import annotations

import io
from typing import Callable, TypeVar

from PIL import BmpImagePlugin, IcnsImagePlugin, IcoImagePlugin, Jpeg2KImagePlugin, PngImagePlugin

T = TypeVar("T")

_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG2000 = (b"\xff\x4f\xff\x51", b"\x0d\x0a\x87\x0a", b"\x00\x00\x00\x0cjP  \x0d\x0a\x87\x0a")  # as IcnsImagePlugin
_ICO_KINDS = (b"\x00\x00\x01\x00", b"\x00\x00\x02\x00")  # icon, cursor


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
    for entry in directory.entry:
        stream = io.BytesIO(data)
        stream.seek(entry.offset)
        reader = PngImagePlugin.PngImageFile if bytes(data[entry.offset:entry.offset + 8]) == _PNG \
            else BmpImagePlugin.DibImageFile
        frame = _parsed(lambda: reader(stream))
        if frame is not None:
            sizes.append(frame.size)
    return sizes


def _icns_frames(data: bytes) -> list[tuple[int, int]]:
    """The PNG and JPEG 2000 records of an ICNS, found through Pillow's record walk and opened as it opens them."""
    records = _parsed(lambda: IcnsImagePlugin.IcnsFile(io.BytesIO(data)))
    if records is None:
        return []
    sizes = []
    for start, length in records.dct.values():
        head = bytes(data[start:start + 12])
        if head.startswith(_PNG):
            stream = io.BytesIO(data)
            stream.seek(start)
            frame = _parsed(lambda: PngImagePlugin.PngImageFile(stream))
        elif head.startswith(_JPEG2000[:2]) or head == _JPEG2000[2]:
            frame = _parsed(lambda: Jpeg2KImagePlugin.Jpeg2KImageFile(io.BytesIO(data[start:start + length])))
        else:
            continue
        if frame is not None:
            sizes.append(frame.size)
    return sizes


def _parsed(open_header: Callable[[], T]) -> T | None:
    """A header Pillow parsed, or None when it cannot: the file's real open then reports what is wrong with it."""
    try:
        return open_header()
    except Exception:  # noqa: BLE001 - Pillow's parsers raise many kinds; none of them is this check's to report
        return None
