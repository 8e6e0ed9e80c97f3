"""The model registry inside the DuckDB file (`vdb.models`): versioned models with manifest and metrics."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core.catalog import now
from ..errors import NotFoundError

if TYPE_CHECKING:
    from ..engine import VisionDB


@dataclass
class ModelEntry:
    """One stored model version; `config` holds algorithm, params, labels and the input spec."""

    name: str
    version: int
    algorithm: str
    config: dict
    manifest: dict
    metrics: dict
    model_format: str
    model_sha256: str
    model_bytes: bytes
    created: str | None = None

    def describe(self) -> dict:
        return {
            "name": self.name,
            "version": self.version,
            "algorithm": self.algorithm,
            "params": self.config.get("params", {}),
            "labels": self.config.get("labels", []),
            "metrics": self.metrics,
            "modelFormat": self.model_format,
            "modelSha256": self.model_sha256,
            "trainingRows": len(self.manifest.get("rows", [])),
            "codeVersion": self.manifest.get("codeVersion"),
            "created": self.created,
        }


def save_model(
    db: "VisionDB", name: str, *, algorithm: str, config: dict, manifest: dict, metrics: dict, model_bytes: bytes,
    model_format: str, version: int | None = None,
) -> int:
    """Store a model as the next version of `name` (or an explicit version, e.g. on import)."""
    with db.catalog.lock:
        cur = db.cursor()
        if version is None:
            version = cur.execute("SELECT coalesce(max(version), 0) + 1 FROM vdb.models WHERE name = ?", [name]).fetchall()[0][0]
        db.catalog.upsert("vdb.models", {"name": name, "version": version}, {
            "algorithm": algorithm, "config": json.dumps(config, default=str),
            "manifest": json.dumps(manifest, default=str), "metrics": json.dumps(metrics, default=str),
            "model_format": model_format, "model_sha256": hashlib.sha256(model_bytes).hexdigest(),
            "model_bytes": model_bytes, "created": now(),
        })
    return int(version)


def load_model_entry(db: "VisionDB", name: str, version: int | None = None) -> ModelEntry:
    query = (
        "SELECT name, version, algorithm, config, manifest, metrics, model_format, model_sha256, model_bytes, created"
        " FROM vdb.models WHERE name = ?"
    )
    args: list[Any] = [name]
    if version is not None:
        query += " AND version = ?"
        args.append(version)
    # aux cursor: scorers load their model lazily, from inside the query that first calls them
    rows = db.aux_cursor().execute(query + " ORDER BY version DESC LIMIT 1", args).fetchall()
    if not rows:
        what = f"{name}:{version}" if version is not None else name
        raise NotFoundError(f"model {what!r} is not in the model registry", model=what)
    r = rows[0]
    return ModelEntry(
        r[0], r[1], r[2], json.loads(r[3]), json.loads(r[4]), json.loads(r[5]), r[6], r[7], bytes(r[8]),
        r[9].isoformat() if r[9] else None,
    )


def load_model_config(db: "VisionDB", name: str, version: int | None = None) -> dict:
    """Only the config of a stored model (no weights read)."""
    rows = db.aux_cursor().execute(
        "SELECT config FROM vdb.models WHERE name = ? AND (? IS NULL OR version = ?) ORDER BY version DESC LIMIT 1",
        [name, version, version],
    ).fetchall()
    if not rows:
        what = f"{name}:{version}" if version is not None else name
        raise NotFoundError(f"model {what!r} is not in the model registry", model=what)
    return json.loads(rows[0][0])


def list_models(db: "VisionDB") -> list[dict]:
    rows = db.cursor().execute("SELECT name, max(version) FROM vdb.models GROUP BY name ORDER BY name").fetchall()
    return [load_model_entry(db, name, version).describe() for name, version in rows]


def parse_model_ref(ref: str) -> tuple[str, int | None]:
    """`NAME` or `NAME:VERSION`."""
    if ":" in ref:
        name, _, version = ref.rpartition(":")
        if version.isdigit():
            return name, int(version)
    return ref, None
