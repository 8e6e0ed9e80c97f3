"""Regressions found by fuzzing the decoders: every input either decodes to upright RGB uint8 pixels that the model
preprocessing accepts, or raises ImageDecodeError naming the cause. Each test builds its malformed bytes itself."""
from __future__ import annotations

import io
import random
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, features

from tests.support.images import encode, gradient
from visiondb.errors import ImageDecodeError
from visiondb.imaging import decode as decode_mod
from visiondb.imaging.decode import decode_array, decode_rgb, probe_image
from visiondb.imaging.preprocess import EFFICIENTNET, IMAGENET_224

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about each corrupt input it reads


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _tiff(tags: dict[int, tuple[int, int, bytes]], pixels: bytes) -> bytes:
    """A little-endian one-page TIFF: `pixels` at offset 8, then the IFD of `tags` ({tag: (type, count, value)}),
    values longer than 4 bytes stored after it."""
    ifd_at = 8 + len(pixels)
    extra_at = ifd_at + 2 + 12 * len(tags) + 4
    entries, extra = b"", b""
    for tag, (kind, count, value) in sorted(tags.items()):
        if len(value) <= 4:
            field = value.ljust(4, b"\0")
        else:
            field = struct.pack("<I", extra_at + len(extra))
            extra += value
        entries += struct.pack("<HHI", tag, kind, count) + field
    ifd = struct.pack("<H", len(tags)) + entries + struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", ifd_at) + pixels + ifd + extra


def _grey_tiff_tags(w: int, h: int) -> dict[int, tuple[int, int, bytes]]:
    """The tags of an uncompressed 8-bit greyscale w x h TIFF whose single strip starts at offset 8."""
    short, long_ = 3, 4
    return {
        256: (long_, 1, struct.pack("<I", w)),
        257: (long_, 1, struct.pack("<I", h)),
        258: (short, 1, struct.pack("<H", 8)),
        259: (short, 1, struct.pack("<H", 1)),
        262: (short, 1, struct.pack("<H", 1)),
        273: (long_, 1, struct.pack("<I", 8)),
        277: (short, 1, struct.pack("<H", 1)),
        278: (long_, 1, struct.pack("<I", h)),
        279: (long_, 1, struct.pack("<I", w * h)),
    }


def _check_pixels(arr: np.ndarray) -> None:
    """What every decode must hand back, and what the model preprocessing must accept."""
    assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3 and min(arr.shape[:2]) >= 1
    assert min(arr.strides) >= 0
    _check_preprocessing(arr)


def _check_preprocessing(arr: np.ndarray) -> None:
    for prep in (EFFICIENTNET(224), IMAGENET_224):
        out = np.full(prep.shape, np.nan, np.float32)
        prep.preprocess_into(arr, out)
        assert np.isfinite(out).all()


def test_grey_tiff_builder_is_valid() -> None:
    pixels = bytes(range(0, 240, 10)) * 2  # 8 x 6
    arr = decode_array(_tiff(_grey_tiff_tags(8, 6), pixels))
    assert arr.shape == (6, 8, 3) and np.array_equal(arr[..., 0].ravel(), np.frombuffer(pixels, np.uint8))


# --- orientation of 1-pixel-wide images: the flipped view kept a negative stride torch.from_numpy rejects ---


@pytest.mark.parametrize("size", [(1, 1), (7, 1), (1, 7)])
def test_exif_flip_of_one_pixel_wide_jpeg_gives_positive_strides(size: tuple[int, int]) -> None:
    """A 1x1 (or 1xN / Nx1) JPEG whose EXIF orientation flips along its length-1 axis: `np.ascontiguousarray`
    returned the flipped view itself (a length-1 axis counts as contiguous) and `preprocess_into` raised ValueError
    ("At least one stride in the given numpy array is negative")."""
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        data = encode(gradient(*size), "JPEG", exif=exif.tobytes())
        for min_side in (None, 256):
            arr = decode_array(data, min_side)
            assert arr.flags.c_contiguous
            _check_pixels(arr)


def test_preprocess_accepts_flipped_views_and_strips() -> None:
    """`preprocess_into` takes any HWC uint8 array: negatively strided views, 1x1, 1xN and Nx1 strips."""
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)
    for arr in (photo[::-1], photo[:, ::-1], np.flipud(np.fliplr(photo)), photo[:1, :1], photo[:1, :1][::-1],
                np.zeros((1, 5000, 3), np.uint8), np.zeros((5000, 1, 3), np.uint8), np.ones((1, 1, 3), np.uint8)):
        _check_preprocessing(arr)
    ref = IMAGENET_224.to_array(np.ascontiguousarray(photo[::-1]))
    assert np.array_equal(IMAGENET_224.to_array(photo[::-1]), ref)


