"""Polling a live run while it reports progress and errors: the snapshot is always serialisable."""
from __future__ import annotations

import json
import threading

from visiondb.core.runs import RunContext, new_run_record


def test_snapshot_while_the_run_updates() -> None:
    ctx = RunContext(db=None, procedure_id="p", run_id="r", record=new_run_record("p", "r", {}))
    stop = threading.Event()

    def run() -> None:
        i = 0
        while not stop.is_set():
            ctx.set_progress(i, 1000, phase="x", **{f"k{i % 50}": i})  # new keys appear as the run goes
            ctx.record_error("bad", row=i)
            i += 1

    worker = threading.Thread(target=run)
    worker.start()
    try:
        for _ in range(2000):
            snap = ctx.snapshot()
            json.dumps(snap)  # dict(record) alone shares progress/errors with the run: "changed size" errors
            assert snap["progress"] is not ctx.record["progress"] and snap["errors"] is not ctx.record["errors"]
    finally:
        stop.set()
        worker.join()
    assert ctx.record["errorCount"] == len(ctx.record["errors"]) or ctx.record["errorCount"] > 10_000
