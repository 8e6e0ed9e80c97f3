"""Icon files whose embedded frame is a decompression bomb are refused from their headers, before Pillow decodes the
frame (it would while opening an ICO and while loading an ICNS); ordinary icons still decode."""
from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from tests.support.images import gradient
from visiondb.errors import ImageDecodeError
from visiondb.imaging.decode import MAX_PIXELS, decode_rgb, probe_image
from visiondb.imaging.icons import embedded_frame_sizes

BIG = 12_000  # 144 M pixels: over visiondb's limit, under twice Pillow's (which alone would decode it)


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_header(width: int, height: int, before: bytes = b"") -> bytes:
    """A PNG (8-bit RGBA) declaring `width` x `height` with no pixel data: all a header reader needs. `before`:
    chunks ahead of IHDR, which Pillow reads past."""
    ihdr = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + before + ihdr + chunk(b"IDAT", b"") + chunk(b"IEND", b"")


def ico(*frames: bytes) -> bytes:
    """An ICO whose directory lists `frames` as 256x256 32-bit icons."""
    offset, entries = 6 + 16 * len(frames), b""
    for frame in frames:
        entries += struct.pack("<BBBBHHII", 0, 0, 0, 0, 1, 32, len(frame), offset)
        offset += len(frame)
    return struct.pack("<HHH", 0, 1, len(frames)) + entries + b"".join(frames)


def icns(kind: bytes, frame: bytes, before: bytes = b"") -> bytes:
    """An ICNS of one `kind` record holding `frame`; `before`: raw bytes ahead of that record."""
    body = before + kind + struct.pack(">I", 8 + len(frame)) + frame
    return b"icns" + struct.pack(">I", 8 + len(body)) + body


def dib_header(width: int, height: int) -> bytes:
    return struct.pack("<IiiHHIIiiII", 40, width, height, 1, 32, 0, 0, 0, 0, 0, 0)


def j2k_header(width: int, height: int) -> bytes:
    """A JPEG 2000 codestream's SOC and SIZ markers (one 8-bit component)."""
    siz = struct.pack(">HIIIIIIIIH", 0, width, height, 0, 0, width, height, 0, 0, 1) + bytes([7, 1, 1])
    return b"\xff\x4f\xff\x51" + struct.pack(">H", 2 + len(siz)) + siz


def jp2_header(width: int, height: int) -> bytes:
    """A JP2 file's signature, ftyp, a decoy `ihdr` inside an xml box, then the real one in jp2h."""
    def box(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", 8 + len(body)) + kind + body

    ihdr = box(b"ihdr", struct.pack(">IIHBBBB", height, width, 1, 7, 7, 0, 0))
    return (b"\x00\x00\x00\x0cjP  \r\n\x87\n" + box(b"ftyp", b"jp2 \x00\x00\x00\x00jp2 ")
            + box(b"xml ", b"ihdr" + struct.pack(">II", 16, 16))
            + box(b"jp2h", ihdr + box(b"colr", b"\x01\x00\x00\x00\x00\x00\x11")))


DECOY = chunk(b"teXt", struct.pack(">II", 1, 1))  # ahead of IHDR, its first bytes read as 1 x 1

BOMBS = {
    "ico png frame": ico(png_header(32, 32), png_header(BIG, BIG)),
    "ico bmp frame": ico(dib_header(BIG, 2 * BIG)),
    "icns png frame": icns(b"ic10", png_header(BIG, BIG)),
    "icns jpeg 2000 frame": icns(b"ic09", j2k_header(BIG, BIG)),
    # found in review: each passed a hand-written header reader
    "ico png frame, chunk before IHDR": ico(png_header(BIG, BIG, before=DECOY)),
    "icns png frame, chunk before IHDR": icns(b"ic10", png_header(BIG, BIG, before=DECOY)),
    # a record 4 bytes long: Pillow steps back 4 bytes and reads on
    "icns short record before the frame": icns(b"ic10", png_header(BIG, BIG),
                                               before=b"junk" + struct.pack(">II", 4, 8)),
    "icns jp2 frame with a decoy ihdr": icns(b"ic09", jp2_header(BIG, BIG)),
}


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_icon_bombs_are_refused_before_pillow_opens_them(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*args, **kwargs):
        raise AssertionError("Pillow was asked to open the icon")

    monkeypatch.setattr(Image, "open", never)
    for read in (probe_image, decode_rgb):
        with pytest.raises(ImageDecodeError, match=rf"image too large: embedded frame \d is {BIG}x"):
            read(BOMBS[name])


def test_header_sizes_of_icon_frames() -> None:
    assert embedded_frame_sizes(BOMBS["ico png frame"]) == [(32, 32), (BIG, BIG)]
    assert embedded_frame_sizes(BOMBS["ico bmp frame"]) == [(BIG, 2 * BIG)]
    assert embedded_frame_sizes(BOMBS["icns jpeg 2000 frame"]) == [(BIG, BIG)]
    assert embedded_frame_sizes(b"\x00\x00\x01\x00") == [] and embedded_frame_sizes(b"\xff\xd8\xff") == []
    assert BIG * BIG > MAX_PIXELS


@pytest.mark.parametrize("fmt", ["ICO", "ICNS"])
def test_ordinary_icons_still_decode(fmt: str) -> None:
    out = io.BytesIO()
    if fmt == "ICO":
        gradient(64, 64).save(out, fmt, sizes=[(16, 16), (32, 32), (64, 64)])
    else:
        gradient(512, 512).save(out, fmt)
    data = out.getvalue()
    largest = max(embedded_frame_sizes(data), key=lambda size: size[0] * size[1])
    img = decode_rgb(data)  # the largest frame (ICNS: 512 px at 2x)
    assert img.mode == "RGB" and img.size == largest == ((64, 64) if fmt == "ICO" else (1024, 1024))


def test_icon_headers_are_read_once_per_frame_and_bounded() -> None:
    """Review found a 71 KB ICO listing one PNG frame (with 64 MB of compressed text) 200 times: the check parsed
    it 200 times (32 s). Each distinct frame is read once, from chunk headers, and frame and chunk counts are capped."""
    from visiondb.imaging import icons

    out = io.BytesIO()
    gradient(16, 16).save(out, "PNG")
    frame = out.getvalue()
    one_frame_many_entries = struct.pack("<HHH", 0, 1, 300) + b"".join(
        struct.pack("<BBBBHHII", 16, 16, 0, 0, 1, 32, len(frame), 6 + 16 * 300) for _ in range(300)) + frame
    assert embedded_frame_sizes(one_frame_many_entries) == [(16, 16)]
    assert decode_rgb(one_frame_many_entries).size == (16, 16)
    with pytest.raises(ImageDecodeError, match="unsupported image: an icon with 65 frames"):
        probe_image(ico(*[png_header(16 + i, 16) for i in range(icons.MAX_FRAMES + 1)]))
    chatty = png_header(16, 16, before=chunk(b"tEXt", b"k\0v") * (icons.MAX_PNG_CHUNKS + 1))
    with pytest.raises(ImageDecodeError, match="more than 4096 chunks"):
        probe_image(ico(chatty))
