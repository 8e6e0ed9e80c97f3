"""Procedure runs: the run record (MLDB shape), live progress, per-row errors and progress bars."""
from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, TypeVar

from tqdm.auto import tqdm

from .catalog import now

T = TypeVar("T")

MAX_ERRORS_KEPT = 10_000


def progress_enabled() -> bool:
    """Progress bars go to stderr unless VISIONDB_PROGRESS=0 (tests and servers keep them quiet)."""
    return os.environ.get("VISIONDB_PROGRESS", "1") != "0" and sys.stderr is not None


@dataclass
class RunContext:
    """Handed to `Procedure.run`: reports progress and per-row errors into the live run record."""

    db: Any
    procedure_id: str
    run_id: str
    record: dict
    lock: threading.Lock = field(default_factory=threading.Lock)
    started: float = field(default_factory=time.monotonic)

    def set_progress(self, done: int, total: int | None = None, phase: str | None = None, **extra: Any) -> None:
        with self.lock:
            progress = self.record.setdefault("progress", {})
            progress["done"] = done
            if total is not None:
                progress["total"] = total
                progress["percent"] = round(100.0 * done / total, 1) if total else 100.0
            if phase is not None:
                progress["phase"] = phase
            elapsed = time.monotonic() - self.started
            progress["elapsedSeconds"] = round(elapsed, 3)
            progress.update(extra)

    def snapshot(self) -> dict:
        """A copy of the live record safe to serialise while the run goes on (progress and errors copied under
        the lock the run updates them with)."""
        with self.lock:
            copy = dict(self.record)
            copy["progress"] = dict(self.record.get("progress") or {})
            copy["errors"] = list(self.record.get("errors") or [])
            return copy

    def record_error(self, cause: str, *, row: Any = None, uri: str | None = None, **extra: Any) -> None:
        """A non-fatal per-row error: kept in the run's `errors` list (row, uri, cause)."""
        with self.lock:
            errors = self.record.setdefault("errors", [])
            if len(errors) < MAX_ERRORS_KEPT:
                entry = {"row": row, "uri": uri, "cause": cause}
                entry.update(extra)
                errors.append({k: v for k, v in entry.items() if v is not None})
            self.record["errorCount"] = self.record.get("errorCount", 0) + 1

    def track(self, items: Iterable[T], total: int | None = None, desc: str = "", unit: str = "row") -> Iterator[T]:
        """Iterate with a tqdm bar (rate and ETA) that also feeds the run's progress."""
        bar = tqdm(total=total, desc=desc or self.procedure_id, unit=unit, disable=not progress_enabled(), leave=False)
        done = 0
        try:
            for item in items:
                yield item
                done += 1
                bar.update(1)
                if done % 16 == 0 or done == total:
                    self.set_progress(done, total, phase=desc or None)
        finally:
            self.set_progress(done, total, phase=desc or None)
            bar.close()

    def bar(self, total: int | None, desc: str, unit: str = "row") -> "ProgressBar":
        return ProgressBar(self, total, desc, unit)


class ProgressBar:
    """A tqdm bar advanced by counts (for batched work) that mirrors into the run's progress."""

    def __init__(self, ctx: RunContext, total: int | None, desc: str, unit: str) -> None:
        self.ctx, self.total, self.desc, self.done = ctx, total, desc, 0
        self._bar = tqdm(total=total, desc=desc, unit=unit, disable=not progress_enabled(), leave=False)

    def update(self, n: int) -> None:
        self.done += n
        self._bar.update(n)
        self.ctx.set_progress(self.done, self.total, phase=self.desc)

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def new_run_record(procedure_id: str, run_id: str, params: dict) -> dict:
    return {
        "procedure": procedure_id,
        "id": run_id,
        "state": "pending",
        "params": params,
        "status": None,
        "errors": [],
        "progress": {},
        "runStarted": None,
        "runFinished": None,
    }


def timestamp() -> str:
    return now().isoformat()
