"""Metrics in MLDB's shape and fold generation."""
from __future__ import annotations

import json

import numpy as np
import pytest

from visiondb.errors import TrainingError
from visiondb.learn.metrics import aggregate, results_test
from visiondb.learn.splits import make_folds


def test_results_test_values_and_shape() -> None:
    y_true = ["a", "a", "a", "b", "b", "c"]
    y_pred = ["a", "a", "b", "b", "c", "c"]
    r = results_test(y_true, y_pred, ["a", "b", "c"])
    assert r["accuracy"] == pytest.approx(4 / 6)
    a = r["labelStatistics"]["a"]
    assert a["precision"] == 1.0 and a["recall"] == pytest.approx(2 / 3) and a["support"] == 3
    assert a["accuracy"] == pytest.approx(5 / 6)  # binary a-vs-rest
    assert {"actual": "a", "predicted": "b", "count": 1} in r["confusionMatrix"]
    assert all(c["count"] > 0 for c in r["confusionMatrix"])
    assert r["weightedStatistics"]["support"] == 6
    assert r["macroStatistics"]["recall"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    json.dumps(r)


def test_results_test_with_proba_and_aggregate() -> None:
    y = np.array(["x", "y", "x", "y"])
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.3, 0.7]])
    r1 = results_test(y, np.array(["x", "y", "y", "y"]), ["x", "y"], proba)
    assert r1["labelStatistics"]["x"]["auc"] == 1.0 and r1["logLoss"] > 0
    r2 = results_test(y, y, ["x", "y"])
    agg = aggregate([r1, r2])
    assert agg["accuracy"] == {"min": 0.75, "max": 1.0, "mean": 0.875, "std": 0.125}
    assert set(agg["labelStatistics"]["y"]["f1Score"]) == {"min", "max", "mean", "std"}
    assert "confusionMatrix" not in agg
    json.dumps(agg)


def test_kfold_and_fraction_and_mask() -> None:
    y = np.array(["a"] * 12 + ["b"] * 9)
    folds = make_folds(y, kfold=3, seed=1)
    assert len(folds) == 3
    tests = np.concatenate([te for _, te in folds])
    assert sorted(tests.tolist()) == list(range(21))
    for tr, te in folds:
        assert not set(tr) & set(te)
        assert (y[te] == "b").sum() == 3
    [(tr, te)] = make_folds(y, test_fraction=1 / 3, seed=0)
    assert len(te) == 7 and (y[te] == "a").sum() == 4
    assert make_folds(y, test_fraction=0.5, seed=3)[0][1].tolist() == make_folds(y, test_fraction=0.5, seed=3)[0][1].tolist()
    mask = np.zeros(21, bool)
    mask[:5] = True
    [(tr, te)] = make_folds(y, test_mask=mask)
    assert te.tolist() == [0, 1, 2, 3, 4] and len(tr) == 16


def test_single_row_class_falls_back_to_plain_shuffle() -> None:
    y = np.array(["a"] * 6 + ["b"] * 5 + ["lonely"])
    [(tr, te)] = make_folds(y, test_fraction=0.25)
    assert len(te) == 3 and len(tr) == 9


@pytest.mark.parametrize(
    "kwargs, needle",
    [({"kfold": 1}, "kfold must be an integer >= 2"), ({"kfold": 6}, "smallest class 'b'"),
     ({"test_fraction": 1.5}, "testFraction"), ({"test_mask": [True] * 10}, "test mask has 10"),
     ({"test_mask": [False] * 11}, "both must be non-empty")],
)
def test_split_errors(kwargs, needle) -> None:
    y = np.array(["a"] * 6 + ["b"] * 5)
    with pytest.raises(TrainingError, match=needle):
        make_folds(y, **kwargs)