# --- multi-frame files: later frames were parsed (n_frames) just to seek back to the first ---


def _gif_tail_cases() -> dict[str, bytes]:
    """Records appended after a complete first GIF frame, each cut short."""
    return {
        "image descriptor cut inside its 9 bytes (struct.error)": b",\x00\x00\x00\x00",
        "descriptor without the LZW code size byte (IndexError)": b",\x00\x00\x00\x00\x10\x00\x0c\x00\x00",
        "graphic control extension of 1 byte with the transparency flag (IndexError)": b"!\xf9\x01\x01\x00",
    }


@pytest.mark.parametrize("case", list(_gif_tail_cases()))
def test_gif_with_broken_second_frame_decodes_the_first(case: str) -> None:
    single = encode(gradient(16, 12).convert("P"), "GIF")
    assert single.endswith(b"\x00;")  # the first frame's block terminator, then the trailer
    data = single[:-1] + _gif_tail_cases()[case]
    expected = decode_array(single)
    for min_side in (None, 256):
        assert np.array_equal(decode_array(data, min_side), expected)
    assert probe_image(data) == ("GIF", 16, 12)


def test_tiff_with_broken_second_page_decodes_the_first() -> None:
    """Page 2 lacks its ImageWidth tag: Pillow's TypeError("Missing dimensions") came out of the frame count."""
    pages = [gradient(16, 12), gradient(16, 12).rotate(180)]
    data = bytearray(encode(pages[0], "TIFF", save_all=True, append_images=pages[1:]))
    first = struct.unpack_from("<I", data, 4)[0]
    second = struct.unpack_from("<I", data, first + 2 + 12 * struct.unpack_from("<H", data, first)[0])[0]
    for k in range(struct.unpack_from("<H", data, second)[0]):
        at = second + 2 + 12 * k
        if struct.unpack_from("<H", data, at)[0] == 256:
            struct.pack_into("<H", data, at, 0xFFF0)  # an unknown private tag instead of ImageWidth
    assert np.array_equal(decode_array(bytes(data)), np.asarray(pages[0]))


# --- malformed TIFF tags: Pillow's parser raised TypeError / OverflowError out of load ---


def test_tiff_strip_offset_of_rational_type() -> None:
    tags = _grey_tiff_tags(8, 6)
    tags[273] = (5, 1, struct.pack("<II", 17, 2))  # RATIONAL 8.5: Pillow seeks to a float
    with pytest.raises(ImageDecodeError, match=r"^corrupt image: malformed TIFF data \(TypeError: "):
        decode_array(_tiff(tags, bytes(48)))


def test_tiff_strip_offset_beyond_a_c_seek() -> None:
    tags = _grey_tiff_tags(8, 6)
    tags[273] = (16, 1, struct.pack("<Q", 2**64 - 1))  # LONG8 in a classic TIFF
    with pytest.raises(ImageDecodeError, match=r"^corrupt image: malformed TIFF data \(OverflowError: "):
        decode_array(_tiff(tags, bytes(48)))


def test_tiff_xmp_tag_holding_a_number() -> None:
    tags = _grey_tiff_tags(8, 6)
    tags[700] = (4, 1, struct.pack("<I", 5))  # XMP as a LONG: its regex search got an int
    with pytest.raises(ImageDecodeError, match=r"^corrupt image: malformed TIFF data \(TypeError: "):
        decode_array(_tiff(tags, bytes(48)))


# --- PNG ancillary chunks ---


def _png_with(chunk: bytes, before_idat: bool) -> bytes:
    png = encode(gradient(16, 12), "PNG")
    at = png.index(b"IDAT") - 4 if before_idat else png.index(b"IEND") - 4
    return png[:at] + chunk + png[at:]


def test_png_iccp_chunk_without_compression_method() -> None:
    """iCCP with a profile name and nothing after it: IndexError from Pillow's chunk parser."""
    bad = _png_chunk(b"iCCP", b"icc\x00")
    with pytest.raises(ImageDecodeError, match=r"^corrupt image: malformed PNG data \(IndexError: "):
        decode_array(_png_with(bad, before_idat=False))
    # before the pixels, Image.open takes the IndexError for "not a PNG": the message still says what is wrong
    for fn in (probe_image, decode_array):
        with pytest.raises(ImageDecodeError, match="^corrupt image: PNG signature but a header Pillow cannot parse"):
            fn(_png_with(bad, before_idat=True))


