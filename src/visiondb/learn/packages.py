"""Export, import and retrain registry models as `.vdbm` packages (data manifest, code, environment, metrics)."""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError, VisionDBError
from ..ingest.fetch import parse_uri
from .model_store import load_model_entry, parse_model_ref, save_model

if TYPE_CHECKING:
    from ..engine import VisionDB

log = logging.getLogger(__name__)


def package_target(db: "VisionDB", uri: str | Path, field: str = "path") -> Path:
    """The local file a package may be written to: a path or file:// URI under the database's allowed roots (a
    server's `allow_roots`), so a REST-configured procedure cannot write anywhere else. Raises naming `field`."""
    parsed = parse_uri(str(uri))
    if parsed.kind != "local" or parsed.path is None:
        raise ConfigError(f"{field}: packages are written to a local path or file:// URI, got {str(uri)!r}", field=field)
    return db.fetcher.policy.check_path(parsed.path, str(uri))


def export_model(db: "VisionDB", ref: str, path: str | Path, field: str = "path") -> Path:
    """Write `NAME[:VERSION]` as one `.vdbm` file at a local path or file:// URI (see `package_target`)."""
    from .package import write_package

    target = package_target(db, path, field)
    name, version = parse_model_ref(ref)
    entry = load_model_entry(db, name, version)
    config = {**entry.config, "name": entry.name, "version": entry.version, "algorithm": entry.algorithm}
    return write_package(
        target, model_bytes=entry.model_bytes, model_format=entry.model_format, config=config,
        manifest=entry.manifest, metrics=entry.metrics,
    )


def import_package(db: "VisionDB", path: str | Path, *, register_function: bool = True) -> tuple[str, int]:
    """Verify a package's hashes, store it in the registry and register its scorer; returns (name, version).

    The package keeps its own NAME:VERSION when that is free or already holds the same model (importing a package
    twice is a no-op). A local model is never overwritten: when NAME:VERSION holds a different model, the import is
    stored under the version an earlier import of it got, else the next free version of NAME, and a warning names
    both hashes. Use the returned version (or `modelName`/`version` of a `classifier` function) to score with it."""
    from .package import read_package

    parsed = parse_uri(str(path))
    if parsed.kind == "local" and parsed.path is not None:
        local = db.fetcher.policy.check_path(parsed.path, str(path))  # a server's allowed roots apply here too
    else:
        data = db.read_uri(str(path))
        local = db.cache_dir / "packages" / f"{hashlib.sha256(data).hexdigest()[:16]}.vdbm"
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(data)
    package = read_package(local)
    config = dict(package.config)
    try:
        name, version, algorithm = str(config.pop("name")), int(config.pop("version")), str(config.pop("algorithm"))
    except (KeyError, TypeError, ValueError) as exc:
        raise VisionDBError(f"package {local.name}: config.json needs a name, an integer version and an algorithm"
                            f" ({type(exc).__name__}: {exc})", file=str(local)) from None
    config.pop("modelFormat", None)
    config.pop("packageVersion", None)
    config["algorithm"] = algorithm
    sha = hashlib.sha256(package.model_bytes).hexdigest()
    with db.catalog.lock:
        stored = import_version(db, name, version, sha)
        created = stored is None
        if created:
            stored = save_model(
                db, name, algorithm=algorithm, config=config, manifest=package.manifest, metrics=package.metrics,
                model_bytes=package.model_bytes, model_format=package.model_format,
                version=None if stored_hash(db, name, version) else version,
            )
    if created and stored != version:  # said once, when the import chose another version, not at every reopen
        log.warning(
            "package %s: model %s:%d already holds a different model (sha256 %s, package %s); imported as %s:%d",
            local.name, name, version, stored_hash(db, name, version), sha, name, stored,
        )
    if register_function:
        db.functions.put(name, {"type": "classifier", "params": {"modelName": name, "version": stored}})
    return name, stored


