"""Model persistence round trips and `.vdbm` packages (hash verification refuses tampering)."""
from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from visiondb.errors import VisionDBError
from visiondb.learn.algorithms import make_estimator
from visiondb.learn.package import make_manifest, read_package, write_package
from visiondb.learn.persistence import dump_model, load_model

CASES = [
    ("logistic_regression", {}, "features", "sklearn-joblib"),
    ("linear_svm", {}, "features", "sklearn-joblib"),
    ("random_forest", {"nEstimators": 10}, "features", "sklearn-joblib"),
    ("boosted_trees", {"maxIter": 5}, "features", "sklearn-joblib"),
    ("mlp", {"epochs": 2}, "features", "torch-safetensors"),
    ("mlp_pixels", {"epochs": 1}, "images", "torch-safetensors"),
    ("cnn", {"epochs": 1, "channels": [4, 8], "dense": 16}, "images", "torch-safetensors"),
]


def _data(kind, fm_features, fm_images):
    if kind == "features":
        X, y = fm_features
        return X[:200, ::4], y[:200], X[200:240, ::4]
    x_tr, y_tr, x_te, _ = fm_images
    return x_tr[:120], y_tr[:120], x_te[:40]


@pytest.mark.parametrize("algorithm, params, kind, fmt", CASES)
def test_round_trip_identical_probabilities(algorithm, params, kind, fmt, fm_features, fm_images) -> None:
    X, y, X_new = _data(kind, fm_features, fm_images)
    model = make_estimator(algorithm, params, seed=0, class_weight=None).fit(X, y)
    data, got_fmt = dump_model(model)
    assert got_fmt == fmt
    loaded = load_model(data, got_fmt)
    assert np.array_equal(loaded.predict_proba(X_new), model.predict_proba(X_new))
    assert list(loaded.predict(X_new)) == list(model.predict(X_new))


def test_round_trip_finetune_and_stacking(hymenoptera, fm_features) -> None:
    data, labels = hymenoptera
    ft = make_estimator("finetune", {"epochs": 1, "imageSize": [64, 64], "freeze": 15}, seed=0, class_weight=None)
    ft.fit(data[:16:2], labels[:16:2])
    blob, fmt = dump_model(ft)
    assert np.array_equal(load_model(blob, fmt).predict_proba(data[1::3]), ft.predict_proba(data[1::3]))
    X, y = fm_features
    views = [X[:150, ::8], X[:150, 1::8]]
    stack = make_estimator("stacking", {"baseLearners": [
        {"features": "a", "algorithm": "mlp", "params": {"epochs": 2}},
        {"features": "b", "algorithm": "random_forest", "params": {"nEstimators": 5}}]}, seed=0, class_weight=None)
    stack.fit(views, y[:150])
    blob, fmt = dump_model(stack)
    assert fmt == "stacking-zip"
    assert np.array_equal(load_model(blob, fmt).predict_proba(views), stack.predict_proba(views))


