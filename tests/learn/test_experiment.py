"""run_experiment: per-fold models and scores, aggregation, and clear errors for bad training data."""
from __future__ import annotations

import json

import numpy as np
import pytest

from visiondb.errors import ConfigError, TrainingError
from visiondb.learn.algorithms import ALGORITHMS, Algorithm
from visiondb.learn.algorithms.networks import MLPClassifier, MLPParams
from visiondb.learn.algorithms.torch_base import module_device
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


class CallLoggingMLP(MLPClassifier):
    """The real `mlp`, logging its predictions and device releases in order (one log per instance)."""

    made: list["CallLoggingMLP"] = []

    def __init__(self, params: dict | None = None, seed: int = 0, class_weight: str | None = None,
                 on_epoch=None, progress_bar: bool = False) -> None:
        super().__init__(params, seed=seed, class_weight=class_weight, on_epoch=on_epoch, progress_bar=progress_bar)
        self.calls: list[str] = []
        CallLoggingMLP.made.append(self)

    def predict_proba(self, X):
        self.calls.append("predict_proba")
        return super().predict_proba(X)

    def release_device(self) -> None:
        self.calls.append("release_device")
        super().release_device()


@pytest.fixture
def logging_mlp(monkeypatch) -> type[CallLoggingMLP]:
    """`logging_mlp` registered for this test only; `CallLoggingMLP.made` lists the instances it built."""
    def build(p: MLPParams, seed: int, class_weight: str | None) -> CallLoggingMLP:
        return CallLoggingMLP(p.model_dump(mode="json"), seed=seed, class_weight=class_weight)

    monkeypatch.setitem(ALGORITHMS, "logging_mlp", Algorithm("logging_mlp", MLPParams, build, "features", "test mlp"))
    monkeypatch.setattr(CallLoggingMLP, "made", [])
    return CallLoggingMLP


def _blobs(n: int = 90, dim: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Three separable Gaussian classes as float32 features."""
    rng = np.random.default_rng(3)
    y = np.repeat(np.array(["a", "b", "c"], dtype=object), n // 3)
    centres = {"a": -3.0, "b": 0.0, "c": 3.0}
    return (rng.normal(size=(n, dim)) + np.array([centres[c] for c in y])[:, None]).astype(np.float32), y


def test_experiment_releases_each_fold_model_once_scored(logging_mlp) -> None:
    X, y = _blobs()
    result = run_experiment(X, y, algorithm="logging_mlp", params={"epochs": 10, "hiddenSizes": [8], "learningRate": 0.05},
                            folds={"kfold": 3}, seed=0)
    assert len(result.folds) == 3 and len({id(f.model) for f in result.folds}) == 3
    for fold in result.folds:
        assert isinstance(fold.model, CallLoggingMLP)
        assert fold.model.calls == ["predict_proba", "release_device"]  # scored, then off the accelerator
        assert module_device(fold.model.module_).type == "cpu"
        assert fold.resultsTest["accuracy"] > 0.6  # a real model was trained and scored (chance: 1/3)


def test_stacking_experiment_releases_out_of_fold_and_fold_models(logging_mlp) -> None:
    X, y = _blobs()
    params = {"baseLearners": [{"features": "f", "algorithm": "logging_mlp", "params": {"epochs": 2, "hiddenSizes": [8]}}],
              "metaLearner": "logistic_regression", "folds": 2}
    result = run_experiment([X], y, algorithm="stacking", params=params, folds={"kfold": 2}, seed=0)
    fitted = [m for m in logging_mlp.made if hasattr(m, "module_")]
    assert len(fitted) == 2 * (2 + 1)  # per experiment fold: 2 out-of-fold models + the base model refit on all rows
    for model in fitted:  # every model that scored rows ended off the accelerator, released after its last prediction
        assert model.calls and model.calls[-1] == "release_device" and "predict_proba" in model.calls
        assert module_device(model.module_).type == "cpu"
    for fold in result.folds:
        assert fold.model.base_models_[0].calls == ["predict_proba", "release_device"]
