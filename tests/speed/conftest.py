"""Fixtures for the featurization speed-path tests: real photos and a shared ONNX export cache."""
from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

os.environ.setdefault("VISIONDB_PROGRESS", "0")


def datasets_root() -> Path:
    """The shared datasets folder, found relative to the repository root (repo/../shared/datasets)."""
    return (Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets").resolve()


@pytest.fixture(scope="session")
def photos() -> list[Path]:
    """Twelve real JPEGs of mixed sizes: six hymenoptera photos and six clothing photos."""
    root = datasets_root()
    if not (root / "hymenoptera" / "labels.csv").is_file():
        pytest.skip(f"shared datasets not found at {root}")
    picked: list[Path] = []
    for name in ("hymenoptera", "clothing"):
        with open(root / name / "labels.csv", newline="") as fh:
            rows = sorted((r for r in csv.DictReader(fh) if r["path"].endswith(".jpg")), key=lambda r: r["path"])
        picked += [root / name / r["path"] for r in rows[:: max(1, len(rows) // 6)][:6]]
    return picked


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One model cache (exported ONNX files) for every database in the session: export once."""
    return tmp_path_factory.mktemp("vdb-cache")


def write_uri_csv(path: Path, uris: list[str]) -> Path:
    """A CSV of image URIs for `import.images`."""
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["uri"])
        writer.writerows([u] for u in uris)
    return path
