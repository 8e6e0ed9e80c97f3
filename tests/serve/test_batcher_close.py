"""A closed micro-batcher never swallows a request: submits fail fast or go to a fresh batcher, and an
application never waits without bound."""
from __future__ import annotations

import threading
import time
from concurrent.futures import wait
from pathlib import Path

import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

import visiondb
from visiondb.serve.app import create_app
from visiondb.serve.batching import BatcherClosedError, BatcherPool, MicroBatcher
from visiondb.serve.settings import ServerSettings


@pytest.fixture
def db(tmp_path: Path):
    database = visiondb.connect(tmp_path / "batch.vdb")
    database.functions.put("f", {"type": "sql.expression", "params": {"expression": "upper(x)"}})
    yield database
    database.close()


def test_submit_after_close_fails_fast(db) -> None:
    batcher = MicroBatcher(db, "f", max_batch=8, max_wait_ms=1)
    queued = batcher.submit("a")
    batcher.close()
    assert queued.result(timeout=10) == "A"  # what was queued before close still runs
    started = time.monotonic()
    with pytest.raises(BatcherClosedError, match="'f'"):
        batcher.submit("b")
    assert time.monotonic() - started < 1
    batcher.close()  # idempotent


def test_pool_hands_items_to_a_fresh_batcher(db) -> None:
    pool = BatcherPool(db, 8, 1)
    old = pool.get("f")
    old.close()  # closed while still registered (a concurrent drop between get and submit)
    assert pool.submit("f", "a").result(timeout=10) == "A"
    assert pool.get("f") is not old
    pool.close()


def test_submits_racing_drops_all_resolve(db) -> None:
    pool = BatcherPool(db, 8, 1)
    futures, stop = [], threading.Event()

    def submitter() -> None:
        while not stop.is_set():
            futures.append(pool.submit("f", "a"))
            time.sleep(0.0005)

    def dropper() -> None:
        while not stop.is_set():
            pool.drop("f")
            time.sleep(0.002)

    threads = [threading.Thread(target=submitter), threading.Thread(target=dropper)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join()
    done, pending = wait(futures, timeout=10)
    assert not pending and all(f.result() == "A" for f in done)
    pool.close()


def test_application_waits_at_most_apply_timeout(db) -> None:
    release = threading.Event()

    def slow(values: pa.Array) -> pa.Array:
        release.wait(10)
        return values

    db.connection.create_function("slow_py", slow, ["VARCHAR"], "VARCHAR", type="arrow")
    db.functions.put("slow", {"type": "sql.expression", "params": {"expression": "slow_py(x)"}})
    app = create_app(db, ServerSettings(apply_timeout_s=0.5))
    with TestClient(app, raise_server_exceptions=False) as client:
        started = time.monotonic()
        resp = client.get("/v1/functions/slow/application", params={"input": '{"x": "a"}'})
        assert time.monotonic() - started < 5
        assert resp.status_code == 504 and "slow" in resp.json()["error"], resp.text
        release.set()
        fast = client.get("/v1/functions/f/application", params={"input": '{"x": "a"}'})
        assert fast.status_code == 200 and fast.json()["output"] == {"output": "A"}
