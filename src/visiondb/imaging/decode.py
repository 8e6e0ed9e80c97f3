"""Decode image bytes to upright RGB pixels (arrays or Pillow images), with fast reduced-size JPEG decoding.

Every caller (featurization, training, serving) goes through `decode_array` / `decode_rgb` / `decode_box` so the
same bytes always produce the same pixels: JPEGs via libjpeg-turbo DCT scaling (simplejpeg; the box of a plain
JPEG through libjpeg-turbo's region decoding, pixel for pixel the same), everything else via Pillow.
"""
from __future__ import annotations

import functools
import io
import struct
import warnings
from typing import TYPE_CHECKING, Callable, TypeVar

import numpy as np
import simplejpeg
from PIL import Image, ImageFile, UnidentifiedImageError

from visiondb.errors import ImageDecodeError
from visiondb.imaging.icons import embedded_frame_sizes

try:  # built by `make install` against the system's libjpeg-turbo; without it every box is cut from a full decode
    from visiondb.imaging import _jpegregion
except ImportError:  # pragma: no cover - depends on the machine's build tools
    _jpegregion = None

if TYPE_CHECKING:
    from PIL import ImageCms

T = TypeVar("T")

MAX_PIXELS = 100_000_000
"""Largest width*height accepted; larger images are rejected before decoding (decompression bombs)."""

ImageFile.LOAD_TRUNCATED_IMAGES = False

# EXIF orientation tag value -> transpose that makes the image upright (same table as ImageOps.exif_transpose).
_ORIENTATION_FIX = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_EXIF_ORIENTATION = 0x0112
_WHITE = (255, 255, 255)


_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"),
)


def _describe_non_image(data: bytes) -> str:
    """Guess what bytes no Pillow plugin accepted are, for an error message that helps the user."""
    prefix = bytes(data[:12])
    for signature, name in _SIGNATURES:
        if prefix.startswith(signature):  # Pillow's plugins reject a header they fail to parse as "not this format"
            return f"corrupt image: {name} signature but a header Pillow cannot parse"
    if prefix[:4] == b"RIFF" and prefix[8:12] == b"WEBP":
        return "corrupt image: WEBP signature but a header Pillow cannot parse"
    head = data[:512].lstrip()
    lowered = head.lower()
    if lowered.startswith((b"<!doctype html", b"<html", b"<?xml", b"<svg", b"<")):
        return "not an image: looks like text/HTML"
    if lowered.startswith((b"{", b"[")):
        return "not an image: looks like JSON text"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return f"not an image: unrecognised format (first bytes {data[:8].hex()})"
    return "not an image: looks like text"


_MALFORMED = (SyntaxError, IndexError, TypeError, struct.error, OverflowError)
"""What Pillow's pure-Python format parsers raise on malformed headers and frame records besides OSError, ValueError
and EOFError: a short record read past its end (IndexError, struct.error), a tag of the wrong type (TypeError: a
RATIONAL strip offset, an XMP tag holding a number), an offset beyond what a C seek takes (OverflowError). `Image.open`
itself takes the first four as "not this format" while it tries plugins; once one has accepted the file they escape
from `load`. Only calls into Pillow are wrapped, so a caller's wrong argument still raises its TypeError."""


def _plugin_format(exc: BaseException) -> str:
    """The format whose Pillow plugin raised `exc` ("DDS" from DdsImagePlugin.py), or "image" when none did."""
    tb, name = exc.__traceback__, "image"
    while tb is not None:
        module = tb.tb_frame.f_globals.get("__name__", "")
        if module.startswith("PIL.") and module.endswith("ImagePlugin"):
            name = module[4:-len("ImagePlugin")].upper()
        tb = tb.tb_next
    return name


def _parse_error(img: Image.Image | None, exc: BaseException) -> ImageDecodeError:
    """The ImageDecodeError for an exception Pillow raised while opening (`img` None) or loading untrusted bytes."""
    fmt = img.format if img is not None and img.format else _plugin_format(exc)
    text = str(exc) or ("unexpected end of data" if isinstance(exc, EOFError) else type(exc).__name__)
    if isinstance(exc, (MemoryError, Image.DecompressionBombError)):
        size = f" {img.size[0]}x{img.size[1]}" if img is not None else ""
        return ImageDecodeError(f"image too large: {fmt}{size} needs more memory than Pillow can allocate ({text})")
    if isinstance(exc, NotImplementedError):
        return ImageDecodeError(f"unsupported image: {fmt} variant Pillow cannot decode ({text})")
    if isinstance(exc, (OSError, SyntaxError, ValueError, EOFError)):
        return ImageDecodeError(f"corrupt image: {text}")  # Pillow's own diagnosis ("broken PNG file")
    # a Python error from deep in a plugin ("index out of range"): say which format's data it choked on
    return ImageDecodeError(f"corrupt image: malformed {fmt} data ({type(exc).__name__}: {text})")


