"""Every algorithm trains and scores on small real data; registry and param validation errors."""
from __future__ import annotations

import numpy as np
import pytest

from visiondb.errors import ConfigError
from visiondb.learn.algorithms import ALGORITHMS, make_estimator

FAST = {
    "logistic_regression": {},
    "linear_svm": {},
    "random_forest": {"nEstimators": 40},
    "boosted_trees": {"maxIter": 15, "maxDepth": 3},
    "mlp": {"epochs": 8, "hiddenSizes": [64]},
}


def test_registry_lists_every_algorithm() -> None:
    assert set(ALGORITHMS) >= {*FAST, "mlp_pixels", "cnn", "finetune", "stacking"}
    assert ALGORITHMS["cnn"].input_kind == "images" and ALGORITHMS["stacking"].input_kind == "feature_list"


def test_unknown_algorithm_and_params_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown algorithm 'xgboostish'"):
        make_estimator("xgboostish", {}, seed=0, class_weight=None)
    with pytest.raises(ConfigError, match="nTrees: unknown parameter") as exc:
        make_estimator("random_forest", {"nTrees": 3}, seed=0, class_weight=None)
    assert exc.value.details["field"] == "params.nTrees"
    with pytest.raises(ConfigError, match="earlyStopping.monitor"):
        make_estimator("mlp", {"earlyStopping": {"monitor": "loss"}}, seed=0, class_weight=None)
    with pytest.raises(ConfigError, match="classWeight"):
        make_estimator("mlp", {}, seed=0, class_weight="inverse")
    with pytest.raises(ConfigError, match="baseLearners.0.params.bogus|bogus"):
        make_estimator("stacking", {"baseLearners": [{"features": "f", "algorithm": "mlp", "params": {"bogus": 1}}]}, seed=0, class_weight=None)


@pytest.mark.parametrize("algorithm", sorted(FAST))
def test_feature_algorithms_train_and_score(algorithm, fm_features) -> None:
    X, y = fm_features
    model = make_estimator(algorithm, FAST[algorithm], seed=0, class_weight="balanced")
    model.fit(X[:350], y[:350])
    proba = model.predict_proba(X[350:])
    assert proba.shape == (150, 10) and np.allclose(proba.sum(1), 1.0)
    accuracy = (model.predict(X[350:]) == y[350:]).mean()
    assert accuracy > 0.6, accuracy  # 10 classes: chance is 0.1
    assert set(model.get_params()) and list(model.classes_) == sorted(set(y[:350]))
    if algorithm == "mlp":
        assert model.history and {"loss", "val_loss", "val_accuracy"} <= set(model.history[0])


@pytest.mark.parametrize("algorithm, params", [
    ("mlp_pixels", {"epochs": 3}),
    ("cnn", {"epochs": 3, "channels": [8, 16], "dense": 32, "batchSize": 32}),
])
def test_image_networks_train_on_png_bytes(algorithm, params, fm_images) -> None:
    x_tr, y_tr, x_te, y_te = fm_images
    epochs_seen = []
    model = make_estimator(algorithm, params, seed=0, class_weight=None)
    model.on_epoch = lambda epoch, logs: epochs_seen.append((epoch, logs["loss"]))
    model.fit(x_tr, y_tr)
    accuracy = (model.predict(x_te) == y_te).mean()
    assert accuracy > 0.5, accuracy
    assert [e for e, _ in epochs_seen] == [1, 2, 3] and len(model.history) == 3


def test_finetune_on_real_photos(hymenoptera) -> None:
    data, labels = hymenoptera
    train = np.r_[0:8, 12:20]
    test = np.r_[8:12, 20:24]
    frozen = make_estimator("finetune", {"epochs": 15, "batchSize": 8, "learningRate": 1e-2, "imageSize": [128, 128]}, seed=0, class_weight=None)
    frozen.fit(data[train], labels[train])
    assert (frozen.predict(data[test]) == labels[test]).mean() >= 0.75
    partial = make_estimator("finetune", {"epochs": 1, "batchSize": 8, "freeze": 14, "imageSize": [96, 96],
                                          "augment": {"flip": True, "randomResizedCrop": 0.6}}, seed=0, class_weight=None)
    partial.fit(data[train], labels[train])
    trainable = [n for n, p in partial.module_.named_parameters() if p.requires_grad]
    assert trainable and all("_blocks.1." not in n and "_conv_stem" not in n for n in trainable)
    assert partial.predict_proba(data[test]).shape == (8, 2)
