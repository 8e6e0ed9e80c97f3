"""`serve(...)`: open the database once and run the REST app under uvicorn (one worker, blocking)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from .settings import MiB, ServerSettings


def serve(
    db_path: str | Path | None,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    token: str | None = None,
    allow_roots: Sequence[str | Path] = (),
    allow_fetch: Sequence[str] = (),
    protect_reads: bool = False,
    max_batch: int = 32,
    max_wait_ms: float = 5.0,
    query_timeout_s: float = 300.0,
    warm: Sequence[str] = (),
    max_body_mb: float = 32,
    log_level: str = "warning",
) -> None:
    """Serve `db_path` over HTTP until interrupted; the token defaults to env VISIONDB_TOKEN."""
    import uvicorn

    from ..engine import connect
    from .app import create_app

    settings = ServerSettings(
        token=token, protect_reads=protect_reads, allow_roots=tuple(allow_roots), allow_fetch=tuple(allow_fetch),
        max_batch=max_batch, max_wait_ms=max_wait_ms, warm=tuple(warm), max_body_bytes=int(max_body_mb * MiB),
        query_timeout_s=query_timeout_s,
    )
    db = connect(db_path)
    for problem in db.load_problems:
        logging.getLogger("visiondb.serve").warning("function %s did not load: %s", problem["function"],
                                                    problem["error"])
    try:
        app = create_app(db, settings)
        uvicorn.run(app, host=host, port=port, workers=1, access_log=False, log_level=log_level,
                    timeout_keep_alive=30)
    finally:
        db.close()
