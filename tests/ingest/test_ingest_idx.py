"""IDX parsing of the real Fashion-MNIST files and of synthetic IDX arrays of every dtype code."""
from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image

from tests.support.paths import FASHION_MNIST
from visiondb.errors import VisionDBError
from visiondb.ingest import Fetcher, idx_images_to_png, read_idx


def _idx(arr: np.ndarray, code: int, dtype: str) -> bytes:
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(dtype).tobytes()


@pytest.mark.skipif(not FASHION_MNIST.is_dir(), reason="Fashion-MNIST not installed")
def test_fashion_mnist_real_files() -> None:
    with Fetcher() as f:
        images = read_idx(f.read(str(FASHION_MNIST / "train-images-idx3-ubyte.gz"), decompress=True))
        labels = read_idx(f.read(str(FASHION_MNIST / "t10k-labels-idx1-ubyte.gz"), decompress=True))
    assert images.shape == (60000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and set(np.unique(labels)) == set(range(10))
    pngs = idx_images_to_png(images[:5])
    assert len(pngs) == 5
    for png, img in zip(pngs, images[:5]):
        decoded = Image.open(io.BytesIO(png))
        assert decoded.mode == "L" and decoded.size == (28, 28)
        assert np.array_equal(np.asarray(decoded), img)


@pytest.mark.parametrize("code,dtype", [(0x08, ">u1"), (0x09, ">i1"), (0x0B, ">i2"), (0x0C, ">i4"),
                                        (0x0D, ">f4"), (0x0E, ">f8")])
def test_all_dtype_codes(code: int, dtype: str) -> None:
    arr = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype) if dtype != ">u1" else np.arange(24).reshape(2, 3, 4)
    out = read_idx(_idx(arr, code, dtype))
    assert out.shape == (2, 3, 4) and out.dtype.isnative
    assert np.array_equal(out, arr)


def test_malformed_idx() -> None:
    with pytest.raises(VisionDBError, match="bad magic"):
        read_idx(b"\x1f\x8b\x08\x00")
    with pytest.raises(VisionDBError, match="size mismatch"):
        read_idx(_idx(np.zeros((2, 2)), 0x08, ">u1")[:-1])
