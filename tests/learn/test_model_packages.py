"""Model packages and manifests: source-qualified row ids under testingDataOverride, imports never overwrite."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest

import visiondb
from visiondb.learn.packages import export_model, import_package, retrain_model


def _feature_db(labels: tuple[str, str], seed: int = 0, path=None) -> visiondb.VisionDB:  # noqa: ANN001
    """A DB (in memory, or at `path`) with a table `t(features, label)` of 30 separable 3-d rows and a scorer `clf`
    (model clf:1) on it."""
    db = visiondb.connect(path)
    rng = np.random.default_rng(seed)
    db.sql("CREATE TABLE t(features FLOAT[], label VARCHAR)")
    for i in range(30):
        db.sql("INSERT INTO t VALUES (?, ?)", [(rng.normal(size=3) + (2 if i % 2 else -2)).tolist(), labels[i % 2]])
    db.procedures.put("tr", {"type": "classifier.train", "params": {"inputData": "SELECT * FROM t", "functionName": "clf"}})
    return db


def test_testing_override_with_shared_row_names_retrains() -> None:
    db = visiondb.connect(None)
    rng = np.random.default_rng(0)
    for table, n in (("tr", 40), ("te", 20)):
        db.sql(f"CREATE TABLE {table}(_rowName VARCHAR, features FLOAT[], label VARCHAR)")
        for i in range(n):  # both tables name their rows 0, 1, 2, ...
            label = "ab"[i % 2]
            db.sql(f"INSERT INTO {table} VALUES (?, ?, ?)", [str(i), (rng.normal(size=4) + (1 if i % 2 else -1)).tolist(), label])
    db.procedures.put("e", {"type": "classifier.experiment", "params": {
        "experimentName": "x", "inputData": "SELECT * FROM tr", "testingDataOverride": "SELECT * FROM te"}})
    manifest = json.loads(db.sql("SELECT manifest FROM vdb.models WHERE name = 'x_scorer_0'").fetchone()[0])
    assert manifest["rows"][0]["rowId"] == "train:0" and len(manifest["rows"]) == 40
    assert manifest["testRows"][:2] == ["test:0", "test:1"] and len(manifest["testRows"]) == 20
    report = retrain_model(db, "x_scorer_0")
    assert report["trainRows"] == 40 and report["testRows"] == 20 and report["maxProbabilityDifference"] < 1e-9
    db.close()


def test_import_never_overwrites_a_different_local_model(tmp_path, caplog) -> None:
    with _feature_db(("cat", "dog")) as theirs:
        package = export_model(theirs, "clf", tmp_path / "clf.vdbm")
    with _feature_db(("ant", "bee")) as db:
        ours = db.sql("SELECT model_sha256 FROM vdb.models WHERE name = 'clf'").fetchone()[0]
        with caplog.at_level(logging.WARNING, logger="visiondb.learn.packages"):
            assert import_package(db, package, register_function=False) == ("clf", 2)
        assert "clf:1 already holds a different model" in caplog.text and ours in caplog.text
        assert import_package(db, package, register_function=False) == ("clf", 2)  # the same package again: no-op
        stored = db.sql("SELECT version, config->>'labels' FROM vdb.models WHERE name = 'clf' ORDER BY version").fetchall()
        assert stored == [(1, '["ant","bee"]'), (2, '["cat","dog"]')]
        assert db.sql("SELECT clf([2, 2, 2]::FLOAT[]).label").fetchone()[0] == "bee"  # our function is untouched
        db.functions.put("other", {"type": "classifier", "params": {"modelFileUrl": str(package)}})
        assert db.sql("SELECT other([2, 2, 2]::FLOAT[]).label").fetchone()[0] == "dog"
        assert db.sql("SELECT count(*) FROM vdb.models").fetchone()[0] == 2


def test_import_into_a_fresh_db_keeps_the_version(tmp_path) -> None:
    with _feature_db(("cat", "dog")) as theirs:
        package = export_model(theirs, "clf", tmp_path / "clf.vdbm")
        with visiondb.connect(None) as fresh:
            assert import_package(fresh, package) == ("clf", 1)
            assert import_package(theirs, package) == ("clf", 1)  # back into its own DB: the same model, a no-op
            assert theirs.sql("SELECT count(*) FROM vdb.models").fetchone()[0] == 1


def test_package_files_stay_under_the_allowed_roots(tmp_path) -> None:
    """With allowed roots (a server's), modelFileUrl writes and reads are checked like every other file param, and
    a refused target is refused before training."""
    from visiondb.errors import AccessDeniedError, ConfigError
    from visiondb.ingest.policy import FetchPolicy

    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir(), outside.mkdir()
    with _feature_db(("cat", "dog")) as theirs:
        stray = export_model(theirs, "clf", outside / "stray.vdbm")
    with visiondb.connect(None, fetch_policy=FetchPolicy(allowed_roots=[allowed])) as db:
        db.sql("CREATE TABLE t AS SELECT [i % 2, 1 - i % 2]::FLOAT[] AS features, ['a', 'b'][i % 2 + 1] AS label"
               " FROM range(20) r(i)")
        train = {"inputData": "SELECT * FROM t", "functionName": "m"}
        for url, error in ((outside / "m.vdbm", AccessDeniedError), (f"{allowed}/../outside/m.vdbm", AccessDeniedError),
                           ("http://127.0.0.1:9/m.vdbm", ConfigError)):
            with pytest.raises(error) as err:
                db.procedures.put("tr", {"type": "classifier.train", "params": {**train, "modelFileUrl": str(url)}})
            assert str(url) in err.value.message or err.value.details.get("field") == "params.modelFileUrl"
        assert not any(outside.glob("m.vdbm")) and db.sql("SELECT count(*) FROM vdb.models").fetchone() == (0,)
        db.procedures.put("tr", {"type": "classifier.train", "params": {**train, "modelFileUrl": f"file://{allowed}/m.vdbm"}})
        assert (allowed / "m.vdbm").is_file()
        with pytest.raises(AccessDeniedError):
            db.functions.put("f", {"type": "classifier", "params": {"modelFileUrl": str(stray)}})
        db.functions.put("g", {"type": "classifier", "params": {"modelFileUrl": str(allowed / "m.vdbm")}})


def test_folds_and_a_testing_override_are_refused_together() -> None:
    from visiondb.errors import ConfigError

    with _feature_db(("cat", "dog")) as db:
        with pytest.raises(ConfigError) as err:
            db.procedures.put("e", {"type": "classifier.experiment", "params": {
                "experimentName": "x", "inputData": "SELECT * FROM t", "testingDataOverride": "SELECT * FROM t",
                "datasetFolds": [{"trainingWhere": "true", "testingWhere": "true"}]}})
        assert "testingDataOverride" in err.value.message and err.value.details["field"] == "params.datasetFolds"


def test_a_package_import_that_chose_another_version_warns_once(tmp_path, caplog) -> None:
    with _feature_db(("cat", "dog")) as theirs:
        package = export_model(theirs, "clf", tmp_path / "clf.vdbm")
    path = tmp_path / "ours.vdb"
    with caplog.at_level(logging.WARNING, logger="visiondb.learn.packages"):
        with _feature_db(("ant", "bee"), path=path) as db:
            db.functions.put("theirs", {"type": "classifier", "params": {"modelFileUrl": str(package)}})
        for _ in range(2):  # the function's package is read again at every open: no new version, no new warning
            with visiondb.connect(path) as db:
                assert db.sql("SELECT theirs([2, 2, 2]::FLOAT[]).label").fetchone()[0] == "dog"
                assert db.sql("SELECT max(version) FROM vdb.models WHERE name = 'clf'").fetchone() == (2,)
    assert caplog.text.count("already holds a different model") == 1


def test_a_package_without_name_or_version_is_refused(tmp_path) -> None:
    import hashlib
    import zipfile

    from visiondb.errors import VisionDBError

    members = {"model.bin": b"x", "config.json": b'{"version": "one"}', "manifest.json": b"{}",
               "metrics.json": b"{}", "requirements.txt": b""}
    with zipfile.ZipFile(tmp_path / "odd.vdbm", "w") as zf:
        for member, data in members.items():
            zf.writestr(member, data)
        zf.writestr("hashes.json", json.dumps({k: hashlib.sha256(v).hexdigest() for k, v in members.items()}))
    with visiondb.connect(None) as db, pytest.raises(VisionDBError, match="needs a name, an integer version"):
        import_package(db, tmp_path / "odd.vdbm")
