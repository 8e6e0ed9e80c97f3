"""Region decoding (only the box a crop needs is reconstructed) gives exactly the pixels and the errors of a full
decode followed by slicing, on real photos and on generated JPEGs of every layout."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.support.images import encode, noise
from visiondb.errors import ImageDecodeError
from visiondb.imaging import decode as decode_mod
from visiondb.imaging.decode import decode_array, decode_box
from visiondb.imaging.preprocess import EFFICIENTNET, IMAGENET_224, centre_crop, crop_bytes


def sliced(data: bytes, box, min_side):  # noqa: ANN001, ANN201 - a Box
    """What decode_box must return: the full decode, sliced."""
    pixels = decode_array(data, min_side)
    left, top, right, bottom = box(pixels.shape[1], pixels.shape[0])
    return pixels[top:bottom, left:right]


def test_the_region_decoder_is_built() -> None:
    assert decode_mod._jpegregion is not None  # `make install` compiles it against the system's libjpeg-turbo


@pytest.mark.parametrize("preprocessing", [EFFICIENTNET(224), EFFICIENTNET(260), IMAGENET_224], ids=lambda p: p.id)
def test_real_photo_crops_equal_full_decodes(preprocessing, clothing_photos: list[bytes],  # noqa: ANN001
                                             large_photos: list[bytes]) -> None:
    size, resize_to, interpolation = preprocessing.size, preprocessing.resize_to, preprocessing.interpolation
    for data in clothing_photos + large_photos:  # 400 px photos at full scale; up to 1944 px ones at 1/2 .. 1/8
        full = centre_crop(decode_array(data, min_side=resize_to), size, size, resize_to, interpolation)
        np.testing.assert_array_equal(crop_bytes(data, size, size, resize_to, interpolation), full)
        slot, expected = np.empty(preprocessing.shape, np.float32), np.empty(preprocessing.shape, np.float32)
        preprocessing.preprocess_bytes_into(data, slot)
        preprocessing.preprocess_into(decode_array(data, min_side=resize_to), expected)
        np.testing.assert_array_equal(slot, expected)


@pytest.mark.parametrize("layout", [
    {"subsampling": 2}, {"subsampling": 1}, {"subsampling": 0}, {"subsampling": 2, "progressive": True},
    {"subsampling": 2, "quality": 60, "optimize": True}, {"mode": "L"},
], ids=repr)
def test_generated_jpegs_of_every_layout_give_the_same_boxes(layout: dict) -> None:
    layout = dict(layout)
    mode = layout.pop("mode", "RGB")
    boxes = [
        lambda w, h: (0, 0, w, h),
        lambda w, h: (w - 1, h - 1, w, h),
        lambda w, h: (w // 3, h // 5, w // 3 + 17, h // 5 + 29),
        lambda w, h: (w // 2, 0, w, h // 2),
    ]
    for w, h in ((37, 53), (300, 200), (641, 481), (1001, 333)):
        data = encode(noise(w, h).convert(mode), "JPEG", quality=layout.pop("quality", 90), **layout)
        for min_side in (None, 64, 150):
            for box in boxes:
                np.testing.assert_array_equal(decode_box(data, box, min_side), sliced(data, box, min_side))


def _outcome(fn):  # noqa: ANN001, ANN202 - a callable
    """('ok', pixels) or ('error', the message's kind: truncated / corrupt / ...)."""
    try:
        return "ok", fn()
    except ImageDecodeError as exc:
        return "error", exc.message.split(":")[0]


def test_damage_anywhere_is_reported_as_a_full_decode_reports_it(clothing_photos: list[bytes]) -> None:
    """Rows below the box are still entropy-decoded: a file cut or damaged there fails like a full decode does."""
    data = clothing_photos[1]

    def box(w: int, h: int) -> tuple[int, int, int, int]:
        return w // 4, h // 4, w // 2, h // 2  # the file's last half of rows lies below it

    cases = [data[: int(len(data) * f)] for f in (0.5, 0.9, 0.98)]
    for at in (0.6, 0.9, 0.97):
        cut = int(len(data) * at)
        cases.append(data[:cut] + bytes(b ^ 0x5A for b in data[cut:cut + 16]) + data[cut + 16:])
    seen = set()
    for case in cases:
        region = _outcome(lambda: decode_box(case, box, 256))
        full = _outcome(lambda: sliced(case, box, 256))
        assert region[0] == full[0]
        if full[0] == "ok":
            np.testing.assert_array_equal(region[1], full[1])
        else:
            assert region[1] == full[1]
        seen.add(full[1] if full[0] == "error" else "ok")
    assert "truncated image data" in seen


def test_files_the_region_decoder_leaves_alone_come_out_as_before() -> None:
    """EXIF-oriented, CMYK and non-JPEG files take the full decode (upright, converted), then the box."""
    exif = Image.Exif()
    exif[0x0112] = 6
    files = [
        encode(noise(120, 80), "JPEG", exif=exif.tobytes()),
        encode(noise(120, 80).convert("CMYK"), "JPEG"),
        encode(noise(120, 80), "PNG"),
    ]

    def box(w: int, h: int) -> tuple[int, int, int, int]:
        return 3, 5, w - 7, h - 2

    for data in files:
        np.testing.assert_array_equal(decode_box(data, box, 64), sliced(data, box, 64))
    assert decode_box(files[0], lambda w, h: (0, 0, w, h), None).shape == (120, 80, 3)  # turned upright


def test_images_a_few_pixels_wide_give_the_same_boxes() -> None:
    """Under 8 px a side, several M/8 scales give the same reduced size and the full decode may pick another
    one; such images take the full decode."""
    for w in range(1, 12):
        for h in (1, 3, 5, 7, 9):
            data = encode(noise(w, h, seed=w * 16 + h), "JPEG", quality=95)
            for min_side in (None, 1, 2, 3):
                np.testing.assert_array_equal(
                    decode_box(data, lambda W, H: (0, 0, W, H), min_side), decode_array(data, min_side))


UNUSUAL_SAMPLING_JPEG = "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAMCAgMCAgMDAwMEAwMEBQgFBQQEBQoHBwYIDAoMDAsKCwsNDhIQDQ4RDgsLEBYQERMUFRUVDA8XGBYUGBIUFRT/2wBDAQMEBAUEBQkFBQkUDQsNFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBT/wAARCAAQABADARQAAhEBAxEB/8QAHwAAAQUBAQEBAQEAAAAAAAAAAAECAwQFBgcICQoL/8QAtRAAAgEDAwIEAwUFBAQAAAF9AQIDAAQRBRIhMUEGE1FhByJxFDKBkaEII0KxwRVS0fAkM2JyggkKFhcYGRolJicoKSo0NTY3ODk6Q0RFRkdISUpTVFVWV1hZWmNkZWZnaGlqc3R1dnd4eXqDhIWGh4iJipKTlJWWl5iZmqKjpKWmp6ipqrKztLW2t7i5usLDxMXGx8jJytLT1NXW19jZ2uHi4+Tl5ufo6erx8vP09fb3+Pn6/8QAHwEAAwEBAQEBAQEBAQAAAAAAAAECAwQFBgcICQoL/8QAtREAAgECBAQDBAcFBAQAAQJ3AAECAxEEBSExBhJBUQdhcRMiMoEIFEKRobHBCSMzUvAVYnLRChYkNOEl8RcYGRomJygpKjU2Nzg5OkNERUZHSElKU1RVVldYWVpjZGVmZ2hpanN0dXZ3eHl6goOEhYaHiImKkpOUlZaXmJmaoqOkpaanqKmqsrO0tba3uLm6wsPExcbHyMnK0tPU1dbX2Nna4uPk5ebn6Onq8vP09fb3+Pn6/9oADAMBAAIRAxEAPwD5I8C/Ca6geGyNu8l1coDEEiBUMwO4uy/MOhGT3BAGFOPs/wAHfCV4Z7qK6jCqAo8yNWG7JIDFFIzjg8Alew6GiivEw+IqVIKTe3+Xnc/n3IOM85fs5Or8WvXvbTXyPJfA/wAIhIw86yLSwTJG+NxBIYCRvmT7vIxt5zzyOV+1PCfwogtVklFsss7kktIWICuBwwzjbtVAMljnIHI+Uor3sNialSScn3/C2vr5o/pTh3jTOnHldXRW/K/5n//Z"
"""A 16 x 16 JPEG whose luma is sampled 1 x 4 (made with libjpeg's own encoder; Pillow cannot write one)."""


def test_a_subsampling_simplejpeg_cannot_name_decodes() -> None:
    """simplejpeg's header reader raises KeyError on a 1 x 4 luma sampling; the decode goes through Pillow's header
    instead of failing with that KeyError."""
    import base64

    data = base64.b64decode(UNUSUAL_SAMPLING_JPEG)
    full = decode_array(data)
    assert full.shape == (16, 16, 3)
    np.testing.assert_array_equal(decode_box(data, lambda w, h: (2, 3, w, h), None), full[3:, 2:])