def test_png_palette_with_more_than_256_alphas() -> None:
    """A tRNS chunk longer than any palette made Pillow's RGBA conversion raise ValueError("palette index out of
    range"); the alphas past entry 255 belong to no colour and are dropped."""
    img = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8), "P")
    img.putpalette([255, 0, 0, 0, 0, 255])  # 2 colours: red, blue
    png = encode(img, "PNG")
    at = png.index(b"IDAT") - 4
    data = png[:at] + _png_chunk(b"tRNS", bytes([0, 255]) + bytes(range(7, 255)) * 2) + png[at:]  # 498 alphas
    arr = decode_array(data)
    assert arr.tolist() == [[[255, 255, 255], [0, 0, 255]], [[0, 0, 255], [255, 255, 255]]]


def test_opaque_palette_same_pixels_as_compositing() -> None:
    """Opaque palette images skip the RGBA round trip; the pixels are those compositing on white gives."""
    rng = np.random.default_rng(3)
    img = Image.fromarray(rng.integers(0, 256, (30, 40), dtype=np.uint8), "P")
    img.putpalette(rng.integers(0, 256, 600, dtype=np.uint8).tobytes())  # 200 colours: higher indices are black
    for fmt in ("PNG", "GIF", "BMP"):
        data = encode(img, fmt)
        ref = Image.open(io.BytesIO(data)).convert("RGBA")
        ref = Image.alpha_composite(Image.new("RGBA", ref.size, (255, 255, 255, 255)), ref).convert("RGB")
        assert np.array_equal(decode_array(data), np.asarray(ref)), fmt


# --- other Pillow plugins ---


def test_dds_with_unknown_pixel_format() -> None:
    data = bytearray(encode(gradient(8, 8).convert("RGBA"), "DDS"))
    struct.pack_into("<I", data, 80, 0x80)  # DDS_PIXELFORMAT.dwFlags: no known flag
    for fn in (probe_image, decode_array):
        with pytest.raises(ImageDecodeError, match=r"^unsupported image: DDS variant Pillow cannot decode"):
            fn(bytes(data))


@pytest.mark.skipif(not features.check("avif"), reason="Pillow built without AVIF")
def test_avif_with_corrupt_payload() -> None:
    """libavif's failures come out of Pillow as RuntimeError."""
    data = encode(gradient(16, 12), "AVIF")
    at = data.index(b"mdat") + 4
    broken = data[:at] + bytes(len(data) - at)
    with pytest.raises(ImageDecodeError, match=r"^corrupt image: malformed AVIF data \(RuntimeError: "):
        decode_array(broken)


def test_bmp_row_too_wide_for_pillow() -> None:
    """A 58-byte BMP declaring 67108864x1 pixels at 32 bits (under MAX_PIXELS): the row buffer's size overflows an int
    and Pillow raises MemoryError."""
    width = 1 << 26
    info = struct.pack("<IiiHHIIiiII", 40, width, 1, 1, 32, 0, 0, 0, 0, 0, 0)
    data = b"BM" + struct.pack("<IHHI", 58, 0, 0, 54) + info + b"\0" * 4
    assert probe_image(data) == ("BMP", width, 1)
    with pytest.raises(ImageDecodeError, match=r"^image too large: BMP 67108864x1 needs more memory"):
        decode_array(data)


# --- high-bit-depth greys: same pixels as the whole-image float64 formula, without its temporaries ---


def _reference_8bit(arr: np.ndarray, mode: str) -> np.ndarray:
    """The original formula: float64 throughout, on the whole image."""
    arr = np.asarray(arr, np.float64)
    if mode == "F":
        arr = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)
        if arr.size and arr.min() >= 0 and arr.max() <= 1:
            arr = arr * 255.0
    if mode.startswith("I;16") or arr.max(initial=0) > 255:
        arr = arr / 257.0
    return np.clip(np.rint(arr), 0, 255).astype(np.uint8)


