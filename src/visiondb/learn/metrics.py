"""Classifier evaluation in MLDB's `resultsTest` / `aggregatedTest` shapes, computed with scikit-learn."""
from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, log_loss, precision_recall_fscore_support, roc_auc_score

_STATS = ("accuracy", "precision", "recall", "f1Score", "support")


def _summary(per_label: dict[str, dict[str, Any]], weights: np.ndarray | None) -> dict[str, Any]:
    """Average the per-label statistics, support-weighted when `weights` is given, else unweighted (macro)."""
    out: dict[str, Any] = {}
    total_support = int(sum(s["support"] for s in per_label.values()))
    for key in _STATS[:-1]:
        vals = np.array([s[key] for s in per_label.values()], dtype=np.float64)
        if len(vals) == 0:
            out[key] = 0.0
        elif weights is None:
            out[key] = float(vals.mean())
        else:
            out[key] = float(np.average(vals, weights=weights)) if weights.sum() > 0 else 0.0
    out["support"] = total_support
    return out


def results_test(y_true: Any, y_pred: Any, labels: list[str], proba: np.ndarray | None = None) -> dict[str, Any]:
    """Score predictions: overall accuracy, per-label stats (label accuracy = binary label-vs-rest), confusion cells.

    `proba` (columns in `labels` order) adds per-label one-vs-rest `auc` and an overall `logLoss`.
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    labels_arr = np.asarray(labels)
    n = len(y_true)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels_arr, zero_division=0
    )
    cm = confusion_matrix(y_true, y_pred, labels=labels_arr)
    per_label: dict[str, dict[str, Any]] = {}
    for i, label in enumerate(labels):
        tp = cm[i, i]
        fp = cm[:, i].sum() - tp
        fn = cm[i, :].sum() - tp
        tn = n - tp - fp - fn
        per_label[str(label)] = {
            "accuracy": float((tp + tn) / n) if n else 0.0,
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1Score": float(f1[i]),
            "support": int(support[i]),
        }
    if proba is not None:
        proba = np.asarray(proba, dtype=np.float64)
        for i, label in enumerate(labels):
            positive = y_true == labels_arr[i]
            if 0 < positive.sum() < n:
                per_label[str(label)]["auc"] = float(roc_auc_score(positive, proba[:, i]))
    cells = [
        {"actual": str(labels[a]), "predicted": str(labels[p]), "count": int(cm[a, p])}
        for a in range(len(labels))
        for p in range(len(labels))
        if cm[a, p]
    ]
    result: dict[str, Any] = {
        "accuracy": float((y_true == y_pred).mean()) if n else 0.0,
        "labelStatistics": per_label,
        "confusionMatrix": cells,
        "weightedStatistics": _summary(per_label, np.asarray(support, dtype=np.float64)),
        "macroStatistics": _summary(per_label, None),
    }
    if proba is not None and n and set(y_true.tolist()) <= set(labels_arr.tolist()):
        clipped = np.clip(proba, 1e-15, 1.0)
        result["logLoss"] = float(log_loss(y_true, clipped / clipped.sum(axis=1, keepdims=True), labels=labels_arr))
    return result


def _collect(node: Any, path: tuple[str, ...], into: dict[tuple[str, ...], list[float]]) -> None:
    """Gather every numeric leaf under dicts (lists such as the confusion matrix are skipped)."""
    if isinstance(node, dict):
        for key, value in node.items():
            _collect(value, path + (str(key),), into)
    elif isinstance(node, (int, float, np.integer, np.floating)) and not isinstance(node, bool):
        into.setdefault(path, []).append(float(node))


def aggregate(results: list[dict[str, Any]]) -> dict[str, Any]:
    """MLDB's `aggregatedTest`: {min, max, mean, std} of every numeric metric across folds (same nesting)."""
    leaves: dict[tuple[str, ...], list[float]] = {}
    for result in results:
        _collect(result, (), leaves)
    out: dict[str, Any] = {}
    for path, values in leaves.items():
        arr = np.asarray(values, dtype=np.float64)
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = {
            "min": float(arr.min()),
            "max": float(arr.max()),
            "mean": float(arr.mean()),
            "std": float(arr.std()),
        }
    return out
