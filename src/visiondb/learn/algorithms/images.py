"""Decode encoded image bytes (PNG/JPEG/...) into uint8 NCHW arrays for the image networks, with an in-memory cache."""
from __future__ import annotations

import hashlib
import io
import threading
from collections import OrderedDict
from typing import Any, Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from visiondb.errors import ImageDecodeError
from visiondb.imaging.preprocess import crop_bytes

ResizeMode = Literal["stretch", "crop"]

_CACHE: OrderedDict[tuple, np.ndarray] = OrderedDict()
_CACHE_LIMIT_BYTES = 2 << 30
_cache_bytes = 0
_CACHE_LOCK = threading.Lock()  # guards _CACHE and _cache_bytes; decoding happens outside it


def _decode_error(row: int, reason: str) -> ImageDecodeError:
    """An ImageDecodeError naming `row`; `details["reason"]` holds the cause alone (for callers that name the image)."""
    return ImageDecodeError(f"row {row}: {reason}", row=row, reason=reason)


def _decode_one(data: Any, row: int, mode: str, size: tuple[int, int], resize: ResizeMode) -> np.ndarray:
    """Decode one image; `crop` = shorter side to round(size/0.875) bicubic then centre crop (EfficientNet style).

    Crops go through the featurization decode (`crop_bytes`, greyscale taken after the crop),
    so a fine-tuned network sees the pixels an embedding function would."""
    if isinstance(data, memoryview):
        data = data.tobytes()
    if not isinstance(data, (bytes, bytearray)) or len(data) == 0:
        raise _decode_error(row, f"expected non-empty encoded image bytes, got {type(data).__name__}")
    height, width = size
    if resize == "crop":
        target = round(max(height, width) / 0.875)
        try:
            pixels = crop_bytes(bytes(data), height, width, target, "bicubic")
        except ImageDecodeError as exc:
            raise _decode_error(row, f"cannot decode image: {exc.message}") from None
        if mode == "L":
            return np.asarray(Image.fromarray(pixels, "RGB").convert("L"))[None]
        return pixels.transpose(2, 0, 1)
    try:
        with Image.open(io.BytesIO(data)) as img:
            arr = np.asarray(img.convert(mode).resize((width, height), Image.Resampling.BILINEAR), dtype=np.uint8)
    except UnidentifiedImageError:
        raise _decode_error(row, "cannot decode image: not a recognised image format") from None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise _decode_error(row, f"cannot decode image: {exc}") from None
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def decode_images(
    X: Any, *, grayscale: bool, size: tuple[int, int], resize: ResizeMode = "stretch"
) -> np.ndarray:
    """Decode a 1-d sequence of encoded images to uint8 [n, C, H, W]; decoded arrays are cached by content hash."""
    mode = "L" if grayscale else "RGB"
    channels = 1 if grayscale else 3
    out = np.empty((len(X), channels, size[0], size[1]), dtype=np.uint8)
    for row, data in enumerate(X):
        raw = data.tobytes() if isinstance(data, memoryview) else data
        key = None
        if isinstance(raw, (bytes, bytearray)):
            key = (hashlib.blake2b(raw, digest_size=16).digest(), mode, tuple(size), resize)
            cached = _cache_get(key)
            if cached is not None:
                out[row] = cached
                continue
        arr = _decode_one(raw, row, mode, size, resize)
        out[row] = arr
        if key is not None:
            _cache_put(key, arr)
    return out


def _cache_get(key: tuple) -> np.ndarray | None:
    """The cached array for `key` (marked most recently used), or None."""
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
        if cached is not None:
            _CACHE.move_to_end(key)
        return cached


def _cache_put(key: tuple, arr: np.ndarray) -> None:
    """Cache `arr` under `key` (replacing a copy another thread stored first); evicts least recently used past the limit."""
    global _cache_bytes
    with _CACHE_LOCK:
        old = _CACHE.pop(key, None)
        if old is not None:
            _cache_bytes -= old.nbytes
        _CACHE[key] = arr
        _cache_bytes += arr.nbytes
        while _cache_bytes > _CACHE_LIMIT_BYTES and _CACHE:
            _, evicted = _CACHE.popitem(last=False)
            _cache_bytes -= evicted.nbytes


def undecodable(
    X: Any, *, grayscale: bool, size: tuple[int, int], resize: ResizeMode = "stretch"
) -> dict[int, ImageDecodeError]:
    """Rows of X that `decode_images` would reject, with their errors; the good rows land in the decode cache."""
    failures: dict[int, ImageDecodeError] = {}
    for row, data in enumerate(X):
        try:
            decode_images([data], grayscale=grayscale, size=size, resize=resize)
        except ImageDecodeError as exc:
            failures[row] = _decode_error(row, exc.details.get("reason", exc.message))
    return failures


def clear_cache() -> None:
    """Drop every cached decoded image."""
    global _cache_bytes
    with _CACHE_LOCK:
        _CACHE.clear()
        _cache_bytes = 0
