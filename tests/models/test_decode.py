"""decode_rgb / probe_image on real photos and generated exotic formats."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support.images import encode, gradient
from visiondb.errors import ImageDecodeError
from visiondb.imaging import decode as decode_mod
from visiondb.imaging.decode import decode_rgb, probe_image


def test_probe_real_jpeg(clothing_photos: list[bytes]) -> None:
    fmt, w, h = probe_image(clothing_photos[0])
    assert fmt == "JPEG" and w > 0 and h > 0
    assert decode_rgb(clothing_photos[0]).size == (w, h)


def test_reduced_decode_keeps_shorter_side(clothing_photos: list[bytes]) -> None:
    for data in clothing_photos:
        _, w, h = probe_image(data)
        img = decode_rgb(data, min_side=256)
        assert img.mode == "RGB"
        assert min(img.size) >= min(256, min(w, h))
        assert min(img.size) <= min(w, h)


def test_exotic_modes_become_rgb(tmp_path: Path) -> None:
    base = gradient()
    rgba = base.convert("RGBA")
    alpha = np.zeros((48, 64), np.uint8)
    alpha[:, 32:] = 255
    rgba.putalpha(Image.fromarray(alpha, "L"))
    grey16 = Image.fromarray(np.asarray(base.convert("L"), np.uint16) * 257)
    cases = {
        "grey.png": encode(base.convert("L"), "PNG"),
        "rgba.png": encode(rgba, "PNG"),
        "grey16.png": encode(grey16, "PNG"),
        "cmyk.jpg": encode(base.convert("CMYK"), "JPEG", quality=95),
        "palette.gif": encode(base.convert("P"), "GIF"),
        "palette_transparent.png": encode(base.convert("P"), "PNG", transparency=0),
        "grey.jpg": encode(base.convert("L"), "JPEG"),
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        img = decode_rgb((tmp_path / name).read_bytes())
        assert img.mode == "RGB" and img.size == (64, 48), name
    # transparent half composited on white; 16-bit grey scaled to 8 bits
    arr = np.asarray(decode_rgb(cases["rgba.png"]))
    assert (arr[:, :32] == 255).all()
    assert np.array_equal(arr[:, 32:], np.asarray(base)[:, 32:])
    g16 = np.asarray(decode_rgb(cases["grey16.png"]))[..., 0]
    assert np.abs(g16.astype(int) - np.asarray(base.convert("L"), int)).max() <= 1
    cmyk = np.asarray(decode_rgb(cases["cmyk.jpg"]), int)
    assert np.abs(cmyk - np.asarray(base, int)).mean() < 12


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_rotation_comes_out_upright(orientation: int) -> None:
    upright = gradient(96, 64)
    # what a camera stores for that orientation: the inverse rotation of the upright picture
    stored = {3: upright.rotate(180), 6: upright.rotate(90, expand=True), 8: upright.rotate(270, expand=True)}[orientation]
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(stored, "JPEG", quality=95, exif=exif.tobytes())
    for min_side in (None, 32):
        got = decode_rgb(data, min_side=min_side)
        assert got.size == (96, 64) if min_side is None else got.size[0] > got.size[1]
        ref = upright.resize(got.size)
        assert np.abs(np.asarray(got, int) - np.asarray(ref, int)).mean() < 10


def test_real_palette_gif(datasets: Path) -> None:
    data = (datasets / "hymenoptera" / "train" / "ants" / "imageNotFound.gif").read_bytes()
    assert probe_image(data)[0] == "GIF"
    assert decode_rgb(data).mode == "RGB"


def test_truncated_jpeg_rejected(clothing_photos: list[bytes]) -> None:
    data = clothing_photos[0]
    half = data[: len(data) // 2]
    for min_side in (None, 256):
        with pytest.raises(ImageDecodeError, match="truncated image data|corrupt image"):
            decode_rgb(half, min_side=min_side)


def test_truncated_png_rejected() -> None:
    data = encode(gradient(), "PNG")
    with pytest.raises(ImageDecodeError, match="truncated image data|corrupt image"):
        decode_rgb(data[: len(data) // 2])


def test_non_images(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "page.jpg"
    text.write_bytes(b"<!DOCTYPE html><html><body>404 not found</body></html>")
    with pytest.raises(ImageDecodeError, match=r"empty file \(0 bytes\)"):
        probe_image(empty.read_bytes())
    with pytest.raises(ImageDecodeError, match="not an image: looks like text/HTML"):
        decode_rgb(text.read_bytes())
    with pytest.raises(ImageDecodeError, match="not an image"):
        decode_rgb(np.random.default_rng(0).bytes(4096))


def test_pixel_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    data = encode(gradient(64, 48), "PNG")
    jpeg = encode(gradient(64, 48), "JPEG")
    monkeypatch.setattr(decode_mod, "MAX_PIXELS", 1000)
    with pytest.raises(ImageDecodeError, match="image too large: 64x48"):
        probe_image(data)
    with pytest.raises(ImageDecodeError, match="image too large: 64x48"):
        decode_rgb(jpeg)  # the Pillow-free JPEG path checks the size before decoding too


def test_plain_jpegs_skip_pillow_with_the_same_pixels(clothing_photos: list[bytes]) -> None:
    """YCbCr and greyscale JPEGs without EXIF decode without Pillow's parser, to the pixels the Pillow-opened
    path gives; CMYK and EXIF-tagged ones are left to Pillow."""
    grey = encode(gradient().convert("L"), "JPEG")
    for data in [*clothing_photos, grey]:
        for min_side in (None, 256):
            direct = decode_mod._decode_jpeg_direct(data, min_side)
            assert direct is not None
            opened = decode_mod._decode_jpeg_fast(data, Image.open(io.BytesIO(data)), min_side)
            assert np.array_equal(direct, opened)
    exif = Image.Exif()
    exif[0x0112] = 6
    assert decode_mod._decode_jpeg_direct(encode(gradient(), "JPEG", exif=exif.tobytes()), None) is None
    assert decode_mod._decode_jpeg_direct(encode(gradient().convert("CMYK"), "JPEG"), None) is None
    garbage = b"\xff\xd8\xff" + np.random.default_rng(1).bytes(2048)
    with pytest.raises(ImageDecodeError, match="corrupt image|not an image"):
        decode_rgb(garbage)  # a JPEG signature over junk still gets Pillow's diagnosis


def test_resampling_stays_on_the_calling_thread() -> None:
    """Crops run PyTorch on the calling thread only; the thread's and other threads' settings are left alone."""
    import threading

    import torch

    from visiondb.imaging.preprocess import EFFICIENTNET
    from visiondb.imaging.threads import torch_on_this_thread

    before = torch.get_num_threads()
    seen: dict[str, int] = {}

    def worker() -> None:
        with torch_on_this_thread():
            seen["inside"] = torch.get_num_threads()
        seen["after"] = torch.get_num_threads()

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen["inside"] == 1 and seen["after"] == before and torch.get_num_threads() == before
    pixels = np.random.default_rng(0).integers(0, 256, (533, 400, 3), dtype=np.uint8)
    assert EFFICIENTNET(224).to_array(pixels).shape == (3, 224, 224)
    assert torch.get_num_threads() == before


def _tiff_pixel(img: Image.Image, tmp_path: Path, name: str) -> np.ndarray:
    """Save `img` as a TIFF under tmp_path and decode it back to an RGB array."""
    (tmp_path / name).write_bytes(encode(img, "TIFF"))
    return np.asarray(decode_rgb((tmp_path / name).read_bytes()), int)


def test_float_and_int32_images_scale_to_8_bits(tmp_path: Path) -> None:
    """Float images in [0, 1] scale by 255; floats already in 0..255 and 32-bit ints up to 255 keep their values."""
    half = _tiff_pixel(Image.fromarray(np.full((8, 8), 0.5, np.float32), "F"), tmp_path, "half.tif")
    assert (half == 128).all()
    ramp = np.tile(np.linspace(0, 1, 16, dtype=np.float32), (4, 1))
    got = _tiff_pixel(Image.fromarray(ramp, "F"), tmp_path, "ramp.tif")[..., 0]
    assert np.array_equal(got, np.rint(ramp * 255).astype(int))
    levels = np.tile(np.array([0, 2, 100, 255], np.float32), (4, 1))
    assert np.array_equal(_tiff_pixel(Image.fromarray(levels, "F"), tmp_path, "levels.tif")[..., 0], levels.astype(int))
    nan = np.full((4, 4), 0.25, np.float32)
    nan[0, 0] = np.nan
    got = _tiff_pixel(Image.fromarray(nan, "F"), tmp_path, "nan.tif")[..., 0]
    assert got[0, 0] == 0 and (got.ravel()[1:] == 64).all()
    int32 = _tiff_pixel(Image.fromarray(np.full((8, 8), 100, np.int32), "I"), tmp_path, "int32.tif")
    assert (int32 == 100).all()


def test_rgb_colour_key_composited_on_white(tmp_path: Path) -> None:
    """An RGB PNG's tRNS colour key makes that colour transparent (white); other pixels and plain RGB are unchanged."""
    arr = np.zeros((8, 8, 3), np.uint8)
    arr[:, :4] = (255, 0, 0)
    arr[:, 4:] = (0, 0, 255)
    (tmp_path / "keyed.png").write_bytes(encode(Image.fromarray(arr, "RGB"), "PNG", transparency=(255, 0, 0)))
    got = np.asarray(decode_rgb((tmp_path / "keyed.png").read_bytes()))
    assert (got[:, :4] == 255).all()
    assert np.array_equal(got[:, 4:], arr[:, 4:])
    assert np.array_equal(np.asarray(decode_rgb(encode(Image.fromarray(arr, "RGB"), "PNG"))), arr)


