"""Training inputs are checked before any fold trains: an undecodable image is named by its dataset row."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import visiondb
from visiondb.errors import TrainingError
from visiondb.learn.experiment import run_experiment


def _png(pixels: np.ndarray, path: Path | None = None) -> bytes:
    """Write (or return) an 8x8 greyscale PNG."""
    import io

    buf = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8), "L").save(buf, format="PNG")
    if path is not None:
        path.write_bytes(buf.getvalue())
    return buf.getvalue()


@pytest.fixture()
def image_table(tmp_path):
    """A DB with a table `t(_rowName, image, label)` of 12 PNG files, row `r9` pointing at bytes that are no image."""
    rng = np.random.default_rng(0)
    db = visiondb.connect(None)
    db.sql("CREATE TABLE t(_rowName VARCHAR, image VARCHAR, label VARCHAR)")
    for i in range(12):
        path = tmp_path / f"{i}.png"
        _png(rng.random((8, 8)) * 255 if i % 2 else np.zeros((8, 8)), path)
        db.sql("INSERT INTO t VALUES (?, ?, ?)", [f"r{i}", str(path), "ab"[i % 2]])
    (tmp_path / "bad.png").write_bytes(b"not an image at all")
    db.sql("UPDATE t SET image = ? WHERE _rowName = 'r9'", [str(tmp_path / "bad.png")])
    yield db
    db.close()


def test_experiment_names_the_undecodable_row_before_training(image_table) -> None:
    db = image_table
    with pytest.raises(TrainingError, match=r"image: row 'r9': cannot decode image: not a recognised image format") as info:
        db.procedures.put("e", {"type": "classifier.experiment", "params": {
            "experimentName": "x", "inputData": "SELECT * FROM t", "algorithm": "mlp_pixels",
            "configuration": {"epochs": 1, "imageSize": [8, 8]}}})
    assert info.value.details["row"] == "r9"
    assert info.value.details["run"]["progress"].get("last") is None  # no epoch ran
    assert db.sql("SELECT count(*) FROM vdb.models").fetchone()[0] == 0


def test_train_without_row_names_names_the_position(image_table) -> None:
    db = image_table
    with pytest.raises(TrainingError, match=r"image: row 9: cannot decode image"):
        db.procedures.put("tr", {"type": "classifier.train", "params": {
            "functionName": "f", "inputData": "SELECT image, label FROM t ORDER BY _rowName[2:]::INT",
            "algorithm": "mlp_pixels", "configuration": {"epochs": 1, "imageSize": [8, 8]}}})


def test_run_experiment_checks_every_image_first() -> None:
    rng = np.random.default_rng(1)
    X = np.array([_png(rng.random((8, 8)) * 255) for _ in range(10)], dtype=object)
    X[3], X[7] = b"\x89PNG\r\n\x1a\n broken", b"garbage"
    y = np.array(["ab"[i % 2] for i in range(10)], dtype=object)
    events: list[dict] = []
    with pytest.raises(TrainingError, match=r"row 3: cannot decode image.*2 undecodable images: row 3, row 7") as info:
        run_experiment(X, y, algorithm="mlp_pixels", params={"epochs": 1, "imageSize": [8, 8]}, on_progress=events.append)
    assert info.value.details["rows"] == [3, 7] and events == []
