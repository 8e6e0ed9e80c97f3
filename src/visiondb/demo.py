"""`visiondb demo`: MLDB's car-brand transfer-learning workflow, replayed on the CC0 clothing photos."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from .errors import VisionDBError

DATASET_ZIP = "https://github.com/alexeygrigorev/clothing-dataset-small/archive/refs/heads/master.zip"
SHARED = Path("..") / "shared" / "datasets" / "clothing"


def find_data(explicit: str | None) -> str:
    """$VISIONDB_DEMO_DATA, else ../shared/datasets/clothing, else the dataset's public zip (read as an archive)."""
    for candidate in (explicit, os.environ.get("VISIONDB_DEMO_DATA")):
        if candidate:
            return candidate
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        folder = (base / SHARED).resolve()
        if folder.is_dir():
            return str(folder)
    return DATASET_ZIP


def say(text: str) -> None:
    print(text, flush=True)


def run_demo(db_path: str, data: str | None = None, serve: str = "auto", port: int = 8080) -> int:
    import visiondb

    source = find_data(data)
    started = time.perf_counter()
    say(f"visiondb demo — database {db_path}, photos from {source}")
    db = visiondb.connect(db_path)

    say("\n1. PUT function effnet (image.embedding, EfficientNet-Lite0 penultimate layer)")
    db.functions.put("effnet", {"type": "image.embedding", "params": {"model": "efficientnet_lite0"}})

    say("2. import.images → dataset clothes")
    run = db.procedures.put("import_clothes", {"type": "import.images",
                                               "params": {"dataFileUrl": source, "outputDataset": "clothes"}})
    status = run["status"]["firstRun"]["status"]
    say(f"   {status['rowCount']} images, {status['errorCount']} errors")
    say(db.sql("SELECT split, count(*) AS images, count(DISTINCT label) AS classes FROM clothes GROUP BY split ORDER BY split").df().to_string(index=False))

    say("\n3. transform: SELECT label, split, effnet(image) AS features FROM clothes → clothes_features")
    t0 = time.perf_counter()
    db.procedures.put("featurize", {"type": "transform", "params": {
        "inputData": "SELECT label, split, effnet(image) AS features FROM clothes",
        "outputDataset": "clothes_features"}})
    n = db.sql("SELECT count(*) FROM clothes_features").fetchone()[0]
    say(f"   {n} vectors in {time.perf_counter() - t0:.1f} s")

    say("\n4. classifier.experiment clothing_cls: logistic regression, train split → test split")
    run = db.procedures.put("experiment", {"type": "classifier.experiment", "params": {
        "experimentName": "clothing_cls",
        "inputData": "SELECT features, label, split FROM clothes_features WHERE split IN ('train', 'test')",
        "algorithm": "logistic_regression",
        "configuration": {"C": 0.1},  # 1,280 features, ~3,000 rows: a little more regularisation than sklearn's 1.0
        "datasetFolds": [{"trainingWhere": "split = 'train'", "testingWhere": "split = 'test'"}]}})
    results = run["status"]["firstRun"]["status"]["folds"][0]["resultsTest"]
    print_results(results)

    say("\n5. PUT function clothing_predictor (sql.expression): clothing_cls_scorer_0(effnet(url))")
    db.functions.put("clothing_predictor", {"type": "sql.expression",
                                            "params": {"expression": "clothing_cls_scorer_0(effnet(url))"}})
    examples = pick_examples(db, "clothes", 3)
    say("   SELECT clothing_predictor(?) for three test photos:")
    for uri, label, _ in examples:
        out = db.sql("SELECT clothing_predictor(?) AS p", [uri]).fetchone()[0]
        score = dict(out["scores"])[out["label"]] if isinstance(out["scores"], list) else out["scores"][out["label"]]
        say(f"   {photo_name(uri):<44} true {label:<10} predicted {out['label']:<10} p={score:.2f}")
    say(f"\nTest accuracy {results['accuracy']:.3f}; demo pipeline took {time.perf_counter() - started:.0f} s.")
    say(f"Reopen later: visiondb --db {db_path} sql \"SELECT clothing_predictor('<photo path>')\"")
    db.close()
    if serve == "no":
        return 0
    uri, _, data = examples[0]
    return serve_demo(db_path, uri, data, port, forever=(serve == "yes" or (serve == "auto" and sys.stdin.isatty())))


