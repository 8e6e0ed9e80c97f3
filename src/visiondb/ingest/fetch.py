"""Read bytes from a local path, file://, http(s):// or `archive+<inner-uri>#<member>`, under a FetchPolicy.

HTTP goes through one pooled httpx.Client; redirects (301/302/303/307/308) are followed by hand so every hop is
address-checked and counted; any other non-2xx status is an error; 5xx/429/timeouts/connection errors are retried
with exponential backoff, 4xx and other 3xx never.
"""
from __future__ import annotations

import http
import io
import os
import stat
import tempfile
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Iterator, Sequence
from urllib.parse import urljoin, urlsplit
from urllib.request import url2pathname

import httpcore
import httpx
from tqdm import tqdm

from visiondb.errors import AccessDeniedError, FetchError, VisionDBError
from visiondb.ingest.archives import ArchiveReader, is_archive_name
from visiondb.ingest.formats import looks_like_image, maybe_decompress, read_capped
from visiondb.ingest.policy import FetchPolicy
from visiondb.ingest.ratelimit import HostRateLimiter

_REDIRECTS = {301, 302, 303, 307, 308}
_USER_AGENT = "visiondb/0.1 (+https://github.com/visiondb)"
ARCHIVE_PREFIX = "archive+"


@dataclass(frozen=True)
class ParsedURI:
    """A URI split into its kind ("local", "http", "archive") and the parts each kind needs."""

    kind: str
    uri: str
    path: Path | None = None
    url: str | None = None
    inner: str | None = None
    member: str | None = None


def parse_uri(uri: str) -> ParsedURI:
    """Classify a URI; `archive+<inner>#<member>` splits at the first `#` after an archive suffix (so the archive's
    path and the member may both contain `#`), else at the first `#`."""
    if not isinstance(uri, str) or not uri.strip():
        raise FetchError(f"empty or invalid URI: {uri!r}", uri=str(uri))
    if uri.startswith(ARCHIVE_PREFIX):
        inner, sep, member = _split_archive_uri(uri[len(ARCHIVE_PREFIX):])
        if not sep or not member or not inner:
            raise FetchError(f"archive URI must look like archive+<uri>#<member>: {uri}", uri=uri)
        if parse_uri(inner).kind == "archive":
            raise FetchError(f"nested archive URIs are not supported: {uri}", uri=uri)
        return ParsedURI("archive", uri, inner=inner, member=member)
    scheme = urlsplit(uri).scheme.lower()
    if scheme in ("http", "https"):
        return ParsedURI("http", uri, url=uri)
    if scheme == "file":
        parts = urlsplit(uri)
        if parts.netloc not in ("", "localhost"):
            raise FetchError(f"file:// URI with a remote host is not supported: {uri}", uri=uri)
        return ParsedURI("local", uri, path=Path(url2pathname(parts.path)))
    if "://" in uri:
        raise FetchError(f"unsupported URI scheme {scheme!r}: {uri}", uri=uri)
    return ParsedURI("local", uri, path=Path(uri).expanduser())


def _split_archive_uri(rest: str) -> tuple[str, str, str]:
    """`<inner>#<member>` split at the first `#` whose left side names a zip/tar; `partition("#")` when none does."""
    at = rest.find("#")
    while at != -1:
        if is_archive_name(rest[:at]):
            return rest[:at], "#", rest[at + 1:]
        at = rest.find("#", at + 1)
    return rest.partition("#")


class _DeadlineExceeded(Exception):
    """The whole response did not arrive within the policy's timeout (a server dripping bytes)."""


class PinnedBackend(httpcore.SyncBackend):
    """httpcore's socket backend, connecting only to addresses the policy allowed when it resolved the host.

    Every connection (each redirect hop's too) is checked here, before any packet is sent, on the very
    addresses it then uses: one DNS lookup, and no window for a name to re-resolve to a private address
    (DNS rebinding). TLS still verifies the certificate against the URL's host name."""

    def __init__(self, policy: FetchPolicy) -> None:
        self.policy = policy

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options=None) -> httpcore.NetworkStream:  # noqa: ANN001 - httpcore's socket option tuples
        last: Exception | None = None
        for address in self.policy.allowed_addresses(host, port):
            try:
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:  # try the next address, as the OS would
                last = exc
        assert last is not None
        raise last


