"""Fashion-MNIST where it lives: MariaDB (or PostgreSQL) tables → visiondb → classifier → predictions back in SQL.

Follows MariaDB's Fashion-MNIST tutorial layout: `categories(id, name)`, `img_use(id, use)` (1 = train, 2 = test),
`tf_images(img_id, img_label, img_pixels, img_use)` with PNG bytes in `img_pixels`. visiondb imports a JOIN of
them with `import.sql`, trains a pixel classifier, and writes `prediction_results` back with `export.sql`.

    python examples/mariadb_fashion_mnist.py [--connection URL] [--train-rows N] [--prefix fm_]
"""
from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

import visiondb  # noqa: E402
from visiondb.ingest.idx import idx_images_to_png, read_idx  # noqa: E402
from visiondb.storage import external  # noqa: E402

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
DEFAULT_URL = "mysql+pymysql://root@127.0.0.1:3306/test"
CATEGORIES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
USES = {1: "train", 2: "test"}
TABLES = ("categories", "img_use", "tf_images", "prediction_results")


def read_fashion_mnist(folder: Path = FASHION_MNIST) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{'train': (images, labels), 'test': (...)} from the four gzipped IDX files."""
    out = {}
    for split, stem in (("train", "train"), ("test", "t10k")):
        arrays = []
        for kind in ("images-idx3", "labels-idx1"):
            path = folder / f"{stem}-{kind}-ubyte.gz"
            arrays.append(read_idx(gzip.decompress(path.read_bytes())))
        out[split] = (arrays[0], arrays[1])
    return out


def tf_images_table(data: dict[str, tuple[np.ndarray, np.ndarray]]) -> pa.Table:
    """The `tf_images` rows: img_id 0..59999 train then 60000..69999 test, PNG bytes, label, use."""
    ids, labels, pixels, uses = [], [], [], []
    start = 0
    for use_id, split in USES.items():
        images, lab = data[split]
        pixels.extend(idx_images_to_png(images))
        ids.extend(range(start, start + len(images)))
        labels.extend(int(v) for v in lab)
        uses.extend([use_id] * len(images))
        start += len(images)
    return pa.table({"img_id": pa.array(ids, pa.int32()), "img_label": pa.array(labels, pa.int32()),
                     "img_pixels": pa.array(pixels, pa.binary()), "img_use": pa.array(uses, pa.int32())})


def names(prefix: str = "") -> dict[str, str]:
    """Remote table names (a prefix keeps concurrent runs on a shared database apart)."""
    return {t: f"{prefix}{t}" for t in TABLES}


def load_remote(url: str, tf_images: pa.Table, prefix: str = "", chunk_rows: int = 5_000) -> None:
    """Create and fill categories, img_use and tf_images on the remote database (idempotent upserts)."""
    engine = external.make_engine(url)
    t = names(prefix)
    try:
        cats = pa.table({"id": pa.array(range(len(CATEGORIES)), pa.int32()), "name": CATEGORIES})
        uses = pa.table({"id": pa.array(list(USES), pa.int32()), "use": list(USES.values())})
        for name, data, key in ((t["categories"], cats, "id"), (t["img_use"], uses, "id"),
                                (t["tf_images"], tf_images, "img_id")):
            table = external.ensure_table(engine, name, data.schema, [key])
            for start in range(0, data.num_rows, chunk_rows):
                external.upsert_arrow(engine, table, data.slice(start, chunk_rows), [key])
    finally:
        engine.dispose()


def import_query(url: str, prefix: str = "") -> str:
    """The JOIN bringing each image with its label name and split (identifiers quoted for the remote dialect)."""
    engine = external.make_engine(url)
    q = engine.dialect.identifier_preparer.quote
    engine.dispose()
    t = names(prefix)
    return (
        f"SELECT i.img_id, i.img_pixels AS image, i.img_label, c.name AS label, u.{q('use')} AS split"
        f" FROM {q(t['tf_images'])} i JOIN {q(t['categories'])} c ON c.id = i.img_label"
        f" JOIN {q(t['img_use'])} u ON u.id = i.img_use ORDER BY i.img_id"
    )


def run(url: str = DEFAULT_URL, *, prefix: str = "", train_rows: int = 60_000, db_path: str | None = None,
        tf_images: pa.Table | None = None, drop: bool = False, epochs: int = 10) -> dict:
    """The whole tutorial flow; returns counts, timings and per-class accuracy computed on the remote database."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if tf_images is None:
        tf_images = tf_images_table(read_fashion_mnist())
    load_remote(url, tf_images, prefix)
    timings["load_remote_s"] = time.perf_counter() - t0
    t = names(prefix)
    db = visiondb.connect(db_path)
    try:
        t0 = time.perf_counter()
        imported = db.procedures.put("import_fashion", {"type": "import.sql", "params": {
            "connection": url, "query": import_query(url, prefix), "outputDataset": "fashion", "named": "img_id",
        }})["status"]["firstRun"]["status"]
        timings["import_sql_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        # the tutorial's model: Flatten → Dense(128, ReLU) → Dense(10, softmax) on the raw pixels
        experiment = db.procedures.put("train_fashion", {"type": "classifier.experiment", "params": {
            "experimentName": "fashion_mlp", "algorithm": "mlp_pixels", "configuration": {"epochs": epochs},
            "inputData": "SELECT image AS features, CAST(img_label AS VARCHAR) AS label FROM fashion"
                         f" WHERE split = 'train' AND img_id < {int(train_rows)}",
            "testingDataOverride": "SELECT image AS features, CAST(img_label AS VARCHAR) AS label FROM fashion"
                                   " WHERE split = 'test'",
        }})["status"]["firstRun"]["status"]
        timings["train_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        db.procedures.put("predict_fashion", {"type": "classifier.predict", "params": {
            "inputData": "SELECT _rowName, img_id, image FROM fashion WHERE split = 'test'",
            "functionName": "fashion_mlp_scorer_0", "inputs": ["image"], "outputDataset": "predictions"}})
        timings["predict_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        export = {"type": "export.sql", "params": {
            "connection": url, "outputTable": t["prediction_results"], "key": "img_id",
            "inputData": "SELECT CAST(img_id AS INTEGER) AS img_id, CAST(predicted AS INTEGER) AS predicted_label,"
                         " probability FROM predictions",
        }}
        exported = db.procedures.put("export_predictions", export)["status"]["firstRun"]["status"]
        timings["export_sql_s"] = time.perf_counter() - t0
        report = {"imported": imported["rowCount"], "importErrors": imported["errorCount"],
                  "exported": exported["rowsWritten"],
                  "testAccuracy": experiment["folds"][0]["resultsTest"]["accuracy"],
                  "perClassAccuracy": per_class_accuracy(url, prefix), "timings": timings}
    finally:
        db.close()
    if drop:
        drop_remote(url, prefix)
    return report


