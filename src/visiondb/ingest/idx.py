"""MNIST-style IDX arrays (e.g. Fashion-MNIST): parse any dtype code and turn image stacks into PNG bytes."""
from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image

from visiondb.errors import VisionDBError

# IDX type code -> big-endian numpy dtype
_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(data: bytes) -> np.ndarray:
    """Parse an (already decompressed) IDX file into an array in native byte order."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise VisionDBError(f"not an IDX file: bad magic {bytes(data[:4])!r} (is it still gzip-compressed?)")
    code, ndim = data[2], data[3]
    if code not in _DTYPES:
        raise VisionDBError(f"IDX file has unknown data type code 0x{code:02x}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise VisionDBError(f"IDX file truncated in its header ({len(data)} bytes, {ndim} dimensions)")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_DTYPES[code])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise VisionDBError(
            f"IDX file size mismatch: dimensions {dims} need {expected} data bytes, found {len(data) - header}"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=False) if dtype.itemsize > 1 else arr


def idx_images_to_png(images: np.ndarray) -> list[bytes]:
    """Encode an N×H×W stack (uint8, or any numeric scaled/clipped to 0..255) as greyscale PNGs."""
    if images.ndim == 2:
        images = images[None]
    if images.ndim != 3:
        raise VisionDBError(f"expected an N×H×W image array, got shape {images.shape}")
    if images.dtype != np.uint8:
        images = np.clip(images, 0, 255).astype(np.uint8)
    out: list[bytes] = []
    for img in images:
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(img), mode="L").save(buf, format="PNG")
        out.append(buf.getvalue())
    return out