class PinnedTransport(httpx.HTTPTransport):
    """httpx's transport over a connection pool that uses `PinnedBackend` (httpx 0.28 takes no backend argument,
    so the pool it builds is replaced by an equal one with the backend set)."""

    def __init__(self, policy: FetchPolicy, limits: httpx.Limits) -> None:
        super().__init__(limits=limits, trust_env=False)
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=PinnedBackend(policy),
        )


class Fetcher:
    """Thread-safe reader of URIs under one FetchPolicy; call close() (or use `with`) to free sockets and spools."""

    def __init__(self, policy: FetchPolicy | None = None) -> None:
        self.policy = policy or FetchPolicy()
        self._limiter = HostRateLimiter(self.policy.rate_per_host)
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()
        self._archives: dict[str, ArchiveReader] = {}
        self._archive_locks: dict[str, threading.Lock] = {}
        self._spools: list[Path] = []
        self._closed = False

    # -- public API --------------------------------------------------------------------------
    def read(self, uri: str, *, decompress: bool = False) -> bytes:
        """Return the bytes behind `uri`; with `decompress`, .gz/.bz2/.xz/.zst content is expanded."""
        data, _ = self.read_with_type(uri)
        if decompress:
            p = parse_uri(uri)
            name = p.member if p.kind == "archive" else urlsplit(uri).path if p.kind == "http" else str(p.path)
            data = maybe_decompress(data, name or uri, max_bytes=self.policy.max_bytes, uri=uri)
        return data

    def read_with_type(self, uri: str) -> tuple[bytes, str | None]:
        """Return `(bytes, content_type)`; the content type is only known for HTTP responses."""
        if self._closed:
            raise FetchError(f"fetcher is closed, cannot read {uri}", uri=uri)
        p = parse_uri(uri)
        if p.kind == "local":
            assert p.path is not None
            return self._read_local(p.path, uri), None
        if p.kind == "http":
            assert p.url is not None
            buf = io.BytesIO()
            ctype = self._http_get(p.url, buf, self.policy.max_bytes)
            return buf.getvalue(), ctype
        assert p.inner is not None and p.member is not None
        return self._archive(p.inner).read(p.member, max_bytes=self.policy.max_bytes), None

    def read_image(self, uri: str) -> bytes:
        """Like read(), but raise FetchError("not an image: ...") when the magic bytes are not a known image format."""
        data, ctype = self.read_with_type(uri)
        if looks_like_image(data, ctype) is None:
            what = f"Content-Type {ctype}" if ctype else f"content starts with {bytes(data[:16])!r}"
            if not data:
                what = "empty content"
            raise FetchError(f"not an image: {what} ({len(data)} bytes) at {uri}", uri=uri)
        return data

    def archive_members(self, archive_uri: str) -> list[str]:
        """Regular-file member names of a local or remote zip/tar, in archive order (the archive is cached)."""
        return self._archive(archive_uri).names()

    def read_many(
        self,
        uris: Sequence[str],
        *,
        concurrency: int | None = None,
        progress: bool | tqdm = False,
        decompress: bool = False,
        images: bool = False,
    ) -> Iterator[tuple[int, bytes | FetchError]]:
        """Fetch many URIs on a bounded thread pool, yielding `(index, bytes or FetchError)` as each completes.

        `images=True` applies read_image's check; `progress` is True for a tqdm bar or an existing tqdm to update.
        """
        workers = max(1, concurrency or self.policy.concurrency)
        bar: tqdm | None = tqdm(total=len(uris), unit="file") if progress is True else (progress or None)
        task: Callable[[str], bytes] = self.read_image if images else (lambda u: self.read(u, decompress=decompress))

        def run(uri: str) -> bytes | FetchError:
            try:
                return task(uri)
            except FetchError as exc:
                return exc
            except (VisionDBError, OSError, ValueError) as exc:
                err = FetchError(f"cannot read {uri}: {exc}", uri=uri)
                err.__cause__ = exc
                return err
            except Exception as exc:  # noqa: BLE001 - last line: one bad row must never abort the batch
                err = FetchError(f"cannot read {uri}: {type(exc).__name__}: {exc}", uri=uri)
                err.__cause__ = exc
                return err

        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="visiondb-fetch")
        pending: dict[Future[bytes | FetchError], int] = {}
        source = iter(enumerate(uris))
        try:
            def refill() -> None:
                while len(pending) < 2 * workers:
                    nxt = next(source, None)
                    if nxt is None:
                        return
                    pending[pool.submit(run, nxt[1])] = nxt[0]

            refill()
            while pending:
                done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
                for fut in done:
                    idx = pending.pop(fut)
                    if bar is not None:
                        bar.update(1)
                    yield idx, fut.result()
                refill()
        finally:
            for fut in pending:
                fut.cancel()
            pool.shutdown(wait=False, cancel_futures=True)
            if progress is True and bar is not None:
                bar.close()

    def close(self) -> None:
        """Close the HTTP pool and archives and delete downloaded spool files."""
        with self._lock:
            self._closed = True
            if self._client is not None:
                self._client.close()
                self._client = None
            for reader in self._archives.values():
                reader.close()
            self._archives.clear()
            for spool in self._spools:
                spool.unlink(missing_ok=True)
            self._spools.clear()

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- local -------------------------------------------------------------------------------
    def _read_local(self, path: Path, uri: str) -> bytes:
        """Read a regular file, at most max_bytes (checked on the opened file, so a swapped-in FIFO cannot block)."""
        real = self.policy.check_path(path, uri)
        limit = self.policy.max_bytes
        try:
            fd = os.open(real, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
            try:
                mode, size = (st := os.fstat(fd)).st_mode, st.st_size
                if stat.S_ISDIR(mode):
                    raise FetchError(f"{uri} is a directory, not a file", uri=uri)
                if not stat.S_ISREG(mode):
                    raise FetchError(f"{uri} is not a regular file (a FIFO, device or socket)", uri=uri)
                if size > limit:
                    raise FetchError(f"file {uri} is larger than {limit} bytes ({size})", uri=uri)
                with os.fdopen(fd, "rb", closefd=False) as f:
                    data = read_capped(f, limit + 1)
            finally:
                os.close(fd)
            if len(data) > limit:
                raise FetchError(f"file {uri} is larger than {limit} bytes (it grew while being read)", uri=uri)
            return data
        except FileNotFoundError as exc:
            raise FetchError(f"no such file: {uri}", uri=uri) from exc
        except PermissionError as exc:
            raise FetchError(f"permission denied reading {uri}", uri=uri) from exc
        except OSError as exc:
            raise FetchError(f"cannot read {uri}: {exc.strerror or exc}", uri=uri) from exc

    # -- archives ----------------------------------------------------------------------------
    def _archive(self, inner: str) -> ArchiveReader:
        p = parse_uri(inner)
        if p.kind == "archive":
            raise FetchError(f"nested archive URIs are not supported: {inner}", uri=inner)
        key = str(self.policy.check_path(p.path, inner)) if p.kind == "local" else inner  # type: ignore[arg-type]
        with self._lock:
            if key in self._archives:
                return self._archives[key]
            key_lock = self._archive_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._archives:
                    return self._archives[key]
            limit = self.policy.max_archive_bytes
            if p.kind == "local":
                if not Path(key).is_file():
                    raise FetchError(f"no such archive file: {inner}", uri=inner)
                reader = ArchiveReader(Path(key), uri=inner, max_bytes=limit)
            else:
                reader = ArchiveReader(self._download_spool(inner), uri=inner, max_bytes=limit)
            with self._lock:
                if self._closed:
                    reader.close()
                    raise FetchError(f"fetcher is closed, cannot read {inner}", uri=inner)
                self._archives[key] = reader
            return reader

    def _download_spool(self, url: str) -> Path:
        fd, name = tempfile.mkstemp(prefix="visiondb-archive-")
        path = Path(name)
        with self._lock:
            self._spools.append(path)
        with os.fdopen(fd, "w+b") as f:
            self._http_get(url, f, self.policy.max_archive_bytes)
        return path

    # -- http --------------------------------------------------------------------------------
    def _http(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                limits = httpx.Limits(max_connections=None, max_keepalive_connections=self.policy.concurrency)
                self._client = httpx.Client(
                    timeout=httpx.Timeout(self.policy.timeout),
                    limits=limits,
                    transport=PinnedTransport(self.policy, limits) if self.policy.block_private else None,
                    follow_redirects=False,
                    trust_env=False,
                    headers={"User-Agent": _USER_AGENT},
                )
            return self._client

    def _http_get(self, url: str, sink: IO[bytes], limit: int) -> str | None:
        """Follow up to max_redirects hops (each address-checked), writing the final body to `sink`."""
        current = url
        for _ in range(self.policy.max_redirects + 1):
            self.policy.check_url(current)
            status, location, ctype = self._request(current, url, sink, limit)
            if status not in _REDIRECTS:
                return ctype
            if not location:
                raise FetchError(f"HTTP {status} redirect without Location fetching {url}", uri=url, status=status)
            current = urljoin(current, location)
        raise FetchError(
            f"too many redirects ({self.policy.max_redirects}) fetching {url} (last Location {current})",
            uri=url,
            status=status,
        )

    def _request(self, url: str, original: str, sink: IO[bytes], limit: int) -> tuple[int, str | None, str | None]:
        """One hop with retries; returns (status, Location, Content-Type) and writes a 2xx body to `sink`.

        Each attempt must complete within the policy's timeout as a whole, not just per socket read."""
        where = url if url == original else f"{url} (redirected from {original})"
        host = urlsplit(url).netloc
        attempts = self.policy.retries + 1
        last: FetchError | None = None
        for attempt in range(attempts):
            if attempt:
                time.sleep(self._delay(attempt, last))
            self._limiter.acquire(host)
            sink.seek(0)
            sink.truncate()
            deadline = time.monotonic() + self.policy.timeout if self.policy.timeout else None
            try:
                with self._http().stream("GET", url) as resp:
                    code = resp.status_code
                    if code in _REDIRECTS:
                        return code, resp.headers.get("location"), None
                    if not 200 <= code < 300:  # 4xx/5xx, and 1xx/3xx that are not followed redirects (300, 304 …)
                        reason = resp.reason_phrase or _phrase(code)
                        err = FetchError(f"HTTP {code} {reason} fetching {where}", uri=original, status=code)
                        if code >= 500 or code == 429:
                            err.retry_after = resp.headers.get("retry-after")  # type: ignore[attr-defined]
                            last = err
                            continue
                        raise err
                    declared = resp.headers.get("content-length")
                    if declared and declared.isdigit() and int(declared) > limit:
                        raise FetchError(
                            f"response larger than {limit} bytes (Content-Length {declared}) from {where}",
                            uri=original, status=code,
                        )
                    total = 0
                    for chunk in resp.iter_bytes():  # chunks as they arrive, so the deadline is checked
                        if deadline is not None and time.monotonic() > deadline:
                            raise _DeadlineExceeded()
                        total += len(chunk)
                        if total > limit:
                            raise FetchError(f"response larger than {limit} bytes from {where}", uri=original, status=code)
                        sink.write(chunk)
                    return code, None, resp.headers.get("content-type")
            except FetchError as exc:  # PinnedBackend refused the host or could not resolve it: name the URL
                if exc.uri is not None:
                    raise
                if isinstance(exc, AccessDeniedError):
                    raise AccessDeniedError(f"refused to fetch {where}: {exc.message}", uri=original,
                                            **exc.details) from None
                raise FetchError(f"{exc.message} (fetching {where})", uri=original, **exc.details) from None
            except (httpx.TimeoutException, _DeadlineExceeded) as exc:
                last = FetchError(f"timed out after {self.policy.timeout} s fetching {where}", uri=original)
                last.__cause__ = exc
            except httpx.TransportError as exc:
                last = FetchError(f"connection error fetching {where}: {exc or type(exc).__name__}", uri=original)
                last.__cause__ = exc
            except httpx.DecodingError as exc:  # a body that does not match its Content-Encoding: not retried
                raise FetchError(f"cannot decode the response body of {where}: {exc}", uri=original) from exc
            except httpx.InvalidURL as exc:
                raise FetchError(f"invalid URL {where}: {exc}", uri=original) from exc
            except httpx.HTTPError as exc:
                raise FetchError(f"cannot fetch {where}: {exc or type(exc).__name__}", uri=original) from exc
        assert last is not None
        if attempts > 1:
            last.message = f"{last.message} (gave up after {attempts} attempts)"
            last.args = (last.message,)
        raise last

    def _delay(self, attempt: int, last: FetchError | None) -> float:
        delay = self.policy.backoff * (2 ** (attempt - 1))
        retry_after = getattr(last, "retry_after", None)
        if retry_after and str(retry_after).isdigit():
            delay = max(delay, min(float(retry_after), 60.0))
        return delay


def _phrase(code: int) -> str:
    try:
        return http.HTTPStatus(code).phrase
    except ValueError:
        return ""
