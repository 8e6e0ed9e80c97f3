"""`.vdbm` model packages: a zip of the model, config, training manifest, metrics, pinned requirements and sha256 hashes."""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import zipfile
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from visiondb.errors import FetchError, VisionDBError

PACKAGE_VERSION = 1
DEFAULT_LIBRARIES = ("visiondb", "numpy", "scikit-learn", "torch", "safetensors", "joblib", "pillow", "efficientnet-lite-pytorch")


def _model_member(model_format: str) -> str:
    """Member name for the model bytes: safetensors for torch networks, model.bin otherwise."""
    return "model.safetensors" if model_format == "torch-safetensors" else "model.bin"


def library_versions(names: tuple[str, ...] | list[str] = DEFAULT_LIBRARIES) -> dict[str, str]:
    """Installed versions of `names` (those not installed are left out)."""
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def libraries_for(model_format: str, algorithm: str | None = None) -> list[str]:
    """Libraries a model of this format actually needs at load time."""
    libs = ["numpy", "scikit-learn", "joblib"]
    if model_format in ("torch-safetensors", "stacking-zip"):
        libs += ["torch", "safetensors"]
    if algorithm == "finetune":
        libs += ["efficientnet-lite-pytorch", "pillow"]
    elif algorithm in ("mlp_pixels", "cnn"):
        libs.append("pillow")
    return libs


def make_manifest(row_ids: list[Any], content_hashes: list[str], *, code_version: str | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Training-data manifest: row ids + content hashes, code and library versions, creation time."""
    if len(row_ids) != len(content_hashes):
        raise VisionDBError(f"manifest: {len(row_ids)} row ids but {len(content_hashes)} content hashes")
    versions = library_versions()
    return {
        "rows": [{"rowId": r, "sha256": h} for r, h in zip(row_ids, content_hashes)],
        "codeVersion": code_version or versions.get("visiondb", "unknown"),
        "libraries": versions,
        "created": datetime.now(timezone.utc).isoformat(),
        **(extra or {}),
    }


@dataclass
class Package:
    """A verified `.vdbm` package read back from disk."""

    model_bytes: bytes
    model_format: str
    config: dict[str, Any]
    manifest: dict[str, Any]
    metrics: dict[str, Any]
    requirements: str
    hashes: dict[str, str]


def write_package(
    path: str | Path,
    *,
    model_bytes: bytes,
    model_format: str,
    config: dict[str, Any],
    manifest: dict[str, Any],
    metrics: dict[str, Any],
) -> Path:
    """Write a `.vdbm` zip; `config` should hold name, version, algorithm, params, labels and the input feature spec."""
    path = Path(path)
    config = {**config, "modelFormat": model_format, "packageVersion": PACKAGE_VERSION}
    versions = library_versions(libraries_for(model_format, config.get("algorithm")))
    members: dict[str, bytes] = {
        _model_member(model_format): model_bytes,
        "config.json": json.dumps(config, indent=1, sort_keys=True, default=str).encode(),
        "manifest.json": json.dumps(manifest, indent=1, default=str).encode(),
        "metrics.json": json.dumps(metrics, indent=1, default=str).encode(),
        "requirements.txt": "".join(f"{name}=={version}\n" for name, version in sorted(versions.items())).encode(),
    }
    hashes = {name: hashlib.sha256(data).hexdigest() for name, data in members.items()}
    members["hashes.json"] = json.dumps(hashes, indent=1, sort_keys=True).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def read_package(path: str | Path) -> Package:
    """Read a `.vdbm` package, refusing it when any member is missing or does not match its recorded sha256."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            if "hashes.json" not in names:
                raise VisionDBError(f"package {path.name}: missing hashes.json", file=str(path))
            hashes: dict[str, str] = json.loads(zf.read("hashes.json"))
            if not isinstance(hashes, dict) or not all(isinstance(v, str) for v in hashes.values()):
                raise VisionDBError(f"package {path.name}: hashes.json must map member names to sha256 digests",
                                    file=str(path))
            data: dict[str, bytes] = {}
            for name in sorted(names - {"hashes.json"} - set(hashes)):
                raise VisionDBError(f"package {path.name}: member {name} has no recorded sha256", file=str(path), member=name)
            for name, expected in hashes.items():
                if name not in names:
                    raise VisionDBError(f"package {path.name}: member {name} is missing", file=str(path), member=name)
                try:
                    blob = zf.read(name)
                except (zipfile.BadZipFile, OSError, zlib.error, EOFError) as exc:  # CRC failures on tampered compressed members
                    raise VisionDBError(
                        f"package {path.name}: member {name} does not match its recorded sha256 (tampered or corrupt)",
                        file=str(path), member=name, cause=str(exc),
                    ) from None
                if hashlib.sha256(blob).hexdigest() != expected:
                    raise VisionDBError(
                        f"package {path.name}: member {name} does not match its recorded sha256 (tampered or corrupt)",
                        file=str(path), member=name,
                    )
                data[name] = blob
    except zipfile.BadZipFile as exc:
        raise VisionDBError(f"package {path.name}: not a readable zip archive ({exc})", file=str(path)) from None
    except OSError as exc:  # missing, a folder, unreadable, a name too long
        raise FetchError(f"package {path.name[:120]}: cannot read it ({exc.strerror or exc})", uri=str(path)[:300]) from None
    except ValueError as exc:  # hashes.json is not JSON (or not UTF-8)
        raise VisionDBError(f"package {path.name}: hashes.json is malformed ({exc})", file=str(path)) from None
    try:
        config = json.loads(data["config.json"])
        if not isinstance(config, dict):
            raise ValueError("config.json must hold an object")
        fmt = config.get("modelFormat", "")
        model_name = _model_member(fmt)
        if model_name not in data:
            raise VisionDBError(f"package {path.name}: member {model_name} is missing", file=str(path), member=model_name)
        return Package(
            model_bytes=data[model_name],
            model_format=fmt,
            config=config,
            manifest=json.loads(data["manifest.json"]),
            metrics=json.loads(data["metrics.json"]),
            requirements=data["requirements.txt"].decode(),
            hashes=hashes,
        )
    except (KeyError, ValueError) as exc:  # a member missing from hashes.json's list, or not JSON / UTF-8
        raise VisionDBError(f"package {path.name}: a member is missing or malformed ({exc})", file=str(path)) from None


def package_model(
    path: str | Path,
    model: Any,
    *,
    name: str,
    version: int | str,
    algorithm: str,
    params: dict[str, Any],
    labels: list[str],
    input_spec: dict[str, Any],
    manifest: dict[str, Any],
    metrics: dict[str, Any],
) -> Path:
    """Serialise a fitted model (`persistence.dump_model`) and write it as a `.vdbm` package."""
    from visiondb.learn.persistence import dump_model

    model_bytes, model_format = dump_model(model)
    config = {"name": name, "version": version, "algorithm": algorithm, "params": params, "labels": labels, "input": input_spec}
    return write_package(path, model_bytes=model_bytes, model_format=model_format, config=config, manifest=manifest, metrics=metrics)


def load_package_model(path: str | Path) -> tuple[Any, Package]:
    """Read and verify a `.vdbm` package, then rebuild its model; returns (model, package)."""
    from visiondb.learn.persistence import load_model

    package = read_package(path)
    return load_model(package.model_bytes, package.model_format), package
