"""Ingest throughput: import.images of 1,000 real JPEG URLs over loopback HTTP (concurrency 1 and 16) and
import.sql of Fashion-MNIST (70,000 PNG rows) from MariaDB. Prints one JSON object.

    python bench/ingest.py [--connection URL] [--images 1000]
"""
from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "src"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))
os.environ.setdefault("VISIONDB_PROGRESS", "0")

import visiondb  # noqa: E402
from tests.support.httpserver import TestHTTPServer  # noqa: E402

CLOTHING = ROOT / ".." / "shared" / "datasets" / "clothing"


def http_import(n: int, concurrency: int, tmp: Path) -> float:
    """images/s for import.images of `n` clothing photos served by a loopback HTTP server."""
    with open(CLOTHING / "labels.csv", newline="") as fh:
        paths = [row["path"] for row in csv.DictReader(fh)][:n]
    with TestHTTPServer(CLOTHING) as srv:
        listing = tmp / f"urls_{concurrency}.csv"
        with listing.open("w", newline="") as fh:
            csv.writer(fh).writerows([["uri"], *[[srv.url(p)] for p in paths]])
        db = visiondb.connect(tmp / f"bench_{concurrency}.vdb")
        start = time.perf_counter()
        status = db.procedures.put("imp", {"type": "import.images", "params": {
            "dataFileUrl": str(listing), "outputDataset": "imgs", "concurrency": concurrency}})["status"]["firstRun"]
        elapsed = time.perf_counter() - start
        db.close()
    return round(status["status"]["rowCount"] / elapsed, 1)


def sql_import(url: str) -> dict:
    """rows/s for import.sql of the 70,000-row Fashion-MNIST JOIN (tables loaded first, dropped after)."""
    spec = importlib.util.spec_from_file_location("fm", ROOT / "examples" / "mariadb_fashion_mnist.py")
    assert spec and spec.loader
    fm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fm)
    prefix = f"bench_{uuid.uuid4().hex[:8]}_"
    try:
        fm.load_remote(url, fm.tf_images_table(fm.read_fashion_mnist()), prefix)
    except Exception as exc:  # noqa: BLE001 - report, do not crash the benchmark
        return {"skipped": f"cannot load tables on {fm.external.masked(url)}: {str(exc).splitlines()[0][:200]}"}
    try:
        db = visiondb.connect()
        start = time.perf_counter()
        status = db.procedures.put("imp", {"type": "import.sql", "params": {
            "connection": url, "query": fm.import_query(url, prefix), "outputDataset": "fashion",
            "named": "img_id"}})["status"]["firstRun"]["status"]
        elapsed = time.perf_counter() - start
        db.close()
        return {"rows": status["rowCount"], "seconds": round(elapsed, 2), "rows_per_s": round(status["rowCount"] / elapsed, 1)}
    finally:
        fm.drop_remote(url, prefix)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connection", default="mysql+pymysql://root@127.0.0.1:3306/test")
    parser.add_argument("--images", type=int, default=1000)
    args = parser.parse_args()
    result: dict = {"http_import": {}}
    with tempfile.TemporaryDirectory(prefix="visiondb-bench-") as tmp:
        for conc in (1, 16):
            result["http_import"][str(conc)] = http_import(args.images, conc, Path(tmp))
    result["images"] = args.images
    result["sql_import"] = sql_import(args.connection)
    result["rows_per_s"] = result["sql_import"].get("rows_per_s")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
