"""The embedding cache: `vdb.embeddings` rows keyed by (content hash, model key), written behind the caller.

New vectors are visible to lookups at once and reach the table in batches on a writer thread, so neither a
transform's chunk nor a real-time request waits for the INSERT (on 2 cores: 25-70 ms per 512 vectors, plus
the WAL checkpoints it triggers). The table is a cache: vectors still pending when a process dies are simply
computed again. `flush()` waits for them; statements run through `VisionDB.sql` flush first, so SQL always
sees every cached vector.
"""
from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, Iterable, Iterator

import numpy as np
import pyarrow as pa

log = logging.getLogger(__name__)

LINGER_S = 1.0
"""How long the writer waits for more vectors before writing. An INSERT costs 5-10 ms CPU whatever its size (the
statement and its WAL commit: measured 32 and 512 rows alike), so a transform writes about once a second, not once
per batch (0.2 s: 16 INSERTs and ~150 ms CPU per 512 photos on 2 cores; 1 s: 4-5 and ~60 ms)."""
MAX_PENDING_ROWS = 512
"""Pending rows that trigger a write without waiting out the linger."""
MAX_BACKLOG_ROWS = 16 * MAX_PENDING_ROWS
"""Pending rows at which `put` waits for the writer (memory stays bounded if the table is slow to take them)."""
MAX_HELD_ROWS = MAX_BACKLOG_ROWS // 2
"""Pending rows at which the writer stops waiting for a `hold` to end."""
IDLE_EXIT_S = 5.0
"""The writer thread ends after this long with nothing to write (the next `put` starts another)."""
RECENT_BYTES = 64 * 2**20
"""Vectors kept in memory after they are stored or read, least recently used first out: a re-run or a repeated
request finds them without a query (a 512-row lookup from the table costs ~4 ms of a ~30 ms cached re-run).
`clear()` drops them with the rows; rows deleted by hand in SQL may still be answered from memory."""

_OPEN: "weakref.WeakSet[EmbeddingCache]" = weakref.WeakSet()


