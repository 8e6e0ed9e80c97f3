"""import.idx (Fashion-MNIST IDX files, local gz and over HTTP) and import.openimages (fixture served locally)."""
from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import visiondb
from visiondb.errors import VisionDBError
from visiondb.ingest.idx import read_idx
from tests.ingest.fixtures.openimages.make import IMAGES, write_fixture
from tests.support.httpserver import TestHTTPServer
from tests.support.paths import FASHION_MNIST

NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


@pytest.fixture(scope="module")
def fmnist() -> Path:
    if not (FASHION_MNIST / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"Fashion-MNIST IDX files not found under {FASHION_MNIST}")
    return FASHION_MNIST


def test_import_idx_local_gz(fmnist: Path) -> None:
    db = visiondb.connect()
    run = db.procedures.put("idx", {"type": "import.idx", "params": {
        "imagesUrl": str(fmnist / "t10k-images-idx3-ubyte.gz"), "labelsUrl": str(fmnist / "t10k-labels-idx1-ubyte.gz"),
        "outputDataset": "fm", "labelNames": NAMES, "limit": 300}})["status"]["firstRun"]
    assert run["status"]["rowCount"] == 300 and run["status"]["imageShape"] == [28, 28]
    pixels = read_idx(gzip.decompress((fmnist / "t10k-images-idx3-ubyte.gz").read_bytes()))
    labels = read_idx(gzip.decompress((fmnist / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    rows = db.sql("SELECT _rowName, image, label FROM fm ORDER BY _rowName::INT").fetchall()
    assert [r[0] for r in rows[:3]] == ["0", "1", "2"]
    for name, image, label in (rows[0], rows[123]):
        i = int(name)
        assert label == NAMES[labels[i]] and image["format"] == "PNG" and (image["width"], image["height"]) == (28, 28)
        decoded = np.asarray(Image.open(io.BytesIO(db.media.get(image["sha256"]))))
        assert np.array_equal(decoded, pixels[i])
    inline = db.sql("SELECT count(*) FROM vdb.blobs").fetchall()[0][0]
    assert inline >= len({r[1]["sha256"] for r in rows})  # tiny PNGs are stored inline


def test_import_idx_over_http_plain_and_int_labels(fmnist: Path, tmp_path: Path) -> None:
    (tmp_path / "lab.idx").write_bytes(gzip.decompress((fmnist / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    (tmp_path / "img.gz").write_bytes((fmnist / "t10k-images-idx3-ubyte.gz").read_bytes())
    with TestHTTPServer(tmp_path) as srv:
        db = visiondb.connect()
        db.procedures.put("idx", {"type": "import.idx", "params": {
            "imagesUrl": srv.url("img.gz"), "labelsUrl": srv.url("lab.idx"), "outputDataset": "fm", "limit": 50}})
        assert db.sql("SELECT count(*), min(label), max(label), typeof(any_value(label)) FROM fm").fetchall() == [
            (50, 0, 9, "BIGINT")]
        with pytest.raises(VisionDBError, match="labelNames"):
            db.procedures.put("bad", {"type": "import.idx", "params": {"imagesUrl": srv.url("img.gz"), "limit": 50,
                               "labelsUrl": srv.url("lab.idx"), "outputDataset": "x", "labelNames": ["a", "b"]}})
        with pytest.raises(VisionDBError, match="missing.idx"):
            db.procedures.put("gone", {"type": "import.idx", "params": {"imagesUrl": srv.url("missing.idx"),
                                       "outputDataset": "y"}})


def test_import_openimages_crops(tmp_path: Path) -> None:
    with TestHTTPServer(tmp_path) as srv:
        write_fixture(tmp_path / "oi", srv.url("oi").rstrip("/"))
        params = {
            "classDescriptionsUrl": srv.url("oi/class-descriptions-boxable.csv"),
            "boxesUrl": srv.url("oi/train-annotations-bbox.csv"),
            "imageIdsUrl": srv.url("oi/train-images-boxable-with-rotation.csv"),
            "classes": ["Cat", "Dog", "/m/02xwb"], "split": "train", "outputDataset": "crops",
            "ratePerHost": 50, "concurrency": 4, "format": "png",
        }
        db = visiondb.connect()
        run = db.procedures.put("oi", {"type": "import.openimages", "params": params})["status"]["firstRun"]
        assert run["status"]["rowCount"] == 4 and run["status"]["imagesFetched"] == 3
        per_class = dict(db.sql("SELECT label, count(*) FROM crops GROUP BY label").fetchall())
        assert per_class == {"Cat": 2, "Dog": 1, "Fish": 1}  # 000c3 is in validation
        rows = {r[0]: r[1:] for r in db.sql(
            "SELECT _rowName, label_name, box_left, box_top, box_right, box_bottom, image, source_image FROM crops"
        ).fetchall()}
        expected = {}
        for image_id, subset, (w, h), rects in IMAGES:
            if subset != "train":
                continue
            for label, x0, x1, y0, y1, rgb in rects:
                expected[(image_id, label)] = ((round(x0 * w), round(y0 * h), round(x1 * w), round(y1 * h)), rgb)
        for name, (label_name, *box, image, source) in rows.items():
            want, rgb = expected[(name.rsplit("_", 1)[0], label_name)]
            assert tuple(box) == want
            crop = Image.open(io.BytesIO(db.media.get(image["sha256"]))).convert("RGB")
            assert crop.size == (want[2] - want[0], want[3] - want[1])
            assert {tuple(c) for c in np.asarray(crop).reshape(-1, 3)} == {rgb}  # exactly the painted rectangle
            assert source["uri"].endswith(f"{name.rsplit('_', 1)[0]}.png")
        fetched = sum(v for k, v in srv.hits.items() if k.startswith("/oi/images/"))
        assert fetched == 3
        srv.reset()
        again = db.procedures.run("oi")
        assert again["status"]["alreadyPresent"] == 4 and again["status"]["imagesFetched"] == 0
        assert not [k for k in srv.hits if k.startswith("/oi/images/")]
        db.sql("DELETE FROM crops WHERE _rowName = '000a1_1'")
        again = db.procedures.run("oi")
        assert again["status"]["imported"] == 1 and srv.hits["/oi/images/000a1.png"] == 1
        assert db.sql("SELECT count(*), count(DISTINCT _rowName) FROM crops").fetchall() == [(4, 4)]
        limited = dict(params, limitPerClass=1, outputDataset="one", format="jpeg", split=None)
        db.procedures.put("oi1", {"type": "import.openimages", "params": limited})
        assert db.sql("SELECT label, count(*), any_value(image.format) FROM one GROUP BY label ORDER BY label"
                      ).fetchall() == [("Cat", 1, "JPEG"), ("Dog", 1, "JPEG"), ("Fish", 1, "JPEG")]