def per_class_accuracy(url: str, prefix: str = "") -> dict[str, float]:
    """Accuracy per category, computed by the remote database from prediction_results ⋈ tf_images ⋈ categories."""
    engine = external.make_engine(url)
    q = engine.dialect.identifier_preparer.quote
    t = names(prefix)
    query = (
        f"SELECT c.name, AVG(CASE WHEN p.predicted_label = i.img_label THEN 1.0 ELSE 0.0 END) AS accuracy"
        f" FROM {q(t['prediction_results'])} p JOIN {q(t['tf_images'])} i ON i.img_id = p.img_id"
        f" JOIN {q(t['categories'])} c ON c.id = i.img_label GROUP BY c.name ORDER BY c.name"
    )
    try:
        rows = [r for chunk in external.stream_query(engine, query) for r in chunk.to_pylist()]
    finally:
        engine.dispose()
    return {r["name"]: round(float(r["accuracy"]), 4) for r in rows}


def drop_remote(url: str, prefix: str = "") -> None:
    """Drop the tutorial's tables (prediction_results first)."""
    engine = external.make_engine(url)
    try:
        for name in reversed(list(names(prefix).values())):
            external.drop_table(engine, name)
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connection", default=DEFAULT_URL, help="SQLAlchemy URL (password may come from "
                        "VISIONDB_SQL_PASSWORD)")
    parser.add_argument("--prefix", default="", help="prefix for the remote table names")
    parser.add_argument("--train-rows", type=int, default=60_000, help="training images used (of 60,000)")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs (the tutorial uses 10)")
    parser.add_argument("--db", default=None, help="visiondb file (default: in memory)")
    parser.add_argument("--drop", action="store_true", help="drop the remote tables at the end")
    args = parser.parse_args()
    print(json.dumps(run(args.connection, prefix=args.prefix, train_rows=args.train_rows, db_path=args.db,
                         drop=args.drop, epochs=args.epochs), indent=2))


if __name__ == "__main__":
    main()
