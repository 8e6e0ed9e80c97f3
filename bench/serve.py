"""Serving benchmark: a real server subprocess classifying real JPEGs at 1, 8 and 32 concurrent clients.

Run: `.venv/bin/python bench/serve.py [--requests 64,192,384] [--max-wait-ms 5]`. Prints one JSON object:
{"clients": {"1": {"p50_ms", "p99_ms", "requests_per_s"}, "8": ..., "32": ...}, "single_forward_ms": ...}
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("VISIONDB_PROGRESS", "0")
CLOTHING = (ROOT / ".." / "shared" / "datasets" / "clothing").resolve()
CLASSES = ["pants", "shoes", "t-shirt"]


def photos(split: str, classes: list[str] | None, per_class: int | None) -> list[tuple[str, Path]]:
    """(label, path) rows of the clothing dataset's `split`, at most `per_class` per class."""
    with open(CLOTHING / "labels.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == split and (classes is None or r["label"] in classes)]
    seen: dict[str, int] = {}
    out = []
    for r in rows:
        if per_class is None or seen.get(r["label"], 0) < per_class:
            seen[r["label"]] = seen.get(r["label"], 0) + 1
            out.append((r["label"], CLOTHING / r["path"]))
    return out


def single_forward_times(blobs: list[bytes], n: int = 40) -> list[float]:
    """In-process times (ms) of decode + preprocess + forward of ONE image with the same embedder."""
    from visiondb.models.embedder import get_embedder

    embedder = get_embedder("efficientnet_lite0")
    embedder.embed_bytes([blobs[0]])
    times = []
    for blob in blobs[:n]:
        t = time.perf_counter()
        embedder.embed_bytes([blob])
        times.append((time.perf_counter() - t) * 1000.0)
    return times


def prepare(db_path: Path) -> str:
    """Build the database: an embedding function, a classifier trained on clothing train photos, a predictor."""
    import visiondb
    from visiondb.core.registry import PROCEDURE_TYPES

    db = visiondb.connect(db_path)
    db.functions.put("emb", {"type": "image.embedding", "params": {"model": "efficientnet_lite0", "useCache": False}})
    if "classifier.experiment" not in PROCEDURE_TYPES.names():
        db.close()
        return "emb"
    train = photos("train", CLASSES, 20)
    db.write_arrow("train", pa.table({"_rowName": [str(i) for i in range(len(train))],
                                      "label": [label for label, _ in train], "url": [str(p) for _, p in train]}))
    db.procedures.put("feat", {"type": "transform", "params": {
        "inputData": "SELECT label, emb(url) AS features FROM train", "outputDataset": "train_features"}})
    db.procedures.put("exp", {"type": "classifier.experiment", "params": {
        "experimentName": "clothes", "inputData": "SELECT features, label FROM train_features", "testFraction": 0.25}})
    db.functions.put("clf", {"type": "sql.expression", "params": {"expression": "clothes_scorer_0(emb(url))"}})
    db.close()
    return "clf"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(db_path: Path, function: str, max_wait_ms: float, max_batch: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = dict(os.environ, VISIONDB_PROGRESS="0")
    proc = subprocess.Popen(
        [sys.executable, "-m", "visiondb.cli", "--db", str(db_path), "serve", "--port", str(port), "--warm", function,
         "--max-wait-ms", str(max_wait_ms), "--max-batch", str(max_batch)],
        env=env, cwd=ROOT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/v1/ping", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.terminate()
    raise SystemExit("server did not start")


def load(url: str, function: str, blobs: list[bytes], clients: int, total: int) -> dict:
    """`clients` threads, each with its own keep-alive httpx client, share `total` multipart uploads."""
    latencies: list[float] = []
    lock = threading.Lock()
    counter = iter(range(total))
    errors: list[str] = []

    def worker() -> None:
        with httpx.Client(base_url=url, timeout=300) as http:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                t = time.perf_counter()
                r = http.post(f"/v1/functions/{function}/application", files={"file": ("x.jpg", blobs[i % len(blobs)])})
                elapsed = (time.perf_counter() - t) * 1000.0
                with lock:
                    if r.status_code != 200:
                        errors.append(r.text[:200])
                    latencies.append(elapsed)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    latencies.sort()
    if errors:
        raise SystemExit(f"{len(errors)} failed requests, e.g. {errors[0]}")
    return {"p50_ms": round(statistics.median(latencies), 2),
            "p99_ms": round(latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 2),
            "requests_per_s": round(total / wall, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--requests", default="64,192,384", help="request count per level (1, 8, 32 clients)")
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--max-batch", type=int, default=32)
    a = ap.parse_args()
    counts = [int(x) for x in a.requests.split(",")]
    blobs = [p.read_bytes() for _, p in photos("test", None, None)]
    forward_times = single_forward_times(blobs)  # timed before and after the load (the machine drifts)
    with tempfile.TemporaryDirectory(prefix="visiondb-bench-") as tmp:
        db_path = Path(tmp) / "bench.vdb"
        function = prepare(db_path)
        proc, url = start_server(db_path, function, a.max_wait_ms, a.max_batch)
        try:
            load(url, function, blobs, 8, 16)  # warm the HTTP path and thread pools
            report: dict = {"clients": {}}
            for clients, total in zip((1, 8, 32), counts):
                report["clients"][str(clients)] = load(url, function, blobs, clients, total)
            forward = statistics.median(forward_times + single_forward_times(blobs))
            report["single_forward_ms"] = round(forward, 2)
            report["function"] = function
            report["batching"] = httpx.get(f"{url}/v1/batching", timeout=30).json().get(function)
            one, many = report["clients"]["1"], report["clients"]["32"]
            report["speedup_32_vs_1"] = round(many["requests_per_s"] / one["requests_per_s"], 2)
            report["p50_1_minus_forward_ms"] = round(one["p50_ms"] - forward, 2)
            print(json.dumps(report))
        finally:
            proc.terminate()
            proc.wait(timeout=60)


if __name__ == "__main__":
    main()
