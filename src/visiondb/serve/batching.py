"""Micro-batching for real-time inference: requests arriving together share ONE SQL statement.

A per-function worker thread takes the first waiting request, gathers more until `max_batch` or until
`max_wait_ms` after that first request arrived, then runs `SELECT i, fn(v) ... unnest(?::VARCHAR[])` so the
function's vectorised UDF sees the whole batch in one forward pass. Requests that queued while a batch
was running are already late, so they go out at once (the wait never adds up under load). Two such workers
share the queue, so one batch's serial part (SQL, result hand-off) overlaps the other's forward pass.
"""
from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import duckdb

from ..errors import VisionDBError
from ..sql.udf import output_object, statement_error

_STOP = object()
STATEMENTS_IN_FLIGHT = 2  # batches of one function running at once
SUBMIT_TRIES = 3  # a batcher closed under a submit (the function was replaced) is replaced by a fresh one


class BatcherClosedError(VisionDBError):
    """The batcher was closed (its function replaced or deleted) before the item could be queued."""

    http_code = 503


@dataclass
class _Item:
    value: str
    future: Future
    arrived: float = field(default_factory=time.monotonic)


class MicroBatcher:
    """Collects single-input applications of one function and runs them as batched SQL statements."""

    def __init__(self, db: Any, function_id: str, max_batch: int = 32, max_wait_ms: float = 5.0) -> None:
        self.db, self.function_id = db, function_id
        self.max_batch, self.max_wait = max_batch, max_wait_ms / 1000.0
        self.requests = 0  # items submitted
        self.statements = 0  # batched SQL statements run (UDF invocations)
        self.largest = 0
        self.fallbacks = 0  # batches re-run one by one because one row failed
        self._queue: queue.Queue[Any] = queue.Queue()
        self._lock = threading.Lock()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._loop, name=f"visiondb-batch-{function_id}-{i}", daemon=True)
            for i in range(STATEMENTS_IN_FLIGHT)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, value: str) -> Future:
        """Queue one input value (a URI string); the future resolves to the function's output value.

        Raises BatcherClosedError after `close()`: no worker would ever run the item."""
        item = _Item(value, Future())
        with self._lock:  # close() sets the flag under this lock, so no item is queued behind the stop markers
            if self._closed:
                raise BatcherClosedError(f"the batcher of function {self.function_id!r} is closed",
                                         function=self.function_id)
            self.requests += 1
            self._queue.put(item)
        return item.future

    @property
    def closed(self) -> bool:
        return self._closed

    def stats(self) -> dict:
        """Counters for tests and monitoring."""
        return {"function": self.function_id, "requests": self.requests, "statements": self.statements,
                "largestBatch": self.largest, "fallbacks": self.fallbacks,
                "maxBatch": self.max_batch, "maxWaitMs": self.max_wait * 1000.0}

    def close(self) -> None:
        """Stop the workers after the requests already queued; later submits raise BatcherClosedError."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for _ in self._threads:
                self._queue.put(_STOP)
        for thread in self._threads:
            thread.join(timeout=30)

    # worker ----------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            items = [first]
            stop = self._collect(items, deadline=None)  # what queued up while the last batch ran
            if not stop and len(items) > 1:
                # under concurrency wait briefly for the batch to fill; a lone request on an idle server runs at once
                stop = self._collect(items, deadline=first.arrived + self.max_wait)
            self._run(items)
            if stop:
                return

    def _collect(self, items: list[_Item], deadline: float | None) -> bool:
        """Append queued requests until the batch is full, the queue is empty (or the deadline passes).

        Returns True when the stop marker was met."""
        while len(items) < self.max_batch:
            remaining = 0.0 if deadline is None else deadline - time.monotonic()
            try:
                nxt = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                return False
            if nxt is _STOP:
                return True
            items.append(nxt)
        return False

    def _run(self, items: list[_Item]) -> None:
        live = [it for it in items if it.future.set_running_or_notify_cancel()]
        if not live:
            return
        try:
            values = self._execute([it.value for it in live])
        except Exception as exc:  # noqa: BLE001 - one bad row must not fail its neighbours
            if len(live) == 1:
                live[0].future.set_exception(_as_error(exc, self.function_id, live[0].value))
                return
            with self._lock:
                self.fallbacks += 1
            for it in live:
                try:
                    it.future.set_result(self._execute([it.value])[0])
                except Exception as one:  # noqa: BLE001
                    it.future.set_exception(_as_error(one, self.function_id, it.value))
            return
        for it, value in zip(live, values):
            it.future.set_result(value)

    def _execute(self, values: list[str]) -> list[Any]:
        n = len(values)
        cur = self.db.cursor()
        if n == 1:  # a lone request: the plain statement plans faster than the unnest form
            cur.execute(f"SELECT 0 AS i, {self.function_id}(?::VARCHAR) AS output", values)
        else:
            cur.execute(
                f"SELECT i, {self.function_id}(v) AS output FROM "
                "(SELECT unnest(range(?::BIGINT)) AS i, unnest(?::VARCHAR[]) AS v) ORDER BY i",
                [n, values],
            )
        table = cur.to_arrow_table()
        with self._lock:
            self.statements += 1
            self.largest = max(self.largest, n)
        return table.column(1).to_pylist(maps_as_pydicts="strict")


def _as_error(exc: Exception, function_id: str, value: str) -> VisionDBError:
    if isinstance(exc, VisionDBError):
        return exc
    if isinstance(exc, duckdb.Error):
        return statement_error(exc, f"function {function_id!r} failed on {value}: {exc}", function=function_id,
                               uri=value)
    return VisionDBError(f"function {function_id!r} failed on {value}: {type(exc).__name__}: {exc}",
                         function=function_id, uri=value)


class BatcherPool:
    """One MicroBatcher per function id, created on first use and dropped when the function changes."""

    def __init__(self, db: Any, max_batch: int, max_wait_ms: float) -> None:
        self.db, self.max_batch, self.max_wait_ms = db, max_batch, max_wait_ms
        self._batchers: dict[str, MicroBatcher] = {}
        self._lock = threading.Lock()

    def get(self, function_id: str) -> MicroBatcher:
        with self._lock:
            batcher = self._batchers.get(function_id)
            if batcher is None:
                batcher = MicroBatcher(self.db, function_id, self.max_batch, self.max_wait_ms)
                self._batchers[function_id] = batcher
            return batcher

    def submit(self, function_id: str, value: str) -> Future:
        """Queue `value` on the function's batcher, on a fresh one if a concurrent drop closed it meanwhile."""
        for _ in range(SUBMIT_TRIES - 1):
            try:
                return self.get(function_id).submit(value)
            except BatcherClosedError:
                self._forget(function_id)
        return self.get(function_id).submit(value)

    def _forget(self, function_id: str) -> None:
        with self._lock:
            batcher = self._batchers.get(function_id)
            if batcher is not None and batcher.closed:
                del self._batchers[function_id]

    def drop(self, function_id: str) -> None:
        with self._lock:
            batcher = self._batchers.pop(function_id, None)
        if batcher is not None:
            batcher.close()

    def stats(self) -> dict[str, dict]:
        with self._lock:
            return {fid: b.stats() for fid, b in self._batchers.items()}

    def close(self) -> None:
        with self._lock:
            batchers, self._batchers = list(self._batchers.values()), {}
        for batcher in batchers:
            batcher.close()


def shape_output(value: Any, output_name: str) -> dict:
    """The function's output object, as `Function.apply` would return it."""
    return output_object(value, output_name)
