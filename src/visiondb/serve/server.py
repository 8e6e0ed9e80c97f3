"""`serve(...)`: open the database once and run the REST app under uvicorn (one worker, blocking)."""
from __future__ import annotations

import argparse
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


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m visiondb.serve.server DB [--port N] ...` (the `visiondb serve` CLI calls `serve` alike)."""
    ap = argparse.ArgumentParser(prog="visiondb-serve", description=serve.__doc__)
    ap.add_argument("db", help="database file (created if missing)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--token", default=None, help="bearer token for writes (default: env VISIONDB_TOKEN)")
    ap.add_argument("--allow-root", action="append", default=[], dest="allow_roots",
                    help="local folder REST requests may read (repeatable); none = no local files")
    ap.add_argument("--allow-fetch", action="append", default=[], help="private IP/CIDR URLs may reach")
    ap.add_argument("--protect-reads", action="store_true")
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--warm", action="append", default=[], help="function id to load and warm at startup")
    ap.add_argument("--log-level", default="warning")
    a = ap.parse_args(argv)
    serve(a.db, a.host, a.port, token=a.token, allow_roots=a.allow_roots, allow_fetch=a.allow_fetch,
          protect_reads=a.protect_reads, max_batch=a.max_batch, max_wait_ms=a.max_wait_ms, warm=a.warm,
          log_level=a.log_level)


if __name__ == "__main__":
    main()