def _open(data: bytes) -> Image.Image:
    """Open (header only) and enforce the pixel limit; raise ImageDecodeError with the cause."""
    if not data:
        raise ImageDecodeError("empty file (0 bytes)")
    for number, (width, height) in enumerate(embedded_frame_sizes(data), 1):
        if width * height > MAX_PIXELS:  # Pillow would decode it while opening or loading the icon
            raise ImageDecodeError(f"image too large: embedded frame {number} is {width}x{height} "
                                   f"({width * height} pixels > {MAX_PIXELS})")
    stream = io.BytesIO(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(stream)
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"image too large: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(_describe_non_image(data)) from exc
    except (OSError, ValueError, EOFError, RuntimeError, MemoryError) + _MALFORMED as exc:
        raise _parse_error(None, exc) from exc
    _check_size(*img.size)
    return img


def _check_size(width: int, height: int) -> None:
    """Reject empty and decompression-bomb sizes before any pixel is decoded."""
    if width <= 0 or height <= 0:
        raise ImageDecodeError(f"corrupt image: invalid size {width}x{height}")
    if width * height > MAX_PIXELS:
        raise ImageDecodeError(f"image too large: {width}x{height} ({width * height} pixels > {MAX_PIXELS})")


def probe_image(data: bytes) -> tuple[str, int, int]:
    """Return (format, width, height) from the header alone, or raise ImageDecodeError naming the cause."""
    img = _open(data)
    return str(img.format), img.size[0], img.size[1]


def _orientation(img: Image.Image) -> int:
    """EXIF orientation (1..8) of an opened image; 1 when absent or unreadable."""
    try:
        value = int(img.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # noqa: BLE001 - malformed EXIF must not make a good image undecodable
        return 1
    return value if value in _ORIENTATION_FIX else 1


def _jpeg_has_exif(data: bytes) -> bool:
    """True when an APP1 'Exif' segment precedes the scan (walks the marker segments; no Pillow EXIF parse needed)."""
    pos, end = 2, len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return True  # not a clean marker stream: let Pillow decide
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker == 0xDA or marker == 0xD9:  # start of scan / end of image: no more metadata
            return False
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length field
            pos += 2
            continue
        length = (data[pos + 2] << 8) | data[pos + 3]
        if marker == 0xE1 and data[pos + 4:pos + 10] == b"Exif\x00\x00":
            return True
        pos += 2 + length
    return False


def dct_scale_factor(width: int, height: int, min_side: int | None) -> int:
    """Largest power-of-two reduction (1, 2, 4 or 8) keeping the shorter side >= `min_side`.

    Only these factors have SIMD IDCTs in libjpeg-turbo: the M/8 ones (3/4, 5/8, ...) decode fewer pixels
    yet cost more (measured 1.56 ms at 3/4 against 1.17 ms at full size for 400 px photos).
    """
    factor = 1
    while min_side and factor < 8 and min(width, height) // (factor * 2) >= min_side:
        factor *= 2
    return factor


_JPEG_SOI = b"\xff\xd8\xff"
_JPEG_SOS, _JPEG_EOI = b"\xff\xda", b"\xff\xd9"
_TURBO_COLORSPACES = ("YCbCr", "Gray", "RGB")
"""JPEG colour spaces libjpeg-turbo converts to RGB itself (Pillow's modes RGB and L); CMYK/YCCK go through Pillow."""


def _plain_jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a YCbCr/greyscale JPEG without EXIF, its header read by libjpeg-turbo (~5 us against
    ~100 us for Pillow's marker parser in Python); None when Pillow must look: not such a JPEG, or EXIF present."""
    if bytes(data[:3]) != _JPEG_SOI or _jpeg_has_exif(data):
        return None
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None  # Pillow's parser names the problem
    except KeyError:
        return None  # a subsampling simplejpeg has no name for (1x4, ...): Pillow reads the header instead
    if colorspace not in _TURBO_COLORSPACES:
        return None
    _check_size(width, height)
    return width, height


def _decode_jpeg_direct(data: bytes, min_side: int | None) -> np.ndarray | None:
    """The common case without Pillow (see `_plain_jpeg_size`); None when Pillow must look."""
    size = _plain_jpeg_size(data)
    return None if size is None else _decode_jpeg_scaled(data, size[0], size[1], min_side)


def _decode_jpeg_fast(data: bytes, img: Image.Image, min_side: int | None) -> np.ndarray | None:
    """Decode a YCbCr/greyscale JPEG Pillow opened, EXIF orientation applied; None when simplejpeg cannot."""
    if img.mode not in ("RGB", "L"):
        return None  # CMYK / YCCK: let Pillow do the colour conversion
    arr = _decode_jpeg_scaled(data, img.size[0], img.size[1], min_side)
    if arr is None or not _jpeg_has_exif(data):
        return arr
    return _orient_array(arr, _orientation(img))


def _decode_jpeg_scaled(data: bytes, width: int, height: int, min_side: int | None) -> np.ndarray | None:
    """libjpeg-turbo decode at the `dct_scale_factor` scale; None when simplejpeg does not support the file."""
    _, scaled_w, scaled_h = _scaled_size(width, height, min_side)
    return _turbo(data, lambda: simplejpeg.decode_jpeg(
        data, colorspace="RGB", min_height=scaled_h, min_width=scaled_w, strict=True))


def _scaled_size(width: int, height: int, min_side: int | None) -> tuple[int, int, int]:
    """(factor, width, height) of a JPEG decoded at its `dct_scale_factor` scale (libjpeg's rounding: up)."""
    factor = dct_scale_factor(width, height, min_side)
    return factor, -(-width // factor), -(-height // factor)


def _turbo(data: bytes, decode: Callable[[], T]) -> T | None:
    """decode() of `data` by libjpeg-turbo, its ValueError raised as truncated or corrupt (`_jpeg_decode_error`:
    "premature end of data segment" is also said of damaged data in a complete file); None for a file it does
    not support (Pillow may)."""
    try:
        return decode()
    except ValueError as exc:
        if "unsupported" in str(exc).lower():
            return None
        raise _jpeg_decode_error(data, str(exc)) from exc


Box = Callable[[int, int], tuple[int, int, int, int]]
"""(width, height) of a decoded image -> the (left, top, right, bottom) box of it a caller wants."""

REGION_MARGIN = 16
"""Pixels decoded on every side of a box: libjpeg-turbo reconstructs the edges of a cropped or skipped region without
their neighbours (fancy upsampling), so a box decoded with no margin differed from a full decode in 13 of the 512
benchmark photos; with 16, in none."""


def _decode_jpeg_region(data: bytes, box: Box, min_side: int | None) -> np.ndarray | None:
    """The box of a plain JPEG (YCbCr/greyscale, no EXIF) decoded alone at the `dct_scale_factor` scale; None when
    the full decode must do (no region decoder built, not such a JPEG, or one libjpeg-turbo does not support)."""
    size = _plain_jpeg_size(data) if _jpegregion is not None else None
    if size is None or (size[0] < 8 and size[1] < 8):
        return None  # under 8 px a side several M/8 scales give one size and the full decode may pick another
    factor, scaled_w, scaled_h = _scaled_size(*size, min_side)
    x0, y0, x1, y1 = box(scaled_w, scaled_h)
    top, bottom = max(0, y0 - REGION_MARGIN), min(scaled_h, y1 + REGION_MARGIN)
    out = np.empty((bottom - top) * scaled_w * 3, dtype=np.uint8)
    done = _turbo(data, lambda: _jpegregion.decode_region(
        data, factor, max(0, x0 - REGION_MARGIN), top, min(scaled_w, x1 + REGION_MARGIN), bottom, out))
    if done is None:  # an unsupported file, or a colour space libjpeg-turbo does not turn into RGB
        return None
    left, top, region_w, region_h = done
    region = out[: region_h * region_w * 3].reshape(region_h, region_w, 3)
    return region[y0 - top:y1 - top, x0 - left:x1 - left]


def _jpeg_lacks_eoi(data: bytes) -> bool:
    """True when no end-of-image marker follows the last start-of-scan: the file was cut short (byte stuffing keeps
    both markers out of entropy-coded data). Only called after a decode failed, so the scan costs nothing otherwise."""
    return data.find(_JPEG_EOI, max(data.rfind(_JPEG_SOS), 0)) < 0


def _jpeg_decode_error(data: bytes, text: str) -> ImageDecodeError:
    """The error for a JPEG whose header parsed but whose pixels did not: truncated when the EOI is missing."""
    if _jpeg_lacks_eoi(data):
        return ImageDecodeError(f"truncated image data: {text}")
    return ImageDecodeError(f"corrupt image: {text}")


def _orient_array(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (2..8) to an HWC array, returning a C-contiguous upright copy (1: `arr` itself)."""
    if orientation not in _ORIENTATION_FIX:
        return arr
    if orientation in (5, 6, 7, 8):
        arr = arr.transpose(1, 0, 2)  # transpose: then flip to rotate
    if orientation in (2, 3, 6, 7):
        arr = arr[:, ::-1]
    if orientation in (3, 4, 7, 8):
        arr = arr[::-1]
    # copy(), not ascontiguousarray: a flip along a length-1 axis (1xN, Nx1, 1x1 images) already counts as
    # contiguous, so ascontiguousarray would return the view with its negative stride, which torch.from_numpy rejects
    return arr.copy()


@functools.lru_cache(maxsize=1)
def _lab_to_srgb() -> ImageCms.ImageCmsTransform:
    """LittleCMS transform from Pillow's LAB mode (L 0..255, a/b offset by 128) to sRGB, built once."""
    from PIL import ImageCms  # only LAB images need LittleCMS

    return ImageCms.buildTransform(ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB")


def _lab_to_rgb(img: Image.Image) -> Image.Image:
    """CIELAB to sRGB through LittleCMS (Pillow < 11 `convert` copied the channels raw); neutral greys stay grey."""
    return _lab_to_srgb().apply(img)


_BLOCK = 1 << 18
"""Pixels per block in `_float_to_8bit`: float64 temporaries of 2 MB instead of several of the whole image."""


@functools.lru_cache(maxsize=1)
def _lut16() -> np.ndarray:
    """round(v / 257) as uint8 for every 16-bit value v: the float formula's exact result (v / 257 is never a half)."""
    return np.rint(np.arange(65536) / 257.0).astype(np.uint8)


def _to_8bit(arr: np.ndarray, mode: str) -> np.ndarray:
    """Map one-channel 16/32-bit int or float pixels to uint8. 16-bit modes divide by 257; float images whose
    finite values all lie in [0, 1] scale by 255; otherwise values up to 255 stay as they are and larger ranges
    are read as 16-bit (/257). Clipped to 0..255; NaN and infinities as 0.

    Integers go through a lookup table, floats through 2 MB float64 blocks: the pixels the whole-image float64
    formula gives, without its five image-sized float64 temporaries (8 s and 3 GB for a 100-megapixel float TIFF)."""
    if arr.dtype.kind == "f":
        return _float_to_8bit(arr)
    if mode.startswith("I;16"):
        return _lut16()[arr]
    if arr.max(initial=0) > 255:
        return _lut16()[np.clip(arr, 0, 65535)]  # rint(v / 257) clipped to 255 is 255 above 65535, 0 below 0
    return np.clip(arr, 0, 255).astype(np.uint8)


def _float_to_8bit(arr: np.ndarray) -> np.ndarray:
    """`_to_8bit` for float pixels, one block at a time: a pass for the range of the finite values, then one to map."""
    flat = arr.reshape(-1)
    out = np.empty(flat.size, np.uint8)
    starts = range(0, flat.size, _BLOCK)
    lo = hi = None
    with np.errstate(invalid="ignore"):  # signalling NaNs from the file flag FE_INVALID when widened; they map to 0
        for start in starts:  # widening to float64 keeps the order, so the range can be taken at the stored precision
            block = np.nan_to_num(flat[start:start + _BLOCK], nan=0.0, posinf=0.0, neginf=0.0)
            lo = block.min() if lo is None else min(lo, block.min())
            hi = block.max() if hi is None else max(hi, block.max())
        unit = lo is not None and lo >= 0 and hi <= 1
        for start in starts:
            block = flat[start:start + _BLOCK].astype(np.float64)
            np.nan_to_num(block, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
            if unit:
                block *= 255.0
            elif hi is not None and hi > 255:
                block /= 257.0
            out[start:start + _BLOCK] = np.clip(np.rint(block, out=block), 0, 255, out=block)
    return out.reshape(arr.shape)


def _to_rgb(img: Image.Image) -> Image.Image | np.ndarray:
    """Convert any Pillow mode to 8-bit RGB: alpha and colour keys composited on white, 16-bit and float scaled
    (see `_to_8bit`, whose grey comes back as an HWC array rather than through an "L" image), palettes expanded,
    LAB colour-converted."""
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        grey = _to_8bit(np.asarray(img), mode)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode == "LAB":
        return _lab_to_rgb(img)
    if mode == "P" and "transparency" not in img.info and img.palette is not None and img.palette.mode == "RGB":
        return img.convert("RGB")  # opaque palette: compositing on white would change nothing (3 passes fewer)
    if mode == "P" or mode == "PA" or "transparency" in img.info:
        alphas = img.info.get("transparency")
        if mode == "P" and isinstance(alphas, bytes) and len(alphas) > 256:
            # a PNG tRNS longer than any palette (the spec forbids it): Pillow's convert raises ValueError
            # "palette index out of range"; alphas past entry 255 belong to no colour, so drop them
            img.info["transparency"] = alphas[:256]
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _decode(data: bytes, min_side: int | None) -> np.ndarray | Image.Image:
    """Upright RGB pixels: an HWC uint8 array from the JPEG fast paths and high-bit-depth greys, else an RGB
    Pillow image."""
    direct = _decode_jpeg_direct(data, min_side)
    if direct is not None:
        return direct
    img = _open(data)
    if img.format == "JPEG":
        fast = _decode_jpeg_fast(data, img, min_side)
        if fast is not None:
            return fast
        if min_side:
            img.draft("RGB", (min_side, min_side))
    try:
        img.load()  # the first frame: Image.open leaves every multi-frame format there, later frames are never parsed
    except (OSError, ValueError, EOFError, RuntimeError, MemoryError, Image.DecompressionBombError) + _MALFORMED as exc:
        raise _load_error(img, data, exc) from exc
    orientation = _orientation(img)  # malformed EXIF reads as 1: the pixels as stored
    if orientation != 1:  # (ImageOps.exif_transpose would copy the whole image even when nothing turns)
        img = img.transpose(_ORIENTATION_FIX[orientation])
    return _to_rgb(img)


def _load_error(img: Image.Image, data: bytes, exc: Exception) -> ImageDecodeError:
    """The error for pixels Pillow failed to load: JPEGs cut short are reported as truncated."""
    if isinstance(exc, OSError) and "truncated" in str(exc).lower():
        return ImageDecodeError(f"truncated image data: {exc}")
    if img.format == "JPEG" and isinstance(exc, (OSError, SyntaxError, ValueError, EOFError)):
        return _jpeg_decode_error(data, str(exc))
    return _parse_error(img, exc)


def decode_array(data: bytes, min_side: int | None = None) -> np.ndarray:
    """Decode to an upright RGB uint8 [H, W, 3] array; with `min_side`, JPEGs decode at the smallest
    power-of-two scale keeping the shorter side >= it (see `dct_scale_factor`)."""
    pixels = _decode(data, min_side)
    return pixels if isinstance(pixels, np.ndarray) else np.asarray(pixels, dtype=np.uint8)


def decode_box(data: bytes, box: Box, min_side: int | None = None) -> np.ndarray:
    """`decode_array(data, min_side)[top:bottom, left:right]` for (left, top, right, bottom) = box(width, height) of
    that image. A plain JPEG reconstructs only the box (rows above and below it are still entropy-decoded, so damage
    anywhere is reported as a full decode reports it): ~0.1 ms less for a 400 px photo's centre crop."""
    region = _decode_jpeg_region(data, box, min_side)
    if region is not None:
        return region
    pixels = decode_array(data, min_side)
    left, top, right, bottom = box(pixels.shape[1], pixels.shape[0])
    return pixels[top:bottom, left:right]


def decode_rgb(data: bytes, min_side: int | None = None) -> Image.Image:
    """`decode_array` as an RGB Pillow image (for callers that crop or save with Pillow)."""
    pixels = _decode(data, min_side)
    return Image.fromarray(pixels, "RGB") if isinstance(pixels, np.ndarray) else pixels
