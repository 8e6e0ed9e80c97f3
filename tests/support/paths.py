"""Locations of the shared read-only datasets, computed from the repository root (never hard-coded)."""
from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DATASETS = REPO_ROOT / ".." / "shared" / "datasets"
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def dataset(name: str) -> Path:
    """Path of a shared dataset folder such as "hymenoptera" or "clothing"."""
    return DATASETS / name
