"""MLDB's car-brand notebook over HTTP: import URLs, embed in SQL, transform, experiment, predictor, apply."""
from __future__ import annotations

from pathlib import Path

import pytest
import requests

from tests.serve.conftest import TOKEN, clothing_test_files
from tests.serve.live import LiveServer
from tests.support.httpserver import TestHTTPServer
from visiondb import Client
from visiondb.core.registry import PROCEDURE_TYPES
from visiondb.errors import VisionDBError

CLASSES = ["pants", "shoes", "t-shirt"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, clothing: Path):
    if "classifier.experiment" not in PROCEDURE_TYPES.names():
        pytest.skip("classifier.experiment is not registered")
    photos = clothing_test_files(CLASSES, per_class=20)
    with TestHTTPServer(clothing) as www:
        lines = ["brand,url"] + [f"{label},{www.url(str(p.relative_to(clothing)))}" for label, p in photos]
        www.add("/brands.csv", ("\n".join(lines) + "\n").encode(), "text/csv")
        with LiveServer(tmp_path_factory.mktemp("db") / "cars.vdb", token=TOKEN, allow_fetch=["127.0.0.1"]) as srv:
            yield srv, www, photos


def test_car_brand_notebook_over_http(setup) -> None:
    srv, www, photos = setup
    mldb = Client(srv.url, token=TOKEN)
    mldb.put("/v1/functions/effnet", {"type": "image.embedding", "params": {"model": "efficientnet_lite0"}})
    imported = mldb.post("/v1/procedures", {"type": "import.text", "params": {
        "dataFileUrl": www.url("brands.csv"), "select": "brand AS label, url", "outputDataset": "images"}})
    assert imported["status"]["firstRun"]["status"]["rowCount"] == 60
    counts = mldb.query("SELECT label, count(*) AS n FROM images GROUP BY label ORDER BY label")
    assert counts["label"].tolist() == CLASSES and counts["n"].tolist() == [20, 20, 20]
    # transform through the client's tracked background run (progress bar from the run's progress)
    run = mldb.put_and_track("/v1/procedures/embed", {"type": "transform", "params": {
        "inputData": "SELECT label, effnet(url) AS features FROM images", "outputDataset": "features",
        "chunkSize": 16}}, poll=0.2)
    assert run["state"] == "finished"
    assert mldb.query("SELECT count(*) AS n FROM features")["n"].tolist() == [60]
    exp = requests.post(f"{srv.url}/v1/procedures", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=600, json={
        "type": "classifier.experiment", "params": {
            "experimentName": "brands", "inputData": "SELECT features, label FROM features", "testFraction": 0.5,
            "randomSeed": 1}})
    assert exp.status_code == 201, exp.text
    results = exp.json()["status"]["firstRun"]["status"]["folds"][0]["resultsTest"]
    assert set(results["labelStatistics"]) == set(CLASSES)
    assert sum(c["count"] for c in results["confusionMatrix"]) == 30
    assert results["accuracy"] >= 0.7
    mldb.put("/v1/functions/brand_predictor", {"type": "sql.expression",
                                                "params": {"expression": "brands_scorer_0(effnet(url))"}})
    label, path = photos[5]
    url = www.url(str(path.relative_to(path.parents[2])))  # clothing/<split>/<class>/<file>
    got = mldb.get("/v1/functions/brand_predictor/application", input={"url": url})
    assert got["label"] in CLASSES and set(got["scores"]) == set(CLASSES)
    upload = requests.post(f"{srv.url}/v1/functions/brand_predictor/application", timeout=120,
                           files={"file": ("p.jpg", path.read_bytes())}).json()
    assert upload["label"] == got["label"] and upload["timing_ms"] > 0
    # a failing tracked run raises with the run record
    with pytest.raises(VisionDBError, match="nothing_here"):
        mldb.put_and_track("/v1/procedures/bad", {"type": "transform", "params": {
            "inputData": "SELECT * FROM nothing_here", "outputDataset": "never"}}, poll=0.1)
    mldb.close()
