"""A real HTTP server on 127.0.0.1 for tests: serves files under a root plus failure-injecting routes.

Usage::

    from tests.support.httpserver import TestHTTPServer
    with TestHTTPServer(tmp_path, slow_seconds=3.0) as srv:
        url = srv.url("cats/1.jpg")        # http://127.0.0.1:<port>/cats/1.jpg
        srv.hits["/cats/1.jpg"]           # requests seen per path (query string stripped)
        srv.add("/x.bin", b"...", "application/octet-stream")   # serve in-memory bytes
        srv.reset()                        # clear hits and the flaky counters

Special routes (take precedence over files):
  /missing.jpg     -> 404
  /flaky.jpg       -> 500 on the first request, then 200 with a real JPEG (`srv.jpeg`); the counter is
                      per path, so /flaky/<anything> behaves the same way for each distinct path
  /slow.jpg        -> sleeps `slow_seconds` (default 3 s) before answering 200 with the JPEG
  /loop/a <-> /loop/b  -> 302 redirect loop
  /redirect/<path> -> 302 to /<path>
  /goto?<url>      -> 302 to the (absolute) URL given as the query string
  /page.jpg        -> an HTML page with Content-Type: text/html
  /truncated.jpg   -> the first half of the JPEG, Content-Type: image/jpeg
  /status/<code>   -> an empty response with that status
Files are served with a guessed Content-Type and support `Range: bytes=<start>-[<end>]` (206).
Start/stop: the constructor starts a daemon thread on a free port; `.stop()` (or leaving `with`) shuts down.
"""
from __future__ import annotations

import io
import mimetypes
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from PIL import Image


def make_jpeg(width: int = 64, height: int = 48, color: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    """Encode a small real JPEG with Pillow (a coloured image with a gradient band)."""
    img = Image.new("RGB", (width, height), color)
    for x in range(width):
        img.putpixel((x, height // 2), (x * 255 // max(1, width - 1), 0, 255))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


class TestHTTPServer:
    """ThreadingHTTPServer on 127.0.0.1:<free port> in a daemon thread, with request counting per path."""

    __test__ = False  # not a pytest test class

    def __init__(self, root: Path | str | None = None, *, slow_seconds: float = 3.0) -> None:
        self.root = Path(root).resolve() if root is not None else None
        self.slow_seconds = slow_seconds
        self.jpeg = make_jpeg()
        self.hits: Counter[str] = Counter()
        self.extra: dict[str, tuple[bytes, str]] = {}
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name=f"test-http-{self.port}", daemon=True
        )
        self._thread.start()

    def url(self, path: str = "") -> str:
        """Absolute URL of `path` (leading slash optional) on this server."""
        return f"{self.base_url}/{path.lstrip('/')}"

    def add(self, path: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        """Serve `data` at `path` (exact match) with the given Content-Type."""
        self.extra["/" + path.lstrip("/")] = (data, content_type)

    def reset(self) -> None:
        """Forget request counts (which also re-arms the flaky routes)."""
        with self._lock:
            self.hits.clear()

    def _count(self, path: str) -> int:
        with self._lock:
            self.hits[path] += 1
            return self.hits[path]

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> TestHTTPServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _make_handler(srv: TestHTTPServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - silence test output
            pass

        def _send(self, code: int, body: bytes = b"", ctype: str = "application/octet-stream",
                  headers: dict[str, str] | None = None) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _redirect(self, location: str) -> None:
            self._send(302, b"", "text/plain", {"Location": location})

        def do_HEAD(self) -> None:  # noqa: N802
            self.do_GET()

        def do_GET(self) -> None:  # noqa: N802
            path = unquote(urlsplit(self.path).path)
            n = srv._count(path)
            if path == "/missing.jpg":
                return self._send(404, b"not found", "text/plain")
            if path == "/flaky.jpg" or path.startswith("/flaky/"):
                if n == 1:
                    return self._send(500, b"try again", "text/plain")
                return self._send(200, srv.jpeg, "image/jpeg")
            if path == "/slow.jpg":
                time.sleep(srv.slow_seconds)
                return self._send(200, srv.jpeg, "image/jpeg")
            if path == "/loop/a":
                return self._redirect("/loop/b")
            if path == "/loop/b":
                return self._redirect("/loop/a")
            if path == "/goto":
                return self._redirect(unquote(urlsplit(self.path).query))
            if path.startswith("/redirect/"):
                return self._redirect("/" + path[len("/redirect/"):])
            if path == "/page.jpg":
                return self._send(200, b"<!doctype html><html><body>Not here</body></html>", "text/html; charset=utf-8")
            if path == "/truncated.jpg":
                return self._send(200, srv.jpeg[: len(srv.jpeg) // 2], "image/jpeg")
            m = re.fullmatch(r"/status/(\d{3})", path)
            if m:
                return self._send(int(m.group(1)), b"", "text/plain")
            if path in srv.extra:
                body, ctype = srv.extra[path]
                return self._send_range(body, ctype)
            return self._serve_file(path)

        def _serve_file(self, path: str) -> None:
            if srv.root is None:
                return self._send(404, b"not found", "text/plain")
            target = (srv.root / path.lstrip("/")).resolve()
            if not target.is_relative_to(srv.root) or not target.is_file():
                return self._send(404, b"not found", "text/plain")
            ctype = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
            self._send_range(target.read_bytes(), ctype)

        def _send_range(self, body: bytes, ctype: str) -> None:
            rng = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", "").strip())
            if not rng:
                return self._send(200, body, ctype, {"Accept-Ranges": "bytes"})
            start = int(rng.group(1))
            end = min(int(rng.group(2)) if rng.group(2) else len(body) - 1, len(body) - 1)
            if start >= len(body) or start > end:
                return self._send(416, b"", ctype, {"Content-Range": f"bytes */{len(body)}"})
            self._send(206, body[start:end + 1], ctype, {"Content-Range": f"bytes {start}-{end}/{len(body)}"})

    return Handler
