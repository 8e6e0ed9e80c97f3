"""Fixtures for source tests: repo root on sys.path, quiet progress, remote SQL engines (skipped when down)."""
from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("VISIONDB_PROGRESS", "0")

SERVERS = {
    "mariadb": "mysql+pymysql://root@127.0.0.1:3306/test",
    "postgresql": "postgresql+psycopg://postgres@127.0.0.1:5432/test",
}


def datasets_dir() -> Path:
    """The shared datasets folder, computed from the repository root (`<repo>/../shared/datasets`)."""
    return ROOT / ".." / "shared" / "datasets"


def server_url(name: str) -> str:
    """The URL of a running server, or skip the test naming why it cannot be reached."""
    import sqlalchemy as sa

    url = os.environ.get(f"VISIONDB_TEST_{name.upper()}_URL", SERVERS[name])
    engine = sa.create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1")).fetchall()
    except Exception as exc:  # noqa: BLE001 - any failure means "not available here"
        pytest.skip(f"{name} server unreachable at {engine.url.render_as_string(hide_password=True)}: "
                    f"{str(exc).splitlines()[0][:200]}")
    finally:
        engine.dispose()
    return url


@pytest.fixture(params=["mariadb", "postgresql"])
def remote_url(request: pytest.FixtureRequest) -> str:
    """Each remote server in turn (skipped when unreachable)."""
    return server_url(request.param)


@pytest.fixture
def table_name() -> Iterator[str]:
    """A unique table-name prefix for the shared databases."""
    yield f"vdbt_{uuid.uuid4().hex[:10]}"
