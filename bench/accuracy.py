"""Accuracy benchmark: test accuracy of every learner family through visiondb's own procedures.

Prints one JSON object: {"results": {name: {"accuracy", "target", "meets", "seconds", ...}}, ...}.
Targets come from hand-written probes with the same weights (see the learning issue). Run a subset with
`--only clothing_lite0_lr,hymenoptera_lite1`; `--quick` shrinks epochs for a smoke run.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("VISIONDB_PROGRESS", "0")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import visiondb  # noqa: E402

DATASETS = REPO / ".." / "shared" / "datasets"
FASHION = Path("/usr/share/datasets/fashion-mnist")
FASHION_LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
BENCHES: dict[str, Callable[["Bench"], dict]] = {}


def bench(name: str) -> Callable:
    def register(fn: Callable[["Bench"], dict]) -> Callable:
        BENCHES[name] = fn
        return fn

    return register


class Bench:
    """One database shared by the benchmarks, so imports and embeddings are done once."""

    def __init__(self, workdir: Path, quick: bool) -> None:
        self.db = visiondb.connect(workdir / "accuracy.duckdb")
        self.quick = quick
        self.done: set[str] = set()

    def once(self, key: str, fn: Callable[[], Any]) -> None:
        if key not in self.done:
            fn()
            self.done.add(key)

    def fashion(self) -> None:
        def load() -> None:
            for split, prefix in (("train", "train"), ("test", "t10k")):
                self.db.procedures.put(f"import_fm_{split}", {"type": "import.idx", "params": {
                    "imagesUrl": str(FASHION / f"{prefix}-images-idx3-ubyte.gz"),
                    "labelsUrl": str(FASHION / f"{prefix}-labels-idx1-ubyte.gz"),
                    "labelNames": FASHION_LABELS, "outputDataset": f"fm_{split}"}})
        self.once("fashion", load)

    def photos(self, name: str) -> None:
        self.once(f"photos_{name}", lambda: self.db.procedures.put(f"import_{name}", {"type": "import.images", "params": {
            "dataFileUrl": str((DATASETS / name).resolve()), "outputDataset": name}}))

    def features(self, name: str, model: str) -> str:
        """Embed dataset `name` with backbone `model` into `<name>_<model>`; returns the table name."""
        self.photos(name)
        table = f"{name}_{model.replace('efficientnet_', '')}"

        def run() -> None:
            fn = model.replace("efficientnet_", "")
            self.db.functions.put(fn, {"type": "image.embedding", "params": {"model": model}})
            self.db.procedures.put(f"feat_{table}", {"type": "transform", "params": {
                "inputData": f"SELECT label, split, {fn}(image) AS features FROM {name}", "outputDataset": table}})
        self.once(table, run)
        return table

    def experiment(self, name: str, params: dict) -> tuple[dict, float]:
        start = time.perf_counter()
        run = self.db.procedures.put(f"exp_{name}", {"type": "classifier.experiment",
                                                     "params": {"experimentName": name, **params}})
        fold = run["status"]["firstRun"]["status"]["folds"][0]
        return fold, time.perf_counter() - start


def split_folds(train: str, test: str) -> list[dict]:
    return [{"trainingWhere": f"split = '{train}'", "testingWhere": f"split = '{test}'"}]


def result(fold: dict, seconds: float, target: float, **extra: Any) -> dict:
    acc = fold["resultsTest"]["accuracy"]
    out = {"accuracy": round(acc, 4), "target": target, "meets": acc >= target, "seconds": round(seconds, 1)}
    if fold.get("history"):
        out["epochs"] = len(fold["history"])
    out.update(extra)
    return out


@bench("fashion_mnist_mlp_pixels")
def fashion_mlp(b: Bench) -> dict:
    b.fashion()
    fold, s = b.experiment("fm_mlp", {
        "algorithm": "mlp_pixels", "configuration": {"epochs": 1 if b.quick else 10},
        "inputData": "SELECT image AS features, label FROM fm_train",
        "testingDataOverride": "SELECT image AS features, label FROM fm_test"})
    return result(fold, s, 0.874, note="Flatten → Dense 128 ReLU → Dense 10, 10 epochs (the tutorial's model)")


@bench("fashion_mnist_cnn")
def fashion_cnn(b: Bench) -> dict:
    b.fashion()
    fold, s = b.experiment("fm_cnn", {
        "algorithm": "cnn", "configuration": {"epochs": 1} if b.quick else {},
        "inputData": "SELECT image AS features, label FROM fm_train",
        "testingDataOverride": "SELECT image AS features, label FROM fm_test"})
    return result(fold, s, 0.91)


def clothing_probe(b: Bench, model: str, target: float, **extra: Any) -> dict:
    """Frozen features of one backbone + standardised logistic regression, train split → test split."""
    table = b.features("clothing", model)
    fold, s = b.experiment(f"cl_{model.replace('efficientnet_', '')}", {
        "inputData": f"SELECT features, label, split FROM {table}", "configuration": {"C": 0.1},
        "datasetFolds": split_folds("train", "test")})
    return result(fold, s, target, **extra)


@bench("clothing_lite0_lr")
def clothing_lite0(b: Bench) -> dict:
    return clothing_probe(b, "efficientnet_lite0", 0.89)


@bench("clothing_lite1_lr")
def clothing_lite1(b: Bench) -> dict:
    return clothing_probe(b, "efficientnet_lite1", 0.0, note="single backbone, for the stacking comparison")


@bench("clothing_lite2_lr")
def clothing_lite2(b: Bench) -> dict:
    return clothing_probe(b, "efficientnet_lite2", 0.0, note="single backbone, for the stacking comparison")


@bench("clothing_stacking")
def clothing_stacking(b: Bench) -> dict:
    tables = [b.features("clothing", f"efficientnet_lite{i}") for i in range(3)]
    if "clothing_stack" not in b.db.datasets.list():
        b.db.sql(
            "CREATE TABLE clothing_stack AS SELECT a._rowName, a.label, a.split, a.features AS f0, b.features AS f1,"
            f" c.features AS f2 FROM {tables[0]} a JOIN {tables[1]} b USING (_rowName) JOIN {tables[2]} c USING (_rowName)")
    fold, s = b.experiment("cl_stack", {
        "algorithm": "stacking", "inputData": "SELECT f0, f1, f2, label, split FROM clothing_stack",
        "configuration": {"baseLearners": [{"features": f, "params": {"C": 0.1}} for f in ("f0", "f1", "f2")],
                          "combine": "average"},
        "datasetFolds": split_folds("train", "test")})
    return result(fold, s, 0.92, note="lite0/lite1/lite2 logistic regressions, out-of-fold averaged probabilities, linear-SVM meta-learner")


@bench("clothing_finetune_lite0")
def clothing_finetune(b: Bench) -> dict:
    b.photos("clothing")
    fold, s = b.experiment("cl_ft", {
        "algorithm": "finetune",
        "configuration": {"model": "efficientnet_lite0", "freeze": 10, "epochs": 1 if b.quick else 4,
                          "headEpochs": 30, "learningRate": 1e-3, "backboneLearningRate": 3e-4,
                          "schedule": "cosine", "augment": {"flip": True, "randomResizedCrop": 0.8}},
        "inputData": "SELECT image AS features, label, split FROM clothing",
        "datasetFolds": split_folds("train", "test")})
    return result(fold, s, 0.0, note="must beat clothing_lite0_lr")


@bench("hymenoptera_lite1")
def hymenoptera_lite1(b: Bench) -> dict:
    table = b.features("hymenoptera", "efficientnet_lite1")
    fold, s = b.experiment("hy_lite1", {
        "inputData": f"SELECT features, label, split FROM {table}", "datasetFolds": split_folds("train", "val")})
    return result(fold, s, 0.97)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", default="", help="comma-separated benchmark names")
    parser.add_argument("--quick", action="store_true", help="1-epoch smoke run")
    parser.add_argument("--workdir", default=None, help="keep the database here (default: a temp dir)")
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n] or list(BENCHES)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        b = Bench(workdir, args.quick)
        results: dict[str, Any] = {}
        for name in names:
            try:
                results[name] = BENCHES[name](b)
            except Exception as exc:  # one failing learner must not hide the others' figures
                results[name] = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"{name}: {results[name]}", file=sys.stderr, flush=True)
            # the figures so far, one JSON line each time: a run stopped by run_all's timeout keeps them
            print(json.dumps({"benchmark": "accuracy", "quick": args.quick, "partial": True, "results": results}),
                  flush=True)
        single = [results[k]["accuracy"] for k in ("clothing_lite0_lr", "clothing_lite1_lr", "clothing_lite2_lr")
                  if "accuracy" in results.get(k, {})]
        if "accuracy" in results.get("clothing_stacking", {}) and single:
            results["clothing_stacking"]["above_every_single_backbone"] = results["clothing_stacking"]["accuracy"] > max(single)
        if "accuracy" in results.get("clothing_finetune_lite0", {}) and "accuracy" in results.get("clothing_lite0_lr", {}):
            ft = results["clothing_finetune_lite0"]
            ft["target"] = results["clothing_lite0_lr"]["accuracy"]
            ft["meets"] = ft["accuracy"] > ft["target"]
        print(json.dumps({"benchmark": "accuracy", "quick": args.quick, "results": results}))
        b.db.close()


if __name__ == "__main__":
    main()
