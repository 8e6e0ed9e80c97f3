"""`classifier` functions score row by row: an unreadable or undecodable image, NaN/inf features or a vector of
another width is that row's error (NULL output in a transform), never a made-up label or an aborted statement."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

import visiondb
from visiondb.errors import ImageDecodeError, VisionDBError


def _write_pngs(folder: Path, n: int) -> list[tuple[str, str]]:
    """`n` 8x8 greyscale PNGs: label `a` noise, label `b` black."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        label = "a" if i % 2 else "b"
        pixels = (rng.random((8, 8)) * 255 if label == "a" else np.zeros((8, 8))).astype(np.uint8)
        path = folder / f"{i}.png"
        Image.fromarray(pixels, "L").save(path)
        rows.append((str(path), label))
    return rows


@pytest.fixture(scope="module")
def image_db(tmp_path_factory):
    """A DB with an `mlp_pixels` scorer `clf` trained on 12 tiny PNGs, and a scoring table `s`."""
    folder = tmp_path_factory.mktemp("imgs")
    rows = _write_pngs(folder, 12)
    (folder / "bad.png").write_bytes(b"not an image at all")
    db = visiondb.connect(None)
    db.sql("CREATE TABLE t(image VARCHAR, label VARCHAR)")
    for path, label in rows:
        db.sql("INSERT INTO t VALUES (?, ?)", [path, label])
    db.procedures.put("tr", {"type": "classifier.train", "params": {
        "inputData": "SELECT image, label FROM t", "algorithm": "mlp_pixels", "functionName": "clf",
        "configuration": {"epochs": 2, "imageSize": [8, 8]}}})
    db.sql("CREATE TABLE s(image VARCHAR)")
    for path in [rows[0][0], str(folder / "missing.png"), rows[1][0], str(folder / "bad.png")]:
        db.sql("INSERT INTO s VALUES (?)", [path])
    yield db, folder, rows
    db.close()


def test_unreadable_and_undecodable_images_score_null_and_are_named(image_db) -> None:
    db, folder, rows = image_db
    run = db.procedures.put("tf", {"type": "transform", "params": {
        "inputData": "SELECT image, clf(image) AS p FROM s", "outputDataset": "out"}})["status"]["firstRun"]
    assert run["state"] == "finished" and run["status"]["errorCount"] == 2
    causes = {e["uri"]: e["cause"] for e in run["errors"]}
    assert "no such file" in causes[str(folder / "missing.png")]
    assert causes[str(folder / "bad.png")] == "cannot decode image: not a recognised image format"
    out = dict(db.sql("SELECT image, p FROM out").fetchall())
    assert out[str(folder / "missing.png")] is None and out[str(folder / "bad.png")] is None
    for path, _ in rows[:2]:
        assert out[path]["label"] in ("a", "b") and abs(sum(out[path]["scores"].values()) - 1) < 1e-6
    # the good rows score as they do alone
    alone = db.sql("SELECT clf(?)", [rows[0][0]]).fetchone()[0]
    assert alone["scores"] == pytest.approx(out[rows[0][0]]["scores"], abs=1e-6)


def test_undecodable_image_without_error_sink_names_the_image(image_db) -> None:
    db, folder, rows = image_db
    with pytest.raises(Exception, match=r"clf\(.*bad\.png\): cannot decode image") as info:
        db.sql("SELECT clf(image) FROM s WHERE image NOT LIKE '%missing%'").fetchall()
    assert "row 2" not in str(info.value)
    with pytest.raises(ImageDecodeError, match=r"bad\.png"):
        db.functions.instance("clf").predict_proba([pa.array([json.dumps(str(folder / "bad.png"))])])


@pytest.fixture(scope="module")
def feature_db():
    """A DB with a logistic-regression scorer `clf` on 3-d features."""
    db = visiondb.connect(None)
    rng = np.random.default_rng(0)
    db.sql("CREATE TABLE t(features FLOAT[], label VARCHAR)")
    for i in range(30):
        db.sql("INSERT INTO t VALUES (?, ?)", [(rng.normal(size=3) + (2 if i % 2 else -2)).tolist(), "ab"[i % 2]])
    db.procedures.put("tr", {"type": "classifier.train", "params": {"inputData": "SELECT * FROM t", "functionName": "clf"}})
    yield db
    db.close()


def test_bad_feature_rows_are_row_errors(feature_db) -> None:
    db = feature_db
    db.sql("CREATE OR REPLACE TABLE s(_rowName VARCHAR, features FLOAT[])")
    db.sql("INSERT INTO s VALUES ('ok1', [1, 1, 1]), ('nan', [1, 'nan'::FLOAT, 1]), ('inf', [1, 'inf'::FLOAT, 1]),"
           " ('short', [1, 1]), ('ok2', [-1, -1, -1])")
    run = db.procedures.put("tf", {"type": "transform", "params": {
        "inputData": "SELECT _rowName, clf(features) AS p FROM s", "outputDataset": "fout"}})["status"]["firstRun"]
    assert run["state"] == "finished" and run["status"]["errorCount"] == 3
    causes = sorted(e["cause"] for e in run["errors"])
    assert causes == ["features has 2 values but the model was trained on 3",
                      "features has NaN or infinite values", "features has NaN or infinite values"]
    assert any(e["uri"] == "features [1, nan, 1] (3 values)" for e in run["errors"])
    out = dict(db.sql("SELECT _rowName, p FROM fout").fetchall())
    assert out["nan"] is None and out["inf"] is None and out["short"] is None
    assert out["ok1"]["label"] == "b" and out["ok2"]["label"] == "a"
    alone = db.sql("SELECT clf([1, 1, 1]::FLOAT[])").fetchone()[0]["scores"]
    assert out["ok1"]["scores"] == pytest.approx(alone, abs=1e-6)


def test_bad_feature_rows_without_sink_and_wrong_function_errors(feature_db) -> None:
    db = feature_db
    with pytest.raises(Exception, match=r"clf\(features \[1, nan, 1\] \(3 values\)\): features has NaN"):
        db.sql("SELECT clf(f) FROM (VALUES ([1, 1, 1]::FLOAT[]), ([1, 'nan'::FLOAT, 1]::FLOAT[])) v(f)").fetchall()
    # every row of another width: the wrong function for this data, one statement-level error
    db.sql("CREATE OR REPLACE TABLE w(_rowName VARCHAR, features FLOAT[])")
    db.sql("INSERT INTO w VALUES ('a', [1, 1, 1, 1]), ('b', [2, 2, 2, 2])")
    with pytest.raises(VisionDBError, match="input 0 has 4 features but the model was trained on 3"):
        db.procedures.put("tw", {"type": "transform", "params": {
            "inputData": "SELECT _rowName, clf(features) AS p FROM w", "outputDataset": "wout"}})
