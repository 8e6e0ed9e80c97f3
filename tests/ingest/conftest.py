"""Fixtures for ingest tests: the repo root on sys.path, live local HTTP servers, and small real JPEGs."""
from __future__ import annotations

import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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


@pytest.fixture(scope="module")
def odd_server():
    """A real HTTP server on 127.0.0.1 with routes the shared test server lacks: `/gzip-lie` (Content-Encoding gzip
    over bytes that are not gzip), `/drip` (50 body bytes, one every 0.1 s) and `/ok` (a real JPEG)."""
    jpeg = make_jpeg(40, 40)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - silence test output
            pass

        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/gzip-lie":
                return self._send(b"this is not gzip", {"Content-Encoding": "gzip"})
            if self.path == "/drip":
                self.send_response(200)
                self.send_header("Content-Length", "50")
                self.end_headers()
                for _ in range(50):
                    try:
                        self.wfile.write(b"x")
                        self.wfile.flush()
                    except OSError:  # the client gave up
                        return
                    time.sleep(0.1)
                return None
            return self._send(jpeg, {"Content-Type": "image/jpeg"})

        def _send(self, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
