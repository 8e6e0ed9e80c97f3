"""Network training behaviour: early stopping with best-weight restore, augmentation, seeds, class weights."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from visiondb.learn.algorithms import make_estimator
from visiondb.learn.algorithms.augment import AugmentParams, augment_batch
from visiondb.learn.algorithms.images import decode_images


def test_early_stopping_stops_and_restores_best_weights(fm_features) -> None:
    X, y = fm_features
    params = {"epochs": 60, "hiddenSizes": [512], "dropout": 0.0, "learningRate": 3e-3, "validationFraction": 0.2,
              "earlyStopping": {"monitor": "val_loss", "patience": 3}}
    model = make_estimator("mlp", params, seed=0, class_weight=None).fit(X, y)
    history = model.history
    assert len(history) < 60  # stopped early (the small net overfits 400 rows quickly)
    best = min(history, key=lambda h: h["val_loss"])
    assert best["epoch"] == model.best_epoch_ < history[-1]["epoch"] and best["best"]
    assert len(history) - model.best_epoch_ == 3
    val = model.validation_index_
    proba = model.predict_proba(X[val])
    idx = np.searchsorted(model.classes_, y[val])
    val_loss = float(-np.log(proba[np.arange(len(val)), idx]).mean())
    assert abs(val_loss - best["val_loss"]) < 1e-4  # the restored weights are the best epoch's
    assert abs(val_loss - history[-1]["val_loss"]) > 1e-3


def test_early_stopping_on_val_accuracy_with_images(fm_images) -> None:
    x_tr, y_tr, _, _ = fm_images
    params = {"epochs": 30, "learningRate": 1e-2, "earlyStopping": {"monitor": "val_accuracy", "patience": 2, "minDelta": 0.01}}
    model = make_estimator("mlp_pixels", params, seed=0, class_weight=None).fit(x_tr, y_tr)
    assert len(model.history) < 30 and "val_accuracy" in model.history[0]


def test_augmentation_changes_pixels_not_labels(fm_images) -> None:
    x_tr, y_tr, _, _ = fm_images
    batch = torch.from_numpy(decode_images(x_tr[:16], grayscale=True, size=(28, 28))).float() / 255
    opts = AugmentParams(randomResizedCrop=0.7, flip=True, rotation=15, shift=0.1, shear=10, zoom=0.1, colorJitter=0.3)
    out = augment_batch(batch.clone(), opts, torch.Generator().manual_seed(0))
    assert out.shape == batch.shape and out.min() >= 0 and out.max() <= 1
    assert (out - batch).abs().mean() > 0.02
    same = augment_batch(batch.clone(), opts, torch.Generator().manual_seed(0))
    assert torch.equal(out, same)  # seeded
    assert torch.equal(augment_batch(batch, AugmentParams(), torch.Generator()), batch)
    flipped = augment_batch(batch, AugmentParams(flip=True), torch.Generator().manual_seed(1))
    assert all(torch.allclose(f, b, atol=1e-5) or torch.allclose(f, b.flip(-1), atol=1e-5) for f, b in zip(flipped, batch))
    labels = y_tr[:64].copy()
    model = make_estimator("cnn", {"epochs": 1, "channels": [4], "dense": 8, "augment": {"rotation": 20, "flip": True}},
                           seed=0, class_weight=None).fit(x_tr[:64], labels)
    assert np.array_equal(labels, y_tr[:64]) and len(model.predict(x_tr[:64])) == 64


def test_same_seed_same_model(fm_images) -> None:
    x_tr, y_tr, x_te, _ = fm_images
    params = {"epochs": 2, "channels": [4, 8], "dense": 16, "dropout": 0.3, "augment": {"shift": 0.1}}
    a = make_estimator("cnn", params, seed=7, class_weight=None).fit(x_tr[:128], y_tr[:128]).predict_proba(x_te[:20])
    b = make_estimator("cnn", params, seed=7, class_weight=None).fit(x_tr[:128], y_tr[:128]).predict_proba(x_te[:20])
    c = make_estimator("cnn", params, seed=8, class_weight=None).fit(x_tr[:128], y_tr[:128]).predict_proba(x_te[:20])
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_balanced_class_weight_lifts_minority_recall(fm_features) -> None:
    X, y = fm_features
    keep = np.flatnonzero((y == "Shirt") | (y == "T-shirt/top"))
    minority = np.flatnonzero(y[keep] == "Shirt")[:6]
    rows = np.r_[keep[y[keep] == "T-shirt/top"], keep[minority]]
    params = {"epochs": 20, "earlyStopping": None, "validationFraction": 0.0, "hiddenSizes": [32]}
    plain = make_estimator("mlp", params, seed=0, class_weight=None).fit(X[rows], y[rows])
    weighted = make_estimator("mlp", params, seed=0, class_weight="balanced").fit(X[rows], y[rows])
    test = np.setdiff1d(keep, rows)
    shirts = test[y[test] == "Shirt"]
    assert (weighted.predict(X[shirts]) == "Shirt").mean() >= (plain.predict(X[shirts]) == "Shirt").mean()
    assert (weighted.predict_proba(X[shirts])[:, 0]).mean() > (plain.predict_proba(X[shirts])[:, 0]).mean()


def test_decoding_errors_name_the_row_and_palette_gif_decodes(hymenoptera, datasets_dir) -> None:
    import pytest

    from visiondb.errors import ImageDecodeError
    data, labels = hymenoptera
    bad = np.array([data[0], data[1], b"not an image at all"], dtype=object)
    with pytest.raises(ImageDecodeError, match="row 2: cannot decode image"):
        decode_images(bad, grayscale=False, size=(32, 32))
    gif = (datasets_dir / "hymenoptera" / "train" / "ants" / "imageNotFound.gif").read_bytes()
    arr = decode_images(np.array([gif], dtype=object), grayscale=False, size=(48, 48), resize="crop")
    assert arr.shape == (1, 3, 48, 48) and arr.dtype == np.uint8
    model = make_estimator("mlp_pixels", {"epochs": 1}, seed=0, class_weight=None).fit(data[8:16], labels[8:16])
    with pytest.raises(ImageDecodeError, match="row 1"):
        model.predict(np.array([data[0], b"\x89PNG\r\n\x1a\n broken"], dtype=object))


def test_refitting_finetune_repeats_its_augmentation(hymenoptera) -> None:
    data, labels = hymenoptera
    rows = np.r_[0:4, 12:16]
    model = make_estimator("finetune", {"epochs": 1, "headEpochs": 0, "batchSize": 4, "freeze": 15, "imageSize": [48, 48],
                                        "augment": {"flip": True, "rotation": 20}}, seed=3, class_weight=None)
    first = model.fit(data[rows], labels[rows]).predict_proba(data[rows])
    again = model.fit(data[rows], labels[rows]).predict_proba(data[rows])
    assert np.allclose(first, again, atol=1e-6)


def _rng_cases(fm_features, fm_images, hymenoptera) -> dict[str, tuple[str, dict, np.ndarray, np.ndarray]]:
    """Smallest configs of each torch network: init, dropout, shuffling and augmentation all draw random numbers."""
    X, y = fm_features
    x_img, y_img = fm_images[0][:48], fm_images[1][:48]
    photos, photo_labels = hymenoptera[0][np.r_[0:4, 12:16]], hymenoptera[1][np.r_[0:4, 12:16]]
    return {
        "mlp": ("mlp", {"epochs": 2, "hiddenSizes": [8], "dropout": 0.3}, X[:120], y[:120]),
        "cnn": ("cnn", {"epochs": 1, "channels": [4], "dense": 8, "dropout": 0.3, "batchSize": 16,
                        "augment": {"flip": True, "rotation": 20}}, x_img, y_img),
        "finetune": ("finetune", {"epochs": 1, "headEpochs": 1, "batchSize": 4, "freeze": 15, "imageSize": [48, 48],
                                  "augment": {"flip": True}}, photos, photo_labels),
    }


@pytest.mark.parametrize("case", ["mlp", "cnn", "finetune"])
def test_fit_is_seeded_but_leaves_the_callers_global_rng_alone(case, fm_features, fm_images, hymenoptera) -> None:
    algorithm, params, X, y = _rng_cases(fm_features, fm_images, hymenoptera)[case]

    def fit_proba() -> np.ndarray:
        model = make_estimator(algorithm, params, seed=5, class_weight=None)
        model.progress_bar = False
        return model.fit(X, y).predict_proba(X)

    torch.manual_seed(123)
    want = torch.rand(3)
    want_cuda = torch.cuda.get_rng_state() if torch.cuda.is_available() else None
    torch.manual_seed(123)
    first = fit_proba()
    assert torch.equal(torch.rand(3), want)  # the caller's stream goes on as if no model had been fitted
    if want_cuda is not None:
        assert torch.equal(torch.cuda.get_rng_state(), want_cuda)
    torch.manual_seed(999)  # a different global state before the second fit changes nothing in it
    assert np.array_equal(fit_proba(), first)
