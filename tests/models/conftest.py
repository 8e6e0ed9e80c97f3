"""Shared fixtures for the models/imaging tests: dataset location and a few real photos."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest


def datasets_root() -> Path:
    """The shared datasets folder, found relative to the repository root (repo/../shared/datasets)."""
    repo_root = Path(__file__).resolve().parents[2]
    return (repo_root / ".." / "shared" / "datasets").resolve()


def clothing_test_paths(n: int) -> list[Path]:
    """The first n clothing test-split JPEGs, one class after another (deterministic)."""
    root = datasets_root() / "clothing"
    with open(root / "labels.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "test"]
    by_label: dict[str, list[str]] = {}
    for row in rows:
        by_label.setdefault(row["label"], []).append(row["path"])
    picked: list[Path] = []
    while len(picked) < n:
        for paths in by_label.values():
            if paths and len(picked) < n:
                picked.append(root / paths.pop(0))
    return picked


@pytest.fixture(scope="session")
def datasets() -> Path:
    root = datasets_root()
    if not (root / "clothing").is_dir():
        pytest.skip(f"shared datasets not found at {root}")
    return root


@pytest.fixture(scope="session")
def clothing_photos(datasets: Path) -> list[bytes]:
    """Bytes of 8 real clothing photos from different classes."""
    return [p.read_bytes() for p in clothing_test_paths(8)]


@pytest.fixture(scope="session")
def large_photos(datasets: Path) -> list[bytes]:
    """Bytes of the real hymenoptera JPEGs whose shorter side is >= 512 px (8 photos, up to 1944 px):
    the ones a 256 px minimum decodes at a reduced DCT scale."""
    import simplejpeg

    found = []
    for path in sorted((datasets / "hymenoptera").rglob("*.jpg")):
        data = path.read_bytes()
        height, width = simplejpeg.decode_jpeg_header(data)[:2]
        if min(height, width) >= 512:
            found.append(data)
    return found


@pytest.fixture(scope="session")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")
