"""Small images built in code for decode tests: encoded bytes of any Pillow format, an RGB gradient, and noise."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image


def encode(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    """`img` saved in `fmt` (Pillow's format name and save options), as bytes."""
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def gradient(w: int = 64, h: int = 48) -> Image.Image:
    """A w x h RGB gradient: every pixel differs, so flips and rotations show."""
    y, x = np.mgrid[0:h, 0:w]
    arr = np.stack([x * 255 // w, y * 255 // h, (x + y) * 255 // (w + h)], axis=-1).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def noise(w: int, h: int, seed: int = 0) -> Image.Image:
    """Random texture over a gradient: every decoding difference at a region's edge shows."""
    rng = np.random.default_rng(seed)
    base = np.asarray(gradient(w, h), dtype=np.int64)
    return Image.fromarray(np.clip(base + rng.integers(-40, 40, (h, w, 3)), 0, 255).astype(np.uint8), "RGB")
