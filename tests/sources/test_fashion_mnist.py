"""The Fashion-MNIST tutorial flow (examples/mariadb_fashion_mnist.py) against MariaDB and PostgreSQL, full data."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pyarrow as pa
import pytest

from visiondb.storage import external

ROOT = Path(__file__).resolve().parents[2]


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mariadb_fashion_mnist", ROOT / "examples" / "mariadb_fashion_mnist.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def example() -> ModuleType:
    module = load_example()
    if not (module.FASHION_MNIST / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"Fashion-MNIST IDX files not found under {module.FASHION_MNIST}")
    return module


@pytest.fixture(scope="module")
def tf_images(example: ModuleType) -> pa.Table:
    """The 70,000 PNG rows, encoded once for both databases."""
    return example.tf_images_table(example.read_fashion_mnist())


def test_fashion_mnist_roundtrip(remote_url: str, table_name: str, example: ModuleType, tf_images: pa.Table) -> None:
    prefix = table_name + "_"
    try:
        report = example.run(remote_url, prefix=prefix, train_rows=2_000, epochs=2, tf_images=tf_images)
        assert report["imported"] == 70_000 and report["importErrors"] == 0
        assert report["exported"] == 10_000
        assert set(report["perClassAccuracy"]) == set(example.CATEGORIES)
        assert report["testAccuracy"] > 0.6
        engine = external.make_engine(remote_url)
        q = engine.dialect.identifier_preparer.quote
        count = f"SELECT COUNT(*) FROM {q(prefix + 'prediction_results')}"
        assert next(external.stream_query(engine, count)).column(0)[0].as_py() == 10_000
        # re-running the export (same procedure) upserts: still 10,000 rows, not 20,000
        import visiondb

        db = visiondb.connect()
        db.write_arrow("prediction_results", pa.table({"img_id": pa.array(range(60_000, 70_000), pa.int32()),
                                                       "predicted_label": pa.array([0] * 10_000, pa.int32())}))
        for _ in range(2):
            db.procedures.put("export_predictions", {"type": "export.sql", "params": {
                "connection": remote_url, "inputData": "SELECT img_id, predicted_label FROM prediction_results",
                "outputTable": prefix + "prediction_results", "key": "img_id"}})
        assert next(external.stream_query(engine, count)).column(0)[0].as_py() == 10_000
        acc = example.per_class_accuracy(remote_url, prefix)
        assert acc["T-shirt/top"] == 1.0 and acc["Trouser"] == 0.0  # everything now predicted as class 0
        engine.dispose()
        db.close()
    finally:
        example.drop_remote(remote_url, prefix)
