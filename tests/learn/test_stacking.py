"""Stacking: out-of-fold meta features with no leakage, both combine modes, scoring on several matrices."""
from __future__ import annotations

import numpy as np
import pytest

from visiondb.learn.algorithms import make_estimator


def _two_views(X: np.ndarray) -> list[np.ndarray]:
    """Two small real feature matrices from the same images: 4x4 mean-pooled pixels, and row + column profiles."""
    img = X.reshape(-1, 28, 28)
    pooled = img.reshape(-1, 7, 4, 7, 4).mean(axis=(2, 4)).reshape(len(X), -1)
    return [pooled, np.hstack([img.mean(axis=1), img.mean(axis=2)])]


@pytest.mark.parametrize("combine", ["average", "concatenate"])
def test_stacking_trains_and_scores(combine, fm_features) -> None:
    X, y = fm_features
    views = _two_views(X)
    params = {"combine": combine, "metaLearner": "logistic_regression", "baseLearners": [
        {"features": "pooled", "algorithm": "logistic_regression", "params": {"C": 0.1}},
        {"features": "profiles", "algorithm": "random_forest", "params": {"nEstimators": 30}},
    ]}
    model = make_estimator("stacking", params, seed=0, class_weight=None)
    model.fit([v[:350] for v in views], y[:350])
    width = 10 if combine == "average" else 20
    assert model.meta_model_.n_features_in_ == width
    accuracy = (model.predict([v[350:] for v in views]) == y[350:]).mean()
    assert accuracy > 0.65, accuracy


def test_stacking_out_of_fold_probabilities_do_not_leak(fm_features) -> None:
    X, _ = fm_features
    rng = np.random.default_rng(0)
    y = rng.choice(np.array(["p", "q"], dtype=object), size=len(X))  # labels independent of X: nothing to learn
    params = {"baseLearners": [{"features": "pixels", "algorithm": "random_forest", "params": {"nEstimators": 30}}],
              "metaLearner": "logistic_regression", "folds": 5}
    model = make_estimator("stacking", params, seed=0, class_weight=None).fit([X], y)
    # A fully grown forest memorises its training rows: in-sample accuracy is 1.0 ...
    assert (model.base_models_[0].predict(X) == y).mean() > 0.99
    # ... but the out-of-fold probabilities the meta-learner saw are at chance: no row scored by a model that saw it.
    oof_pred = model.classes_[model.oof_proba_[0].argmax(1)]
    assert (oof_pred == y).mean() < 0.6
    covered = np.zeros(len(y), int)
    for train_idx, test_idx in model.oof_folds_[0]:
        assert not np.intersect1d(train_idx, test_idx).size
        covered[test_idx] += 1
    assert (covered == 1).all() and len(model.oof_folds_[0]) == 5


def test_stacking_rejects_wrong_inputs(fm_features) -> None:
    from visiondb.errors import TrainingError

    X, y = fm_features
    model = make_estimator("stacking", {"baseLearners": [{"features": "a"}, {"features": "b"}]}, seed=0, class_weight=None)
    with pytest.raises(TrainingError, match="expected a list of 2 feature matrices"):
        model.fit([X], y)
    with pytest.raises(TrainingError, match="feature matrix 1 \\('b'\\) has shape"):
        model.fit([X, X[:10]], y)