def test_high_bit_depth_conversion_matches_the_float64_formula(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decode_mod, "_BLOCK", 1000)  # several blocks, so the range spans them
    rng = np.random.default_rng(7)
    cases = [(np.arange(65536, dtype=np.uint16).reshape(256, 256), "I;16"),
             (np.arange(65536, dtype=np.uint16).reshape(256, 256).astype(">u2"), "I;16B"),
             (np.arange(-70000, 140000, 7, dtype=np.int32).reshape(-1, 100), "I"),
             (rng.integers(-5, 256, (50, 60)).astype(np.int32), "I")]
    for scale in (1.0, 255.0, 300.0, 65535.0, 3e38):
        f = (rng.random((50, 60)) * scale).astype(np.float32)
        cases.append((f, "F"))
        g = f.copy()
        g.ravel()[[5, 1500, 2999]] = [np.nan, np.inf, -np.inf]  # in different blocks
        cases.append((g, "F"))
        cases.append((g - np.float32(scale / 2), "F"))
    cases.append((np.zeros((0, 4), np.float32), "F"))
    for arr, mode in cases:
        got = decode_mod._to_8bit(arr, mode)
        assert got.dtype == np.uint8 and np.array_equal(got, _reference_8bit(arr, mode)), (mode, arr.dtype)


def test_float_tiff_with_signalling_nans() -> None:
    """NaN bit patterns from the file (signalling ones warn when widened) decode to 0, like the quiet ones."""
    pixels = np.full((4, 6), 0.5, np.float32)
    raw = bytearray(pixels.tobytes())
    struct.pack_into("<I", raw, 0, 0x7FA00000)  # a signalling NaN
    struct.pack_into("<I", raw, 4, 0x7FC00000)  # a quiet NaN
    tags = _grey_tiff_tags(6, 4)
    tags[258] = (3, 1, struct.pack("<H", 32))
    tags[279] = (4, 1, struct.pack("<I", len(raw)))
    tags[339] = (3, 1, struct.pack("<H", 3))  # SampleFormat: IEEE float
    arr = decode_array(_tiff(tags, bytes(raw)))
    assert arr[0, 0].tolist() == [0, 0, 0] and arr[0, 1].tolist() == [0, 0, 0] and (arr.reshape(-1, 3)[2:] == 128).all()


# --- a small deterministic fuzz run, as a net for the classes above ---


def _seeds() -> list[bytes]:
    base = gradient(24, 16)
    rgba = base.convert("RGBA")
    exif = Image.Exif()
    exif[0x0112] = 6
    frames = [base, base.rotate(180)]
    return [
        encode(base, "JPEG", exif=exif.tobytes()),
        encode(base, "JPEG", progressive=True),
        encode(base.convert("CMYK"), "JPEG"),
        encode(rgba, "PNG"),
        encode(base.convert("P"), "PNG", transparency=0),
        encode(base.convert("P"), "GIF", save_all=True, append_images=[f.convert("P") for f in frames[1:]]),
        encode(base, "TIFF", save_all=True, append_images=frames[1:], exif=exif.tobytes()),
        encode(Image.fromarray(np.linspace(0, 1, 24 * 16, dtype=np.float32).reshape(16, 24), "F"), "TIFF"),
        encode(rgba, "WEBP", lossless=True),
        encode(base, "BMP"),
        encode(rgba, "ICO", sizes=[(16, 16)]),
    ]


def _mutate(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    action = rng.randrange(4)
    if action == 0:  # flip bytes, mostly in the headers
        for _ in range(rng.choice([1, 2, 4])):
            b[rng.randrange(min(len(b), rng.choice([64, 256, len(b)])))] = rng.randrange(256)
    elif action == 1:  # a 16/32-bit field set to an extreme
        at = rng.randrange(max(1, min(len(b), 128) - 4))
        value = rng.choice([0, 1, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF])
        b[at:at + 4] = struct.pack(rng.choice("<>") + "I", value)
    elif action == 2:  # truncated
        del b[rng.randrange(1, len(b)):]
    else:  # a slice repeated
        at = rng.randrange(len(b))
        b[at:at] = b[at:at + rng.choice([4, 16, 64])] * 2
    return bytes(b)


def test_mutated_images_decode_or_raise_image_decode_error() -> None:
    rng = random.Random(20240601)
    seeds = _seeds()
    for i in range(400):
        data = _mutate(seeds[i % len(seeds)], rng)
        for call in (lambda: probe_image(data), lambda: decode_array(data), lambda: decode_array(data, 256)):
            try:
                out = call()
            except ImageDecodeError as exc:
                assert str(exc)
                continue
            if isinstance(out, np.ndarray):
                _check_pixels(out)
        try:
            img = decode_rgb(data)
        except ImageDecodeError:
            continue
        assert img.mode == "RGB" and min(img.size) >= 1
