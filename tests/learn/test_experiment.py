"""run_experiment: per-fold models and scores, aggregation, and clear errors for bad training data."""
from __future__ import annotations

import json

import numpy as np
import pytest

from visiondb.errors import ConfigError, TrainingError
from visiondb.learn.experiment import run_experiment
from visiondb.learn.splits import make_folds


def test_kfold_experiment(fm_features) -> None:
    X, y = fm_features
    events = []
    result = run_experiment(X[:300], y[:300], algorithm="mlp", params={"epochs": 3, "hiddenSizes": [32], "batchSize": 16, "learningRate": 5e-3},
                            folds={"kfold": 3}, seed=0, on_progress=events.append)
    assert len(result.folds) == 3
    for fold in result.folds:
        assert len(fold.test_index) == 100 and not set(fold.train_index) & set(fold.test_index)
        assert fold.resultsTest["accuracy"] > 0.5 and len(fold.history) == 3
    assert result.aggregatedTest["accuracy"]["min"] <= result.aggregatedTest["accuracy"]["mean"]
    assert {"fold": 0, "done": True, "accuracy": result.folds[0].resultsTest["accuracy"]} in events
    assert any(e.get("epoch") == 2 and e["fold"] == 1 for e in events)
    json.dumps(result.to_json())


def test_explicit_folds_and_labels(fm_features) -> None:
    X, y = fm_features
    folds = make_folds(y[:200], test_fraction=0.25, seed=2)
    result = run_experiment(X[:200], y[:200], algorithm="logistic_regression", params={"C": 0.5}, folds=folds, seed=0)
    assert np.array_equal(result.folds[0].test_index, folds[0][1])
    assert sorted(result.folds[0].resultsTest["labelStatistics"]) == sorted(set(y[:200]))


def test_missing_labels_error_or_drop(fm_features) -> None:
    X, y = fm_features
    y2 = y[:120].copy()
    y2[[7, 30]] = None
    y2[31] = ""
    with pytest.raises(TrainingError, match="row 7 has no label \\(and 2 more\\)"):
        run_experiment(X[:120], y2, algorithm="logistic_regression", params={}, folds=None, seed=0)
    result = run_experiment(X[:120], y2, algorithm="logistic_regression", params={}, folds={"kfold": 2}, seed=0,
                            drop_missing_labels=True)
    used = np.concatenate([f.test_index for f in result.folds])
    assert len(used) == 117 and not {7, 30, 31} & set(used.tolist())


@pytest.mark.parametrize("case, error, needle", [
    ("one_class", TrainingError, "single class"),
    ("empty", TrainingError, "empty"),
    ("nan", TrainingError, "NaN or infinite values in row\\(s\\) 3, 9"),
    ("ragged", TrainingError, "row 5 has 3 values but row 0 has 4"),
    ("length", TrainingError, "10 rows of features but 12 labels"),
    ("bad_param", ConfigError, "unknown parameter"),
    ("no_image", TrainingError, "row 2 has no encoded image bytes"),
])
def test_bad_inputs(case, error, needle) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(12, 4)).astype(np.float32)
    y = np.array(["a", "b"] * 6, dtype=object)
    algorithm, params = "logistic_regression", {}
    if case == "one_class":
        y = np.array(["a"] * 12, dtype=object)
    elif case == "empty":
        X, y = X[:0], y[:0]
    elif case == "nan":
        X[3, 1], X[9, 0] = np.nan, np.inf
    elif case == "ragged":
        X = [list(r) for r in X]
        X[5] = X[5][:3]
    elif case == "length":
        X = X[:10]
    elif case == "bad_param":
        params = {"Cee": 1}
    elif case == "no_image":
        algorithm = "mlp_pixels"
        X = np.array([b"x", b"y", b"", b"z"] * 3, dtype=object)
    with pytest.raises(error, match=needle):
        run_experiment(X, y, algorithm=algorithm, params=params, folds=None, seed=0)
