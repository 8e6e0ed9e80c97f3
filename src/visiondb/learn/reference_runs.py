"""Long accuracy runs (not tests) for bench/accuracy.py: Fashion-MNIST with `mlp_pixels` and `cnn`."""
from __future__ import annotations

import gzip
import io
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def _read_idx(path: Path) -> np.ndarray:
    """Read a gzipped IDX file (images [n, 28, 28] or labels [n]) as uint8."""
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def fashion_mnist_arrays(root: Path | str = FASHION_MNIST_DIR) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train_images [60000, 28, 28] uint8, train_labels [60000], test_images [10000, 28, 28], test_labels [10000])."""
    root = Path(root)
    return (
        _read_idx(root / "train-images-idx3-ubyte.gz"),
        _read_idx(root / "train-labels-idx1-ubyte.gz"),
        _read_idx(root / "t10k-images-idx3-ubyte.gz"),
        _read_idx(root / "t10k-labels-idx1-ubyte.gz"),
    )


def encode_png(images: np.ndarray) -> np.ndarray:
    """Encode uint8 greyscale images as PNG bytes in a 1-d object array (the input image algorithms take)."""
    out = np.empty(len(images), dtype=object)
    for i, img in enumerate(images):
        buf = io.BytesIO()
        Image.fromarray(img, mode="L").save(buf, format="PNG", compress_level=1)
        out[i] = buf.getvalue()
    return out


def run_fashion_mnist(algorithm: str, params: dict[str, Any] | None = None, *, seed: int = 0, limit: int | None = None) -> dict[str, Any]:
    """Train `algorithm` on the Fashion-MNIST train split (PNG bytes), score on t10k; returns accuracy and timings."""
    from visiondb.learn.algorithms import make_estimator
    from visiondb.learn.metrics import results_test

    x_train, y_train, x_test, y_test = fashion_mnist_arrays()
    if limit:
        x_train, y_train = x_train[:limit], y_train[:limit]
    labels = np.asarray(FASHION_LABELS, dtype=object)
    train_bytes, test_bytes = encode_png(x_train), encode_png(x_test)
    model = make_estimator(algorithm, params or {}, seed=seed)
    start = time.perf_counter()
    model.fit(train_bytes, labels[y_train])
    fit_s = time.perf_counter() - start
    proba = model.predict_proba(test_bytes)
    pred = model.classes_[proba.argmax(1)]
    results = results_test(labels[y_test], pred, list(model.classes_), proba)
    return {
        "algorithm": algorithm, "params": params or {}, "accuracy": results["accuracy"], "fit_seconds": round(fit_s, 1),
        "epochs": len(getattr(model, "history", []) or []), "history": getattr(model, "history", None),
    }


if __name__ == "__main__":
    import json
    import sys

    algo = sys.argv[1] if len(sys.argv) > 1 else "mlp_pixels"
    extra = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    print(json.dumps(run_fashion_mnist(algo, extra), indent=1))
