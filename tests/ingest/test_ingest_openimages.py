"""Open Images box selection from CSVs in the real format, and exact pixel crops of coloured boxes."""
from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support.httpserver import TestHTTPServer
from visiondb.errors import ConfigError
from visiondb.ingest import Fetcher, FetchPolicy, crop_box, select_boxes
from visiondb.ingest.openimages import BoxRecord, box_pixels

_spec = importlib.util.spec_from_file_location("oi_fixture", Path(__file__).parent / "fixtures/openimages/make.py")
oi = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(oi)  # type: ignore[union-attr]


@pytest.fixture()
def fixture(tmp_path: Path):
    with TestHTTPServer(tmp_path) as srv:
        d = oi.write_fixture(tmp_path, srv.base_url)
        csvs = [(d / n).read_bytes() for n in ("class-descriptions-boxable.csv", "train-annotations-bbox.csv",
                                               "train-images-boxable-with-rotation.csv")]
        yield srv, csvs


def test_select_and_crop(fixture) -> None:
    srv, (classes, boxes, ids) = fixture
    sel = select_boxes(classes, boxes, ids, ["Cat", "/m/0bt9lr"], None, "train")
    assert [(b.image_id, b.class_name) for b in sel] == [("000a1", "Cat"), ("000b2", "Cat"), ("000a1", "Dog")]
    assert all(b.split == "train" for b in sel)
    rect = {(i, lab): (x0, x1, y0, y1, rgb) for i, _, _, rs in oi.IMAGES for lab, x0, x1, y0, y1, rgb in rs}
    with Fetcher(FetchPolicy(allow_fetch=["127.0.0.1"], block_private=True)) as f:
        for box in sel:
            img = Image.open(io.BytesIO(f.read_image(box.url))).convert("RGB")
            crop = crop_box(img, box)
            x0, x1, y0, y1, rgb = rect[(box.image_id, box.label_name)]
            w, h = img.size
            assert crop.size == (round(x1 * w) - round(x0 * w), round(y1 * h) - round(y0 * h))
            arr = np.asarray(crop)
            assert (arr == np.array(rgb, dtype=np.uint8)).all()  # exactly the coloured rectangle


def test_limits_splits_and_errors(fixture) -> None:
    _, (classes, boxes, ids) = fixture
    assert [b.image_id for b in select_boxes(classes, boxes, ids, ["cat"], 1, None)] == ["000a1"]
    assert [b.image_id for b in select_boxes(classes, boxes, ids, ["Cat"], None, "validation")] == ["000c3"]
    assert len(select_boxes(classes, boxes, ids, ["Cat", "Fish"], None, None)) == 4
    with pytest.raises(ConfigError, match="'Unicorn'"):
        select_boxes(classes, boxes, ids, ["Unicorn"], None, None)


def test_crop_clamps_and_keeps_one_pixel() -> None:
    img = Image.new("RGB", (10, 10))
    box = BoxRecord("x", "u", "c", "/m/x", -0.2, 1.3, 0.99, 0.99, None)
    assert box_pixels(img.size, box) == (0, 9, 10, 10)
    assert crop_box(img, box).size == (10, 1)