def pick_examples(db: Any, dataset: str, n: int) -> list[tuple[str, str, bytes]]:
    """n test-split photos of `dataset` as (URI, label, bytes); the bytes come from the database's media store,
    so archive members and URLs are not fetched again."""
    from .storage.images import ref_from_value

    rows = db.sql(f"SELECT image, label FROM {dataset} WHERE split = 'test' ORDER BY hash(_rowName) LIMIT ?",
                  [n]).fetchall()
    examples = []
    for image, label in rows:
        data, _ = db.read_ref(ref_from_value(image))
        examples.append((image["uri"], label, data))
    return examples


def photo_name(uri: str) -> str:
    """The file name at the end of a path, URL or archive member URI."""
    return uri.rstrip("/").rsplit("/", 1)[-1].rsplit("#", 1)[-1]


def local_root(uri: str) -> Path | None:
    """The dataset folder (<root>/<split>/<label>/<file>) of a local photo, for the server's --allow-root;
    None for archive members and URLs, which the server does not read from disk."""
    from .ingest.fetch import parse_uri

    try:
        parsed = parse_uri(uri)
    except VisionDBError:
        return None
    if parsed.kind != "local" or parsed.path is None:
        return None
    parents = parsed.path.resolve().parents
    return parents[min(2, len(parents) - 1)]


def usable_port(port: int) -> int:
    """`port`, or a free one when it is 0 or another server already listens on it."""
    import socket

    with socket.socket() as probe:
        if port and probe.connect_ex(("127.0.0.1", port)) != 0:
            return port
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        return free.getsockname()[1]


def wait_for_server(proc: Any, url: str, timeout_s: float = 120.0) -> bool:
    """Poll `url`/v1/ping until it answers; False (and a message) when the server process exits or never answers."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            say(f"error: the server exited early with code {proc.returncode}")
            return False
        try:
            httpx.get(f"{url}/v1/ping", timeout=1.0)
            return True
        except httpx.HTTPError:
            time.sleep(0.2)
    say(f"error: the server did not answer at {url} within {timeout_s:.0f} s")
    return False


def print_results(results: dict[str, Any]) -> None:
    import pandas as pd

    stats = pd.DataFrame(results["labelStatistics"]).T[["precision", "recall", "f1Score", "support"]]
    say(f"   test accuracy {results['accuracy']:.3f}\n")
    say(stats.round(3).to_string())
    cm = pd.DataFrame(results["confusionMatrix"]).pivot_table(
        index="actual", columns="predicted", values="count", fill_value=0, aggfunc="sum")
    say("\n   confusion matrix (rows actual, columns predicted)")
    say(cm.astype(int).to_string())


def serve_demo(db_path: str, example_uri: str, example: bytes, port: int, forever: bool) -> int:
    """Start the REST server on the demo DB, print the URL and a curl line, check it answers with `example`'s class.

    Returns 0, or non-zero when the server exited early or never answered."""
    import subprocess

    import httpx

    port = usable_port(port)
    root = local_root(example_uri)
    cmd = [sys.executable, "-m", "visiondb.cli", "--db", db_path, "serve", "--port", str(port),
           *(["--allow-root", str(root)] if root else []), "--allow-fetch", "127.0.0.1", "--warm", "clothing_predictor"]
    proc = subprocess.Popen(cmd)
    url = f"http://127.0.0.1:{port}"
    try:
        if not wait_for_server(proc, url):
            return proc.returncode or 1
        say(f"\nServing {db_path} at {url}  (API docs: {url}/docs)")
        say("Classify a photo:")
        shown = example_uri if root else "<photo.jpg>"
        say(f"  curl -F file=@{shown} {url}/v1/functions/clothing_predictor/application")
        reply = httpx.post(f"{url}/v1/functions/clothing_predictor/application",
                           files={"file": (photo_name(example_uri), example)}, timeout=60.0)
        say(f"  → {reply.status_code} {reply.text[:200]}")
        if forever:
            say("Press Ctrl-C to stop the server.")
            proc.wait()
        return 0 if reply.status_code == 200 else 1
    except KeyboardInterrupt:
        return 0
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=20)
