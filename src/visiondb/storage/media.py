"""Content-addressed media store: large blobs as files beside the DB, tiny ones inline in `vdb.blobs`."""
from __future__ import annotations

import functools
import hashlib
import os
import re
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Iterable

import pyarrow as pa

from ..errors import FetchError, NotFoundError

INLINE_MAX_BYTES = 16 * 1024
TRANSIENT_MAX_ITEMS = 512
TRANSIENT_MAX_BYTES = 512 * 1024 * 1024
"""Uploads held for serving are evicted oldest first past either bound (so a burst of big uploads can't pin GBs)."""
_SHA256 = re.compile(r"[0-9a-f]{64}")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_sha256(text: object) -> bool:
    """True for a lower-case hex sha256 digest: the only names the store has (anything else could be a path)."""
    return isinstance(text, str) and _SHA256.fullmatch(text) is not None


def check_sha256(text: object, what: str = "content hash") -> str:
    """`text` when it is a sha256 digest, else a FetchError naming it (keeps paths out of the store's lookups)."""
    if not is_sha256(text):
        raise FetchError(f"{what} {str(text)[:80]!r} is not a sha256 digest (64 lower-case hex digits)")
    return text  # type: ignore[return-value]


def _read_file(path: str) -> bytes:
    """The bytes of a stored file (a reader `MediaStore.sources` hands out)."""
    with open(path, "rb") as fh:
        return fh.read()


class MediaStore:
    """Stores bytes once per sha256; `mem:<sha>` holds uploads for serving without persisting them."""

    def __init__(self, db: Any, root: Path | None) -> None:
        self.db = db
        if root is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="visiondb-media-")
            root = Path(self._tmp.name)
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._root_text = str(self.root)
        self._transient: OrderedDict[str, bytes] = OrderedDict()
        self._transient_bytes = 0
        self._lock = threading.Lock()
        self._inline_lock = threading.Lock()  # concurrent inserts of one hash would collide on the primary key

    def path_for(self, sha: str) -> Path:
        return Path(self._file_for(sha))

    def _file_for(self, sha: str) -> str:
        """`path_for` as a string: a transform chunk asks for 512 of them, and pathlib costs ~25 us each."""
        check_sha256(sha)
        return os.path.join(self._root_text, sha[:2], sha[2:4], sha)

    def put(self, data: bytes, sha: str | None = None) -> str:
        sha = sha or sha256_hex(data)
        if len(data) <= INLINE_MAX_BYTES:
            self.put_inline_many([(sha, data)])
            return sha
        path = self.path_for(sha)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        return sha

    def put_inline_many(self, items: Iterable[tuple[str, bytes]]) -> None:
        """Insert tiny blobs in one statement, skipping hashes already stored."""
        rows = list({sha: data for sha, data in items}.items())
        if not rows:
            return
        table = pa.table({"sha256": [r[0] for r in rows], "data": pa.array([r[1] for r in rows], pa.binary())})
        cur = self.db.aux_cursor()
        with self._inline_lock:
            cur.register("_vdb_new_blobs", table)
            try:
                cur.execute(
                    "INSERT INTO vdb.blobs SELECT n.sha256, n.data FROM _vdb_new_blobs n"
                    " ANTI JOIN vdb.blobs b ON b.sha256 = n.sha256"
                )
            finally:
                cur.unregister("_vdb_new_blobs")

    def has(self, sha: str) -> bool:
        if self.path_for(sha).exists() or self._held(sha) is not None:
            return True
        return self.db.aux_cursor().execute("SELECT 1 FROM vdb.blobs WHERE sha256 = ?", [sha]).fetchall() != []

    def get(self, sha: str) -> bytes:
        held = self._held(sha)
        if held is not None:
            return held
        path = self.path_for(sha)
        if path.exists():
            return path.read_bytes()
        row = self.db.aux_cursor().execute("SELECT data FROM vdb.blobs WHERE sha256 = ?", [sha]).fetchall()
        if not row:
            raise NotFoundError(f"media {sha[:16]}… is not in the media store", sha256=sha)
        return bytes(row[0][0])

    def get_many(self, shas: list[str]) -> dict[str, bytes]:
        """Fetch many hashes; inline ones in a single query."""
        return {sha: source() if callable(source) else source for sha, source in self.sources(shas).items()}

    def sources(self, shas: list[str]) -> dict[str, bytes | Callable[[], bytes]]:
        """Like `get_many`, but stored files come back as readers (no-argument callables), so whoever decodes
        them reads them: the embedding pipeline's workers, in parallel, instead of one thread before it starts."""
        found: dict[str, bytes | Callable[[], bytes]] = {}
        missing = []
        for sha in shas:
            path = self._file_for(sha)
            if os.path.exists(path):
                found[sha] = functools.partial(_read_file, path)
            elif (held := self._held(sha)) is not None:
                found[sha] = held
            else:
                missing.append(sha)
        if missing:
            rows = self.db.aux_cursor().execute(
                "SELECT sha256, data FROM vdb.blobs WHERE sha256 IN (SELECT unnest(?))", [missing]
            ).fetchall()
            found.update({sha: bytes(data) for sha, data in rows})
        return found

    def put_transient(self, data: bytes) -> str:
        """Keep an uploaded image in memory (bounded LRU) and return its `mem:<sha>` URI."""
        sha = sha256_hex(data)
        with self._lock:
            old = self._transient.pop(sha, None)
            self._transient_bytes += len(data) - (len(old) if old is not None else 0)
            self._transient[sha] = data
            while len(self._transient) > 1 and (
                len(self._transient) > TRANSIENT_MAX_ITEMS or self._transient_bytes > TRANSIENT_MAX_BYTES
            ):
                self._transient_bytes -= len(self._transient.popitem(last=False)[1])
        return f"mem:{sha}"

    def _held(self, sha: str) -> bytes | None:
        """An upload's bytes while still held in memory (looked up under the lock: eviction runs concurrently)."""
        with self._lock:
            return self._transient.get(sha)
