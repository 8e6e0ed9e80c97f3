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


def image_folder_arrays(root: Path | str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Encoded image bytes and labels of one split of a `<split>/<class>/<file>` dataset with labels.csv."""
    import csv

    root = Path(root)
    with open(root / "labels.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == split]
    data = np.empty(len(rows), dtype=object)
    for i, r in enumerate(rows):
        data[i] = (root / r["path"]).read_bytes()
    return data, np.asarray([r["label"] for r in rows], dtype=object)


def lite_features(images: np.ndarray, model: str = "efficientnet_lite0", batch: int = 64) -> np.ndarray:
    """Pooled EfficientNet-Lite features [n, 1280] of encoded images (shorter side 256 bicubic, centre crop, (x-127)/128)."""
    import torch

    from visiondb.learn.algorithms.finetune import LITE_IMAGE_SIZES, load_lite_backbone
    from visiondb.learn.algorithms.images import decode_images

    net, dim = load_lite_backbone(model)
    net.eval()
    side = LITE_IMAGE_SIZES[model]
    out = np.empty((len(images), dim), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(images), batch):
            arr = decode_images(images[start:start + batch], grayscale=False, size=(side, side), resize="crop")
            x = (torch.from_numpy(arr).float() - 127.0) / 128.0
            out[start:start + batch] = net(x).numpy()
    return out


def run_clothing_features(dataset_root: Path | str, algorithm: str = "logistic_regression", params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train `algorithm` on EfficientNet-Lite0 features of clothing/train and score clothing/test."""
    from visiondb.learn.algorithms import make_estimator
    from visiondb.learn.metrics import results_test

    start = time.perf_counter()
    x_tr, y_tr = image_folder_arrays(dataset_root, "train")
    x_te, y_te = image_folder_arrays(dataset_root, "test")
    f_tr, f_te = lite_features(x_tr), lite_features(x_te)
    feat_s = time.perf_counter() - start
    model = make_estimator(algorithm, params or {}, seed=0).fit(f_tr, y_tr)
    proba = model.predict_proba(f_te)
    res = results_test(y_te, model.classes_[proba.argmax(1)], list(model.classes_), proba)
    return {"algorithm": algorithm, "accuracy": res["accuracy"], "train_rows": len(y_tr), "test_rows": len(y_te),
            "featurize_seconds": round(feat_s, 1), "macroF1": res["macroStatistics"]["f1Score"]}