def test_lab_tiff_converts_to_srgb(tmp_path: Path) -> None:
    """CIELAB TIFFs are colour-converted, not channel-copied: neutral grey stays grey and colours round-trip."""
    from PIL import ImageCms

    grey = _tiff_pixel(Image.new("LAB", (8, 8), (128, 128, 128)), tmp_path, "grey.tif")  # L*=50, a*=b*=0
    assert (grey == grey[..., :1]).all() and abs(int(grey[0, 0, 0]) - 119) <= 1
    to_lab = ImageCms.buildTransform(ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), "RGB", "LAB")
    base = gradient()
    got = _tiff_pixel(to_lab.apply(base), tmp_path, "gradient.tif")
    assert np.abs(got - np.asarray(base, int)).mean() < 3


def _progressive_cut_in_huffman_table(img: Image.Image, **kwargs: object) -> tuple[bytes, int]:
    """A progressive JPEG of `img` and the offset of the middle of its first Huffman table after a scan."""
    data = encode(img, "JPEG", progressive=True, **kwargs)
    return data, data.index(b"\xff\xc4", data.index(b"\xff\xda")) + 6


def test_truncated_progressive_jpeg_reported_as_truncated() -> None:
    """A progressive JPEG cut between scans (inside a Huffman table) lacks its EOI: truncated, not corrupt;
    the same table damaged in a complete file stays corrupt."""
    exif = Image.Exif()
    exif[0x0112] = 1
    for kwargs in ({}, {"exif": exif.tobytes()}):  # Pillow-free path, then the Pillow-opened one
        data, cut = _progressive_cut_in_huffman_table(gradient(), **kwargs)
        for min_side in (None, 16):
            with pytest.raises(ImageDecodeError, match="^truncated image data: "):
                decode_rgb(data[:cut], min_side=min_side)
    data, cut = _progressive_cut_in_huffman_table(gradient().convert("CMYK"))
    with pytest.raises(ImageDecodeError, match="^truncated image data: "):
        decode_rgb(data[:cut])
    data, cut = _progressive_cut_in_huffman_table(gradient())
    damaged = data[:cut - 2] + b"\xff" * 24 + data[cut + 22:]
    with pytest.raises(ImageDecodeError, match="^corrupt image: "):
        decode_rgb(damaged)
