"""Model registry: versions, export → import in a fresh DB, tampering refused, retrain, batch predictions, stacking."""
from __future__ import annotations

import zipfile

import numpy as np
import pytest

import visiondb
from visiondb.errors import VisionDBError
from visiondb.learn.model_store import list_models
from visiondb.learn.packages import export_model, import_package, retrain_model


@pytest.fixture(scope="module")
def trained(tmp_path_factory, bees_csv):
    path = tmp_path_factory.mktemp("reg") / "reg.duckdb"
    db = visiondb.connect(path)
    db.procedures.put("imp", {"type": "import.images", "params": {"dataFileUrl": str(bees_csv), "outputDataset": "bees"}})
    db.functions.put("lite0", {"type": "image.embedding", "params": {"model": "efficientnet_lite0"}})
    db.functions.put("mnet", {"type": "image.embedding", "params": {"model": "mobilenet_v2"}})
    db.procedures.put("feat", {"type": "transform", "params": {
        "inputData": "SELECT label, split, lite0(image) AS f0, mnet(image) AS f1, f0 AS features FROM bees",
        "outputDataset": "feats"}})
    db.procedures.put("exp", {"type": "classifier.experiment", "params": {
        "experimentName": "bees", "inputData": "SELECT features, label, split FROM feats",
        "datasetFolds": [{"trainingWhere": "split = 'train'", "testingWhere": "split = 'val'"}]}})
    yield db, path
    db.close()


def test_versions_and_listing(trained):
    db, _ = trained
    db.procedures.run("exp")
    models = {m["name"]: m for m in list_models(db)}
    assert models["bees_scorer_0"]["version"] == 2 and models["bees_scorer_0"]["trainingRows"] == 24
    assert db.functions.get("bees_scorer_0")["config"]["params"]["version"] == 2


def test_export_import_gives_identical_scores(trained, tmp_path):
    db, _ = trained
    package = export_model(db, "bees_scorer_0", tmp_path / "bees.vdbm")
    scores = db.sql("SELECT bees_scorer_0(features) AS s FROM feats ORDER BY _rowName").fetchall()
    vectors = db.sql("SELECT features FROM feats ORDER BY _rowName").fetchall()
    with visiondb.connect(tmp_path / "fresh.duckdb") as fresh:
        name, version = import_package(fresh, package)
        assert (name, version) == ("bees_scorer_0", 2)
        again = fresh.sql("SELECT bees_scorer_0(features) FROM (SELECT unnest(?::FLOAT[][]) AS features)",
                          [[v[0] for v in vectors]]).fetchall()
    for (a,), (b,) in zip(scores, again):
        assert a["label"] == b["label"]
        assert dict(a["scores"]) == dict(b["scores"])


def test_tampered_package_is_refused(trained, tmp_path):
    db, _ = trained
    package = export_model(db, "bees_scorer_0", tmp_path / "ok.vdbm")
    tampered = tmp_path / "tampered.vdbm"
    with zipfile.ZipFile(package) as src, zipfile.ZipFile(tampered, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename.startswith("model."):
                data = data[:-1] + bytes([data[-1] ^ 0xFF])
            dst.writestr(item, data)
    with visiondb.connect(tmp_path / "other.duckdb") as other:
        with pytest.raises(VisionDBError, match="sha256"):
            import_package(other, tampered)


def test_retrain_reproduces_metrics(trained):
    db, _ = trained
    report = retrain_model(db, "bees_scorer_0")
    assert report["trainRows"] == 24 and report["testRows"] == 16
    assert abs(report["accuracyDelta"]) < 1e-9 and report["maxProbabilityDifference"] < 1e-6


def test_classifier_predict_writes_a_table(trained):
    db, _ = trained
    run = db.procedures.put("pred", {"type": "classifier.predict", "params": {
        "inputData": "SELECT _rowName, label, features FROM feats WHERE split = 'val'",
        "functionName": "bees_scorer_0", "outputDataset": "val_predictions"}})
    status = run["status"]["firstRun"]["status"]
    assert status["rowCount"] == 16 and 0.7 <= status["accuracy"] <= 1.0
    row = db.sql("SELECT predicted, probability, p_ants + p_bees FROM val_predictions LIMIT 1").fetchone()
    assert row[0] in ("ants", "bees") and 0.5 <= row[1] <= 1.0 and abs(row[2] - 1.0) < 1e-6
    per_class = db.sql("SELECT label, avg((predicted = label)::INT) FROM val_predictions GROUP BY label").fetchall()
    assert len(per_class) == 2


def test_stacking_scorer_takes_each_backbone(trained):
    db, _ = trained
    run = db.procedures.put("stack", {"type": "classifier.experiment", "params": {
        "experimentName": "stack", "algorithm": "stacking",
        "inputData": "SELECT f0, f1, label, split FROM feats",
        "configuration": {"baseLearners": [{"features": "f0"}, {"features": "f1"}], "folds": 3},
        "datasetFolds": [{"trainingWhere": "split = 'train'", "testingWhere": "split = 'val'"}]}})
    assert run["status"]["firstRun"]["status"]["folds"][0]["resultsTest"]["accuracy"] >= 0.7
    (out,), = db.sql("SELECT stack_scorer_0(f0, f1) FROM feats LIMIT 1").fetchall()
    assert out["label"] in ("ants", "bees")
    with pytest.raises(visiondb.QueryError):
        db.sql("SELECT stack_scorer_0(f0) FROM feats")
    assert np.isclose(sum(dict(out["scores"]).values()), 1.0)


def test_classifier_function_from_a_package_file(trained, tmp_path):
    db, _ = trained
    package = export_model(db, "bees_scorer_0", tmp_path / "pkg.vdbm")
    vectors = [v[0] for v in db.sql("SELECT features FROM feats ORDER BY _rowName LIMIT 5").fetchall()]
    expected = db.sql("SELECT bees_scorer_0(features).label FROM feats ORDER BY _rowName LIMIT 5").fetchall()
    with visiondb.connect(tmp_path / "by_file.duckdb") as other:
        other.functions.put("bee_model", {"type": "classifier", "params": {"modelFileUrl": str(package)}})
        got = other.sql("SELECT bee_model(f).label FROM (SELECT unnest(?::FLOAT[][]) AS f)", [vectors]).fetchall()
        assert got == expected
        assert other.functions.apply("bee_model", {"features": vectors[0]})["label"] == expected[0][0]
