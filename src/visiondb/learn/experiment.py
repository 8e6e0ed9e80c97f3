"""`run_experiment`: validate training data, train one model per fold, score each, aggregate (MLDB classifier.experiment)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from visiondb.errors import TrainingError
from visiondb.learn.algorithms.registry import get_algorithm, make_estimator, release_device
from visiondb.learn.metrics import aggregate, results_test
from visiondb.learn.splits import Fold, make_folds


@dataclass
class FoldResult:
    """One fold: the trained model, its test results, training history and the row indices used."""

    model: Any
    resultsTest: dict[str, Any]
    history: list[dict[str, Any]] | None
    train_index: np.ndarray
    test_index: np.ndarray
    fit_seconds: float = 0.0


@dataclass
class ExperimentResult:
    """All folds plus `aggregatedTest`; `kept_rows` maps positions back to the caller's rows after dropped labels."""

    algorithm: str
    params: dict[str, Any]
    labels: list[str]
    folds: list[FoldResult] = field(default_factory=list)
    aggregatedTest: dict[str, Any] = field(default_factory=dict)
    kept_rows: np.ndarray | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON body in MLDB's classifier.experiment shape (models left out)."""
        return {
            "folds": [
                {"resultsTest": f.resultsTest, "history": f.history, "fitSeconds": f.fit_seconds,
                 "trainRows": len(f.train_index), "testRows": len(f.test_index)}
                for f in self.folds
            ],
            "aggregatedTest": self.aggregatedTest,
        }


def _missing_label(value: Any) -> bool:
    """None, NaN or empty string count as a missing label."""
    if value is None:
        return True
    if isinstance(value, float) and np.isnan(value):
        return True
    return isinstance(value, str) and value.strip() == ""