def test_package_round_trip_and_tamper(tmp_path, fm_features) -> None:
    X, y = fm_features
    model = make_estimator("mlp", {"epochs": 2}, seed=0, class_weight=None).fit(X[:100], y[:100])
    blob, fmt = dump_model(model)
    manifest = make_manifest([f"row{i}" for i in range(100)], [f"{i:064x}" for i in range(100)])
    config = {"name": "fm", "version": 1, "algorithm": "mlp", "params": {"epochs": 2}, "labels": list(model.classes_),
              "input": {"type": "features", "dim": 784, "dtype": "float32"}}
    path = write_package(tmp_path / "fm.vdbm", model_bytes=blob, model_format=fmt, config=config, manifest=manifest,
                         metrics={"accuracy": 0.5})
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
    assert names == {"model.safetensors", "config.json", "manifest.json", "metrics.json", "requirements.txt", "hashes.json"}
    pkg = read_package(path)
    assert pkg.model_bytes == blob and pkg.config["labels"] == list(model.classes_) and pkg.metrics == {"accuracy": 0.5}
    assert "torch==" in pkg.requirements and "scikit-learn==" in pkg.requirements
    assert len(pkg.manifest["rows"]) == 100 and "numpy" in pkg.manifest["libraries"]
    restored = load_model(pkg.model_bytes, pkg.model_format)
    assert np.array_equal(restored.predict_proba(X[100:110]), model.predict_proba(X[100:110]))

    # Rewrite the archive with one byte of the weights flipped, keeping the recorded hashes.
    tampered = tmp_path / "tampered.vdbm"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tampered, "w") as dst:
        for name in src.namelist():
            member = bytearray(src.read(name))
            if name == "model.safetensors":
                member[len(member) // 2] ^= 0xFF
            dst.writestr(name, bytes(member))
    with pytest.raises(VisionDBError, match="package tampered.vdbm: member model.safetensors does not match its recorded sha256"):
        read_package(tampered)

    # A raw byte flipped inside the compressed file is refused too.
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("model.safetensors")
    raw[info.header_offset + 30 + len(info.filename) + 100] ^= 0x01
    corrupt = tmp_path / "corrupt.vdbm"
    corrupt.write_bytes(bytes(raw))
    with pytest.raises(VisionDBError, match="member model.safetensors does not match its recorded sha256"):
        read_package(corrupt)
    json.loads(json.dumps(pkg.manifest))


def test_package_model_helpers(tmp_path, fm_features) -> None:
    from visiondb.learn.package import load_package_model, package_model

    X, y = fm_features
    model = make_estimator("logistic_regression", {}, seed=0, class_weight=None).fit(X[:100, ::4], y[:100])
    path = package_model(tmp_path / "lr.vdbm", model, name="lr", version=2, algorithm="logistic_regression", params={},
                         labels=list(model.classes_), input_spec={"type": "features", "dim": 196},
                         manifest=make_manifest([1, 2], ["a" * 64, "b" * 64]), metrics={})
    loaded, pkg = load_package_model(path)
    assert pkg.model_format == "sklearn-joblib" and pkg.config["version"] == 2
    assert "torch" not in pkg.requirements and "scikit-learn==" in pkg.requirements
    assert np.array_equal(loaded.predict_proba(X[100:120, ::4]), model.predict_proba(X[100:120, ::4]))


def test_malformed_packages_name_the_problem(tmp_path) -> None:
    """Hand-made packages whose hashes all match but whose members are not what a package holds, and unreadable
    paths: clear errors, never a JSONDecodeError, KeyError or OSError."""
    import hashlib

    from visiondb.errors import FetchError

    def package(name: str, members: dict[str, bytes]) -> object:
        hashes = {k: hashlib.sha256(v).hexdigest() for k, v in members.items()}
        with zipfile.ZipFile(tmp_path / name, "w") as zf:
            for member, data in members.items():
                zf.writestr(member, data)
            zf.writestr("hashes.json", json.dumps(hashes))
        return tmp_path / name

    good = {"model.bin": b"x", "config.json": b"{}", "manifest.json": b"{}", "metrics.json": b"{}",
            "requirements.txt": b""}
    for name, members, needle in (
        ("notjson.vdbm", {**good, "config.json": b"{nope"}, "missing or malformed"),
        ("list.vdbm", {**good, "config.json": b"[1]"}, "missing or malformed"),
        ("nomanifest.vdbm", {k: v for k, v in good.items() if k != "manifest.json"}, "missing or malformed"),
        ("binary.vdbm", {**good, "requirements.txt": b"\xff\xfe"}, "missing or malformed"),
    ):
        with pytest.raises(VisionDBError, match=needle):
            read_package(package(name, members))
    with zipfile.ZipFile(tmp_path / "badhashes.vdbm", "w") as zf:
        zf.writestr("hashes.json", b"[not json")
    with pytest.raises(VisionDBError, match="hashes.json is malformed"):
        read_package(tmp_path / "badhashes.vdbm")
    for path in (tmp_path / "absent.vdbm", tmp_path):
        with pytest.raises(FetchError, match="cannot read it"):
            read_package(path)
