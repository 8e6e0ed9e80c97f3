"""Fixtures for the REST tests: repo root on sys.path, quiet progress bars, dataset helpers, live servers."""
from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ["VISIONDB_PROGRESS"] = "0"

TOKEN = "s3cret-token"


def datasets_root() -> Path:
    """The shared datasets folder, computed from the repository root (repo/../shared/datasets)."""
    return (ROOT / ".." / "shared" / "datasets").resolve()


def clothing_test_files(classes: list[str] | None = None, per_class: int = 4) -> list[tuple[str, Path]]:
    """(label, path) of real clothing test photos, `per_class` from each class, deterministic order."""
    root = datasets_root() / "clothing"
    with open(root / "labels.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "test"]
    picked: dict[str, list[Path]] = {}
    for row in rows:
        if classes is not None and row["label"] not in classes:
            continue
        paths = picked.setdefault(row["label"], [])
        if len(paths) < per_class:
            paths.append(root / row["path"])
    return [(label, p) for label, paths in picked.items() for p in paths]


@pytest.fixture(scope="session")
def clothing() -> Path:
    root = datasets_root() / "clothing"
    if not root.is_dir():
        pytest.skip(f"shared datasets not found at {root}")
    return root