def check_labels(y: Any, *, drop_missing_labels: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Return (labels as strings, kept row positions); a missing label is an error naming the row unless dropped."""
    y_list = list(y) if y is not None else []
    if not y_list:
        raise TrainingError("training data is empty: no rows", field="label")
    missing = [i for i, v in enumerate(y_list) if _missing_label(v)]
    if missing and not drop_missing_labels:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise TrainingError(
            f"row {missing[0]} has no label{more}; set dropMissingLabels to skip such rows", field="label", row=missing[0]
        )
    kept = np.setdiff1d(np.arange(len(y_list)), np.asarray(missing, dtype=np.int64))
    labels = np.asarray([str(y_list[i]) for i in kept], dtype=object)
    if len(labels) == 0:
        raise TrainingError("training data is empty: every row lacks a label", field="label")
    classes = np.unique(labels)
    if len(classes) < 2:
        raise TrainingError(f"training data has a single class {classes[0]!r}; need at least two", field="label")
    return labels, kept


def check_features(X: Any, rows: np.ndarray, name: str = "features") -> np.ndarray:
    """Stack feature vectors to float32 [n, d]; errors name the first row with a wrong length or NaN/inf values."""
    if isinstance(X, np.ndarray) and X.ndim == 2 and X.dtype != object:
        mat = X[rows].astype(np.float32, copy=False)
    else:
        seq = [X[i] for i in rows]
        lengths = [len(np.atleast_1d(v)) if v is not None else -1 for v in seq]
        if not lengths:
            raise TrainingError(f"{name}: no rows")
        expected = lengths[0]
        for pos, length in enumerate(lengths):
            if length != expected or seq[pos] is None:
                raise TrainingError(
                    f"{name}: row {int(rows[pos])} has {max(length, 0)} values but row {int(rows[0])} has {expected}",
                    field=name, row=int(rows[pos]),
                )
        mat = np.asarray([np.asarray(v, dtype=np.float32) for v in seq], dtype=np.float32)
    if mat.ndim != 2 or mat.shape[1] == 0:
        raise TrainingError(f"{name}: expected a 2-d non-empty feature matrix, got shape {mat.shape}", field=name)
    bad = ~np.isfinite(mat).all(axis=1)
    if bad.any():
        bad_rows = [int(rows[i]) for i in np.flatnonzero(bad)]
        shown = ", ".join(map(str, bad_rows[:10])) + (" ..." if len(bad_rows) > 10 else "")
        raise TrainingError(f"{name}: NaN or infinite values in row(s) {shown}", field=name, rows=bad_rows[:100])
    return mat


def row_label(position: int, row_names: Sequence[str] | None = None) -> str:
    """How errors name an input row: its `_rowName` when the caller has them, else its position."""
    return f"row {row_names[position]!r}" if row_names is not None else f"row {position}"


def check_images(X: Any, rows: np.ndarray, row_names: Sequence[str] | None = None) -> np.ndarray:
    """1-d object array of non-empty encoded images; errors name the first bad row."""
    out = np.empty(len(rows), dtype=object)
    for pos, i in enumerate(rows):
        value = X[i]
        if isinstance(value, memoryview):
            value = value.tobytes()
        if not isinstance(value, (bytes, bytearray)) or len(value) == 0:
            raise TrainingError(
                f"image: {row_label(int(i), row_names)} has no encoded image bytes", field="image",
                row=row_names[int(i)] if row_names is not None else int(i),
            )
        out[pos] = bytes(value)
    return out


def check_decodable(estimator: Any, X: np.ndarray, rows: np.ndarray, row_names: Sequence[str] | None = None) -> None:
    """Decode every image once with the network's own settings, so a corrupt one fails before any fold trains."""
    check = getattr(estimator, "undecodable", None)
    failures = check(X) if check is not None else {}
    if not failures:
        return
    bad = [int(rows[pos]) for pos in failures]
    ids = [row_names[i] if row_names is not None else i for i in bad]
    first = next(iter(failures.values()))
    named = ", ".join(row_label(i, row_names) for i in bad[:5]) + (" ..." if len(bad) > 5 else "")
    more = f" ({len(bad)} undecodable images: {named})" if len(bad) > 1 else ""
    raise TrainingError(
        f"image: {row_label(bad[0], row_names)}: {first.details.get('reason', first.message)}{more}",
        field="image", row=ids[0], rows=ids[:100],
    )


def prepare_inputs(
    algorithm: str, X: Any, y: Any, *, drop_missing_labels: bool = False, estimator: Any = None,
    row_names: Sequence[str] | None = None,
) -> tuple[Any, np.ndarray, np.ndarray]:
    """Validate X and y for `algorithm`'s input kind; returns (X, y, kept row positions).

    Images are also decoded with `estimator`'s settings when one is given; errors name rows by `row_names`."""
    kind = get_algorithm(algorithm).input_kind
    y_arr, kept = check_labels(y, drop_missing_labels=drop_missing_labels)
    n = len(y) if y is not None else 0
    inputs: Sequence[Any] = X if kind == "feature_list" else [X]
    for i, part in enumerate(inputs):
        if part is None or len(part) != n:
            got = "none" if part is None else len(part)
            raise TrainingError(f"input {i}: {got} rows of features but {n} labels", field="features")
    if kind == "features":
        return check_features(X, kept), y_arr, kept
    if kind == "images":
        images = check_images(X, kept, row_names)
        check_decodable(estimator, images, kept, row_names)
        return images, y_arr, kept
    return [check_features(part, kept, name=f"features[{i}]") for i, part in enumerate(X)], y_arr, kept


def _take(X: Any, idx: np.ndarray) -> Any:
    """Rows of X (or of each matrix when X is a list)."""
    return [m[idx] for m in X] if isinstance(X, list) else X[idx]


def run_experiment(
    X: Any,
    y: Any,
    *,
    algorithm: str = "logistic_regression",
    params: dict[str, Any] | None = None,
    folds: list[Fold] | dict[str, Any] | None = None,
    seed: int = 0,
    labels: list[str] | None = None,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    class_weight: str | None = None,
    drop_missing_labels: bool = False,
    row_names: Sequence[str] | None = None,
) -> ExperimentResult:
    """Train and score one model per fold. `folds` = explicit (train, test) index pairs over the caller's rows, or a
    dict of `make_folds` keywords (test_fraction, kfold, test_mask), default a stratified 50/50 split.
    `row_names` (the caller's `_rowName`s) name rows in input errors; without them errors give positions."""
    probe = make_estimator(algorithm, params, seed=seed, class_weight=class_weight)  # config errors first
    Xv, yv, kept = prepare_inputs(
        algorithm, X, y, drop_missing_labels=drop_missing_labels, estimator=probe, row_names=row_names
    )
    if folds is None or isinstance(folds, dict):
        fold_list = make_folds(yv, seed=seed, **(folds or {}))
    else:
        position = {int(r): p for p, r in enumerate(kept)}
        fold_list = []
        for k, (tr, te) in enumerate(folds):
            tr_p = np.asarray([position[int(r)] for r in tr if int(r) in position], dtype=np.int64)
            te_p = np.asarray([position[int(r)] for r in te if int(r) in position], dtype=np.int64)
            if len(tr_p) == 0 or len(te_p) == 0:
                raise TrainingError(f"fold {k}: {len(tr_p)} training and {len(te_p)} testing rows; both must be non-empty")
            fold_list.append((tr_p, te_p))
    label_list = list(labels) if labels is not None else sorted(np.unique(yv).tolist())
    result = ExperimentResult(algorithm, dict(params or {}), label_list, kept_rows=kept)
    for k, (tr, te) in enumerate(fold_list):
        if len(np.unique(yv[tr])) < 2:
            raise TrainingError(f"fold {k}: the training rows hold a single class {yv[tr][0]!r}")
        model = make_estimator(algorithm, params, seed=seed, class_weight=class_weight)
        if on_progress is not None and hasattr(model, "on_epoch"):
            model.on_epoch = lambda epoch, logs, k=k: on_progress({"fold": k, "epoch": epoch, **logs})
        start = time.perf_counter()
        model.fit(_take(Xv, tr), yv[tr])
        fit_s = time.perf_counter() - start
        proba = model.predict_proba(_take(Xv, te))
        release_device(model)  # scored: off the accelerator, so k fold models do not pile up there
        classes = [str(c) for c in model.classes_]
        pred = np.asarray(classes, dtype=object)[proba.argmax(axis=1)]
        full = np.zeros((len(te), len(label_list)))
        for j, c in enumerate(classes):
            if c in label_list:
                full[:, label_list.index(c)] = proba[:, j]
        scores = results_test(yv[te], pred, label_list, full)
        result.folds.append(FoldResult(model, scores, getattr(model, "history", None), kept[tr], kept[te], round(fit_s, 3)))
        if on_progress is not None:
            on_progress({"fold": k, "done": True, "accuracy": scores["accuracy"]})
    result.aggregatedTest = aggregate([f.resultsTest for f in result.folds])
    return result
