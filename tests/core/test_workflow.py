"""The MLDB car-brand workflow in miniature: embed in SQL, transform, classifier.experiment, scorer, predictor."""
from __future__ import annotations

import numpy as np
import pytest

import visiondb
from visiondb.errors import ConfigError, TrainingError


@pytest.fixture
def bees_db(tmp_path, bees_csv):
    db = visiondb.connect(tmp_path / "bees.duckdb")
    db.procedures.put("imp", {"type": "import.images", "params": {"dataFileUrl": str(bees_csv), "outputDataset": "bees"}})
    db.functions.put("effnet", {"type": "image.embedding", "params": {"model": "efficientnet_lite0"}})
    db.procedures.put("feat", {"type": "transform", "params": {
        "inputData": "SELECT label, split, effnet(image) AS features FROM bees", "outputDataset": "bees_features",
        "chunkSize": 16}})
    yield db
    db.close()


def test_embedding_in_sql_returns_pooled_vectors(bees_db):
    (vec,), = bees_db.sql("SELECT effnet(image) FROM bees LIMIT 1").fetchall()
    assert len(vec) == 1280 and np.isfinite(vec).all()
    uri = bees_db.sql("SELECT image.uri FROM bees LIMIT 1").fetchone()[0]
    by_uri = bees_db.functions.apply("effnet", {"url": uri})["embedding"]
    by_value = bees_db.sql("SELECT effnet(image) FROM bees WHERE image.uri = ?", [uri]).fetchone()[0]
    np.testing.assert_allclose(by_uri, by_value, atol=1e-6)
    rows = bees_db.sql("SELECT count(*), count(DISTINCT _rowName) FROM bees_features").fetchone()
    assert rows == (40, 40)


def test_logits_layer_and_struct_literal_input(bees_db):
    bees_db.functions.put("effnet_logits", {"type": "image.embedding", "params": {"layer": "logits"}})
    (vec,), = bees_db.sql("SELECT effnet_logits({'url': image.uri}) FROM bees LIMIT 1").fetchall()
    assert len(vec) == 1000


def test_experiment_scorer_and_predictor(bees_db, tmp_path):
    run = bees_db.procedures.put("exp", {"type": "classifier.experiment", "params": {
        "experimentName": "bees_cls",
        "inputData": "SELECT features, label, split FROM bees_features",
        "datasetFolds": [{"trainingWhere": "split = 'train'", "testingWhere": "split = 'val'"}]}})
    fold = run["status"]["firstRun"]["status"]["folds"][0]
    results = fold["resultsTest"]
    assert fold["functionName"] == "bees_cls_scorer_0" and fold["testRows"] == 16
    assert results["accuracy"] >= 0.8
    assert set(results["labelStatistics"]) == {"ants", "bees"}
    assert {"precision", "recall", "f1Score", "support", "accuracy"} <= set(results["labelStatistics"]["ants"])
    assert sum(c["count"] for c in results["confusionMatrix"]) == 16
    (out,), = bees_db.sql("SELECT bees_cls_scorer_0(features) FROM bees_features LIMIT 1").fetchall()
    assert out["label"] in ("ants", "bees")
    bees_db.functions.put("bee_predictor", {"type": "sql.expression",
                                            "params": {"expression": "bees_cls_scorer_0(effnet(url)) AS *"}})
    uri = bees_db.sql("SELECT image.uri FROM bees WHERE split = 'val' LIMIT 1").fetchone()[0]
    applied = bees_db.functions.apply("bee_predictor", {"url": uri})
    assert applied["label"] in ("ants", "bees") and set(dict(applied["scores"])) == {"ants", "bees"}
    path = tmp_path / "bees.duckdb"
    bees_db.close()
    with visiondb.connect(path) as again:  # a new connection scores without retraining
        (label,), = again.sql("SELECT bee_predictor(?).label", [uri]).fetchall()
        assert label == applied["label"]


def test_kfold_and_testing_override(bees_db):
    run = bees_db.procedures.put("kf", {"type": "classifier.experiment", "params": {
        "experimentName": "kf", "inputData": "SELECT features, label FROM bees_features", "kfold": 3}})
    status = run["status"]["firstRun"]["status"]
    assert len(status["folds"]) == 3 and "mean" in status["aggregatedTest"]["accuracy"]
    assert bees_db.functions.exists("kf_scorer_2")
    run = bees_db.procedures.put("ov", {"type": "classifier.experiment", "params": {
        "experimentName": "ov", "algorithm": "random_forest",
        "inputData": "SELECT features, label FROM bees_features WHERE split = 'train'",
        "testingDataOverride": "SELECT features, label FROM bees_features WHERE split = 'val'"}})
    assert run["status"]["firstRun"]["status"]["folds"][0]["testRows"] == 16


def test_training_errors_are_clear(bees_db):
    with pytest.raises(TrainingError, match="single class|one class"):
        bees_db.procedures.put("one", {"type": "classifier.experiment", "params": {
            "experimentName": "one", "inputData": "SELECT features, 'ants' AS label FROM bees_features"}})
    with pytest.raises(ConfigError, match="algorithm"):
        bees_db.procedures.put("alg", {"type": "classifier.experiment", "params": {
            "experimentName": "alg", "algorithm": "magic", "inputData": "SELECT features, label FROM bees_features"}})
    with pytest.raises(TrainingError, match="label"):
        bees_db.procedures.put("nolabel", {"type": "classifier.experiment", "params": {
            "experimentName": "nolabel", "inputData": "SELECT features FROM bees_features"}})


def test_cached_vectors_skip_the_network(bees_db):
    fn = bees_db.functions.instance("effnet")
    before = fn.forward_rows
    bees_db.procedures.run("feat")
    assert fn.forward_rows == before
    assert bees_db.sql("SELECT count(*) FROM bees_features").fetchone()[0] == 40
