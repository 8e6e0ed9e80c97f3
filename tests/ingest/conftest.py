"""Fixtures for ingest tests: the repo root on sys.path, a live local HTTP server, and small real JPEGs."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.httpserver import TestHTTPServer, make_jpeg  # noqa: E402


@pytest.fixture(scope="module")
def www(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A served folder with a few real JPEGs under img/."""
    root = tmp_path_factory.mktemp("www")
    (root / "img").mkdir()
    for i, color in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        (root / "img" / f"{i}.jpg").write_bytes(make_jpeg(32, 24, color))
    return root


@pytest.fixture(scope="module")
def server(www: Path):
    """A real HTTP server on 127.0.0.1 serving `www` with the special failure routes (slow = 3 s)."""
    with TestHTTPServer(www, slow_seconds=3.0) as srv:
        yield srv
