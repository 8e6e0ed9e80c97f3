"""SIGKILL proof for import.images: kill a rate-limited HTTP import halfway, re-run, get every good row exactly once."""
from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tests.support.httpserver import TestHTTPServer, make_jpeg

import visiondb
from visiondb.ingest.policy import FetchPolicy

N_GOOD, N_MISSING, N_HTML, N_TRUNC = 900, 34, 33, 33
RATE = 250.0  # requests/s to the one host: ~4 s for 1,000 URLs
ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import sys, visiondb
    from visiondb.ingest.policy import FetchPolicy
    db = visiondb.connect(sys.argv[1], fetch_policy=FetchPolicy(rate_per_host={rate}, retries=0))
    db.procedures.put("imp", {{"type": "import.images", "params": {{
        "dataFileUrl": sys.argv[2], "outputDataset": "imgs", "concurrency": 4}}}})
""")


def test_sigkill_then_resume(tmp_path: Path) -> None:
    www = tmp_path / "www"
    (www / "good").mkdir(parents=True)
    for i in range(N_GOOD):
        (www / "good" / f"{i}.jpg").write_bytes(make_jpeg(64, 48, (i % 256, i // 256 * 60, 100)))
    with TestHTTPServer(www) as srv:
        jpeg = make_jpeg(64, 48)
        for i in range(N_HTML):
            srv.add(f"/html/{i}.jpg", b"<!doctype html><html><body>moved</body></html>", "text/html")
        for i in range(N_TRUNC):
            srv.add(f"/trunc/{i}.jpg", jpeg[: len(jpeg) // 2], "image/jpeg")
        good = [srv.url(f"good/{i}.jpg") for i in range(N_GOOD)]
        bad = ([srv.url(f"gone/{i}.jpg") for i in range(N_MISSING)] + [srv.url(f"html/{i}.jpg") for i in range(N_HTML)]
               + [srv.url(f"trunc/{i}.jpg") for i in range(N_TRUNC)])
        urls = good + bad
        random.Random(7).shuffle(urls)
        listing = tmp_path / "urls.csv"
        with listing.open("w", newline="") as fh:
            csv.writer(fh).writerows([["uri"], *[[u] for u in urls]])
        db_file = tmp_path / "kill.vdb"
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "VISIONDB_PROGRESS": "0"}
        proc = subprocess.Popen([sys.executable, "-c", SCRIPT.format(rate=RATE), str(db_file), str(listing)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while sum(srv.hits.values()) < len(urls) // 2:
            assert proc.poll() is None, f"import ended before the kill: {proc.stdout.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, "import made no progress"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL
        first_hits = sum(srv.hits.values())
        assert first_hits < len(urls)

        srv.reset()
        db = visiondb.connect(db_file, fetch_policy=FetchPolicy(rate_per_host=1000, retries=0))
        before = {r[0] for r in db.sql("SELECT _rowName FROM imgs").fetchall()}
        assert 0 < len(before) < N_GOOD  # the killed run committed some chunks, not all
        record = db.procedures.put("imp", {"type": "import.images", "params": {
            "dataFileUrl": str(listing), "outputDataset": "imgs", "concurrency": 4}})["status"]["firstRun"]
        assert record["status"]["alreadyPresent"] == len(before)
        assert db.sql("SELECT count(*), count(DISTINCT _rowName) FROM imgs").fetchall() == [(N_GOOD, N_GOOD)]
        assert {r[0] for r in db.sql("SELECT image.uri FROM imgs").fetchall()} == set(good)
        errors = {r[0]: r[1] for r in db.sql("SELECT uri, status FROM imgs_errors").fetchall()}
        assert set(errors) == set(bad)
        assert all(errors[srv.url(f"gone/{i}.jpg")] == 404 for i in range(N_MISSING))
        # the re-run fetched only what was missing: nothing already stored, every missing good URL once
        paths = {u[len(srv.base_url):]: u for u in urls}
        refetched_stored = [p for p, u in paths.items() if u in before and srv.hits[p]]
        assert refetched_stored == []
        assert sum(srv.hits[p] for p, u in paths.items() if u in set(good)) == N_GOOD - len(before)
        db.close()
