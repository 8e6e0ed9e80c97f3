"""Sizes of the frames embedded in icon files (ICO/CUR, ICNS), read from their own headers before Pillow opens them.

Pillow decodes an ICO's largest frame while opening it, and an ICNS frame when loading it, at whatever size the
embedded PNG, BMP or JPEG 2000 declares rather than the size in the icon's directory (which tops out at 256 for ICO);
only frames over twice its own pixel limit are refused. Reading those headers first keeps such decompression bombs
from ever being decoded.
"""
from __future__ import annotations

import struct

_PNG = b"\x89PNG\r\n\x1a\n"
_J2K_CODESTREAM = b"\xff\x4f\xff\x51"
_JP2_BOX = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
_ICO_KINDS = (b"\x00\x00\x01\x00", b"\x00\x00\x02\x00")  # icon, cursor
JP2_HEADER_SCAN = 4096  # bytes of a JPEG 2000 file searched for its `ihdr` box


def embedded_frame_sizes(data: bytes) -> list[tuple[int, int]]:
    """(width, height) of every frame an ICO/CUR or ICNS file embeds whose header is readable; [] for other files."""
    if bytes(data[:4]) in _ICO_KINDS:
        return _ico_frames(data)
    if bytes(data[:4]) == b"icns":
        return _icns_frames(data)
    return []


def _ico_frames(data: bytes) -> list[tuple[int, int]]:
    """Frames of an ICO/CUR: a 6-byte header with the count, 16-byte directory entries ending in the data offset."""
    if len(data) < 6:
        return []
    (count,) = struct.unpack_from("<H", data, 4)
    sizes = []
    for entry in range(6, min(6 + 16 * count, len(data) - 15), 16):
        (offset,) = struct.unpack_from("<I", data, entry + 12)
        size = _png_size(data, offset) or _dib_size(data, offset)
        if size:
            sizes.append(size)
    return sizes


def _icns_frames(data: bytes) -> list[tuple[int, int]]:
    """Frames of an ICNS: 8-byte header, then (4-byte type, 4-byte big-endian length including those 8) records."""
    sizes, pos = [], 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack_from(">I", data, pos + 4)
        size = _png_size(data, pos + 8) or _jpeg2000_size(data, pos + 8)
        if size:
            sizes.append(size)
        if length < 8:
            break  # a malformed record: Pillow reports it
        pos += length
    return sizes


def _png_size(data: bytes, at: int) -> tuple[int, int] | None:
    """A PNG's IHDR width and height (the first chunk, 16 bytes after the signature)."""
    if bytes(data[at:at + 8]) != _PNG or len(data) < at + 24:
        return None
    return struct.unpack_from(">II", data, at + 16)


def _dib_size(data: bytes, at: int) -> tuple[int, int] | None:
    """A BMP info header's width and height (signed; ICO frames count the AND mask's rows in the height)."""
    if len(data) < at + 12:
        return None
    header, width, height = struct.unpack_from("<Iii", data, at)
    if header < 12:
        return None
    if header == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        width, height = struct.unpack_from("<HH", data, at + 4)
    return abs(width), abs(height)


def _jpeg2000_size(data: bytes, at: int) -> tuple[int, int] | None:
    """A JPEG 2000 image's size: the SIZ marker of a bare codestream, or the `ihdr` box of a JP2 file."""
    if bytes(data[at:at + 4]) == _J2K_CODESTREAM and len(data) >= at + 24:
        width, height, x0, y0 = struct.unpack_from(">IIII", data, at + 8)
        return max(0, width - x0), max(0, height - y0)
    if bytes(data[at:at + 12]) == _JP2_BOX:
        box = bytes(data[at:at + JP2_HEADER_SCAN]).find(b"ihdr")
        if box >= 0 and len(data) >= at + box + 12:
            height, width = struct.unpack_from(">II", data, at + box + 4)
            return width, height
    return None
