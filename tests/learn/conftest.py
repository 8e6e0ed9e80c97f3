"""Shared small real datasets for the learning-library tests (Fashion-MNIST subsets, hymenoptera images)."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from visiondb.learn.reference_runs import FASHION_LABELS, encode_png, fashion_mnist_arrays

REPO_ROOT = Path(__file__).resolve().parents[2]


def datasets_root() -> Path:
    """The shared read-only datasets folder, next to the repository root."""
    return REPO_ROOT / ".." / "shared" / "datasets"


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    """Fixture form of `datasets_root()`."""
    return datasets_root()


@pytest.fixture(scope="session")
def fmnist() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Full Fashion-MNIST arrays (read once)."""
    return fashion_mnist_arrays()


@pytest.fixture(scope="session")
def fm_features(fmnist) -> tuple[np.ndarray, np.ndarray]:
    """500 training rows as 784-d float32 pixel features in [0, 1] with string labels."""
    x, y = fmnist[0][:500], fmnist[1][:500]
    labels = np.asarray(FASHION_LABELS, dtype=object)[y]
    return x.reshape(len(x), -1).astype(np.float32) / 255.0, labels


@pytest.fixture(scope="session")
def fm_images(fmnist) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """300 training and 200 test rows as PNG bytes, with string labels."""
    names = np.asarray(FASHION_LABELS, dtype=object)
    return encode_png(fmnist[0][:300]), names[fmnist[1][:300]], encode_png(fmnist[2][:200]), names[fmnist[3][:200]]


@pytest.fixture(scope="session")
def hymenoptera() -> tuple[np.ndarray, np.ndarray]:
    """24 real JPEG photos (12 ants, 12 bees) from the hymenoptera train split as bytes + labels."""
    root = datasets_root() / "hymenoptera"
    with open(root / "labels.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "train" and r["path"].lower().endswith(".jpg")]
    picked = [r for r in rows if r["label"] == "ants"][:12] + [r for r in rows if r["label"] == "bees"][:12]
    data = np.empty(len(picked), dtype=object)
    for i, r in enumerate(picked):
        path = Path(r["path"])
        data[i] = (path if path.is_absolute() else root / path).read_bytes()
    return data, np.asarray([r["label"] for r in picked], dtype=object)