def stored_hash(db: "VisionDB", name: str, version: int) -> str | None:
    """The model sha256 stored under NAME:VERSION, None when that version is free."""
    rows = db.cursor().execute(
        "SELECT model_sha256 FROM vdb.models WHERE name = ? AND version = ?", [name, version]
    ).fetchall()
    return rows[0][0] if rows else None


def import_version(db: "VisionDB", name: str, version: int, sha: str) -> int | None:
    """The version of NAME that already holds the model `sha` (its own version first), None when none does."""
    rows = db.cursor().execute(
        "SELECT version FROM vdb.models WHERE name = ? AND model_sha256 = ? ORDER BY version = ? DESC, version",
        [name, sha, version],
    ).fetchall()
    return int(rows[0][0]) if rows else None


def retrain_model(db: "VisionDB", ref: str) -> dict[str, Any]:
    """Re-create a model from its manifest (same rows, checked by hash; same algorithm, params and seed) and compare."""
    from .algorithms.registry import make_estimator, release_device
    from .metrics import results_test
    from .procedures import TrainingData, run_query, with_testing_rows

    name, version = parse_model_ref(ref)
    entry = load_model_entry(db, name, version)
    procedure = entry.config.get("procedure") or {}
    params = procedure.get("params") or {}
    if "inputData" not in params:
        raise VisionDBError(f"model {name!r} has no recorded training query; it cannot be retrained", model=name)
    table = run_query(db, params["inputData"], "inputData")
    row_ids = None
    if params.get("testingDataOverride"):
        table, row_ids = with_testing_rows(db, table, params["testingDataOverride"])
        if not any(str(r["rowId"]).startswith("train:") for r in entry.manifest.get("rows", [])):
            row_ids = None  # a manifest written before ids were source-qualified
    data = TrainingData(
        db, table, entry.algorithm, entry.config.get("params", {}), entry.config.get("mode", "categorical"), row_ids
    )
    position = {r: i for i, r in enumerate(data.rows)}
    rows = entry.manifest.get("rows", [])
    missing = [r["rowId"] for r in rows if r["rowId"] not in position]
    if missing:
        raise VisionDBError(f"retrain {name}: {len(missing)} training rows are gone, e.g. {missing[0]!r}", model=name)
    changed = [r["rowId"] for r in rows if data.hashes[position[r["rowId"]]] != r["sha256"]]
    if changed:
        raise VisionDBError(f"retrain {name}: {len(changed)} training rows changed content, e.g. {changed[0]!r}", model=name)
    train_idx = np.asarray([position[r["rowId"]] for r in rows])
    model = make_estimator(
        entry.algorithm, entry.config.get("params", {}), seed=params.get("randomSeed", 0),
        class_weight=params.get("classWeight"),
    )
    model.fit(data.take(train_idx), data.y[train_idx])
    report: dict[str, Any] = {"model": f"{entry.name}:{entry.version}", "trainRows": len(train_idx)}
    test_ids = [r for r in entry.manifest.get("testRows", []) if r in position]
    if test_ids:
        test_idx = np.asarray([position[r] for r in test_ids])
        labels = entry.config.get("labels") or sorted(set(data.y[train_idx]))
        proba = model.predict_proba(data.take(test_idx))
        release_device(model)  # a throwaway: off the accelerator once scored
        pred = np.asarray([str(c) for c in model.classes_], dtype=object)[proba.argmax(axis=1)]
        retrained = results_test(data.y[test_idx], pred, labels, proba)
        from .persistence import load_model

        original = load_model(entry.model_bytes, entry.model_format)
        original_proba = original.predict_proba(data.take(test_idx))
        release_device(original)
        report.update(
            {
                "originalAccuracy": entry.metrics.get("accuracy"),
                "retrainedAccuracy": retrained["accuracy"],
                "accuracyDelta": retrained["accuracy"] - (entry.metrics.get("accuracy") or 0.0),
                "maxProbabilityDifference": float(np.abs(original_proba - proba).max()),
                "testRows": len(test_idx),
            }
        )
    return report