def vectors_to_arrow(vectors: list[np.ndarray | None]) -> pa.Array:
    """FLOAT[] column from equal-length vectors (None = NULL), built from one matrix: ~25x faster than
    `pa.array` walking the arrays one by one (16 ms for 512 x 1280 floats, which a cached re-run would notice)."""
    dim = next((len(v) for v in vectors if v is not None), None)
    if dim is None:
        return pa.nulls(len(vectors), pa.list_(pa.float32()))
    matrix = np.zeros((len(vectors), dim), dtype=np.float32)
    missing = np.zeros(len(vectors), dtype=bool)
    for i, vector in enumerate(vectors):
        if vector is None:
            missing[i] = True
        else:
            matrix[i] = vector
    offsets = pa.array(np.arange(0, matrix.size + 1, dim, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(matrix.ravel()), mask=pa.array(missing))


class EmbeddingCache:
    """Vectors by (content hash, model key): lookups see pending vectors; one writer thread stores them."""

    def __init__(self, db: Any) -> None:
        self.db = db
        self._pending: dict[tuple[str, str], np.ndarray] = {}
        self._writing: dict[tuple[str, str], np.ndarray] = {}
        self._recent: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._recent_bytes = 0
        self._cleared = 0  # clear() count: a lookup that raced with one does not put vectors back in memory
        self._cond = threading.Condition()
        self._flush_requested = False
        self._holds = 0  # bulk computations in progress (see hold)
        self._closed = False
        self._writer: threading.Thread | None = None
        self.write_errors = 0
        _OPEN.add(self)

    def lookup(self, key: str, hashes: Iterable[str]) -> dict[str, np.ndarray]:
        """Cached vectors for `hashes` under model `key` (pending ones included)."""
        found: dict[str, np.ndarray] = {}
        rest: list[str] = []
        with self._cond:
            cleared = self._cleared
            for h in hashes:
                vector = self._pending.get((h, key))
                if vector is None:
                    vector = self._writing.get((h, key))
                if vector is None:
                    vector = self._recent.get((h, key))
                    if vector is not None:
                        self._recent.move_to_end((h, key))
                if vector is None:
                    rest.append(h)
                else:
                    found[h] = vector
        if rest:
            stored = self._select(key, rest)
            found.update(stored)
            with self._cond:
                if cleared == self._cleared:
                    self._remember({(h, key): v for h, v in stored.items()})
        return found

    def _remember(self, vectors: dict[tuple[str, str], np.ndarray]) -> None:
        """Keep stored vectors in memory, evicting the least recently used past RECENT_BYTES (lock held)."""
        for k, vector in vectors.items():
            old = self._recent.pop(k, None)
            if old is not None:
                self._recent_bytes -= old.nbytes
            self._recent[k] = vector
            self._recent_bytes += vector.nbytes
        while self._recent_bytes > RECENT_BYTES and self._recent:
            _, evicted = self._recent.popitem(last=False)
            self._recent_bytes -= evicted.nbytes

    def put(self, key: str, vectors: dict[str, np.ndarray]) -> None:
        """Queue vectors for storing; lookups return them from now on."""
        if not vectors:
            return
        with self._cond:
            if not self._closed:
                while len(self._pending) >= MAX_BACKLOG_ROWS and not self._closed:
                    self._flush_requested = True  # the writer is behind: let it take the backlog first
                    if self._writer is None or not self._writer.is_alive():
                        self._start_writer()
                    self._cond.notify_all()
                    self._cond.wait(1.0)
                for h, vector in vectors.items():
                    self._pending[(h, key)] = vector
                if self._writer is None:
                    self._start_writer()
                self._cond.notify_all()
                return
            writer = self._writer
        if writer is not None and writer is not threading.current_thread():
            writer.join()  # closed: the writer's last INSERT first, so the two cannot conflict on a key
        try:
            self._insert({(h, key): v for h, v in vectors.items()})
        except Exception as exc:  # noqa: BLE001 - a cache write must never take a query down with it
            self.write_errors += 1
            log.warning("embedding cache: %d vectors not stored (%s); they will be computed again", len(vectors), exc)

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Keep the writer from writing while a bulk computation (a transform chunk) runs, then write its vectors
        at once, while the statement stores its own output.

        An INSERT from a registered Arrow table takes Python's lock dozens of times; run beside the pipeline's
        busy workers it took 25-75 ms of wall time for 10 ms of work, and the one-second writes of a 512-row
        chunk cost ~2 % of its run time. Written at the end, they overlap the chunk's serial tail instead."""
        with self._cond:
            self._holds += 1
        try:
            yield
        finally:
            with self._cond:
                self._holds -= 1
                if not self._holds and self._pending:
                    self._flush_requested = True  # no linger: the computation is over
                self._cond.notify_all()

    def _start_writer(self) -> None:
        """Start the writer thread (caller holds the condition's lock)."""
        self._writer = threading.Thread(target=self._run, name="visiondb-embedding-cache", daemon=True)
        self._writer.start()

    def flush(self) -> None:
        """Block until every queued vector is in `vdb.embeddings`."""
        with self._cond:
            while self._pending or self._writing:
                if self._pending:  # asked again for vectors that came while a write ran (a hold would keep them)
                    self._flush_requested = True
                    self._cond.notify_all()
                if self._writer is None or not self._writer.is_alive():
                    self._start_writer()  # it ended (idle) just as vectors arrived
                self._cond.wait(1.0)

    def clear(self, key: str | None = None) -> int:
        """Delete cached vectors (of one model key, or all), stored and in memory; returns how many rows went."""
        self.flush()
        cur = self.db.aux_cursor()
        if key is None:
            deleted = int(cur.execute("DELETE FROM vdb.embeddings").fetchall()[0][0])
        else:
            deleted = int(cur.execute("DELETE FROM vdb.embeddings WHERE model_key = ?", [key]).fetchall()[0][0])
        with self._cond:  # after the DELETE: a lookup that read the rows before it finds them dropped here
            self._cleared += 1
            for k in [k for k in self._recent if key is None or k[1] == key]:
                self._recent_bytes -= self._recent.pop(k).nbytes
        return deleted

    def close(self) -> None:
        """Write what is pending and stop the writer (the database is about to close)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            writer = self._writer
        if writer is not None:
            writer.join()
        _OPEN.discard(self)

    # writer ---------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                idle_until = time.monotonic() + IDLE_EXIT_S
                while not self._pending and not self._closed:
                    if not self._cond.wait(max(0.0, idle_until - time.monotonic())) and not self._pending:
                        if self._writer is threading.current_thread():
                            self._writer = None  # idle: end, so unclosed databases do not keep a thread each
                        return
                deadline = time.monotonic() + LINGER_S
                while not self._closed and not self._flush_requested:
                    if self._holds:  # until the computation ends (it notifies), unless its backlog grows large
                        if len(self._pending) >= MAX_HELD_ROWS:
                            break
                        self._cond.wait()
                    elif len(self._pending) < MAX_PENDING_ROWS and (left := deadline - time.monotonic()) > 0:
                        self._cond.wait(left)
                    else:
                        break
                if not self._pending and self._closed:
                    return
                self._writing, self._pending = self._pending, {}
                self._flush_requested = False
            stored = True
            try:
                self._insert(self._writing)
            except Exception as exc:  # noqa: BLE001 - a cache write must never take a query down with it
                stored = False
                self.write_errors += 1
                log.warning("embedding cache: %d vectors not stored (%s); they will be computed again",
                            len(self._writing), exc)
            with self._cond:
                if stored:
                    self._remember(self._writing)
                self._writing = {}
                if not self._pending:
                    self._flush_requested = False  # a flush that came while writing is answered by this write
                self._cond.notify_all()

    def _insert(self, rows: dict[tuple[str, str], np.ndarray]) -> None:
        """One INSERT of `rows`, skipping keys already stored."""
        by_model: dict[str, list[str]] = {}
        for h, key in rows:
            by_model.setdefault(key, []).append(h)
        table = pa.concat_tables(  # built per model key: each key has its own vector width
            pa.table({
                "content_hash": hashes,
                "model_key": [key] * len(hashes),
                "vector": vectors_to_arrow([rows[(h, key)] for h in hashes]),
            })
            for key, hashes in by_model.items()
        )
        cur = self.db.aux_cursor()
        cur.register("_vdb_new_vectors", table)
        try:
            cur.execute(
                "INSERT INTO vdb.embeddings SELECT * FROM _vdb_new_vectors n WHERE NOT EXISTS"
                " (SELECT 1 FROM vdb.embeddings e WHERE e.content_hash = n.content_hash"
                " AND e.model_key = n.model_key)"
            )
        finally:
            cur.unregister("_vdb_new_vectors")

    def _select(self, key: str, hashes: list[str]) -> dict[str, np.ndarray]:
        table = (
            self.db.aux_cursor()
            .execute(
                "SELECT content_hash, vector FROM vdb.embeddings WHERE model_key = ?"
                " AND content_hash IN (SELECT unnest(?))",
                [key, hashes],
            )
            .to_arrow_table()
        )
        if table.num_rows == 0:
            return {}
        flat = table.column("vector").combine_chunks()
        dim = len(flat[0])
        matrix = flat.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float32)
        return dict(zip(table.column("content_hash").to_pylist(), matrix))


@atexit.register
def _close_open_caches() -> None:
    """Store pending vectors of databases nobody closed before the interpreter exits."""
    for cache in list(_OPEN):
        try:
            cache.close()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass
