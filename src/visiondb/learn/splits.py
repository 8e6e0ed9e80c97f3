"""Train/test fold generation: stratified test fraction, stratified k-fold, or an explicit test mask."""
from __future__ import annotations

import logging
from typing import Any

import numpy as np
from sklearn.model_selection import ShuffleSplit, StratifiedKFold, StratifiedShuffleSplit

from visiondb.errors import TrainingError

Fold = tuple[np.ndarray, np.ndarray]
log = logging.getLogger(__name__)


def _class_counts(y: np.ndarray) -> dict[Any, int]:
    """Rows per class."""
    classes, counts = np.unique(y, return_counts=True)
    return {c: int(n) for c, n in zip(classes.tolist(), counts.tolist())}


def make_folds(
    y: Any,
    *,
    test_fraction: float | None = 0.5,
    kfold: int | None = None,
    seed: int = 0,
    test_mask: Any = None,
) -> list[Fold]:
    """Return [(train_idx, test_idx), ...]: `test_mask` wins, then `kfold`, else a stratified `test_fraction` split.

    The stratified split falls back to a plain shuffle only when a class has a single row.
    """
    y = np.asarray(y)
    n = len(y)
    if n == 0:
        raise TrainingError("cannot split: the training data has no rows")
    if test_mask is not None:
        mask = np.asarray(test_mask, dtype=bool)
        if mask.shape != (n,):
            raise TrainingError(f"test mask has {mask.size} entries but the data has {n} rows", field="test_mask")
        train, test = np.flatnonzero(~mask), np.flatnonzero(mask)
        if len(train) == 0 or len(test) == 0:
            raise TrainingError(
                f"test mask leaves {len(train)} training and {len(test)} testing rows; both must be non-empty",
                field="test_mask",
            )
        return [(train, test)]
    counts = _class_counts(y)
    if kfold is not None:
        if int(kfold) != kfold or kfold < 2:
            raise TrainingError(f"kfold must be an integer >= 2, got {kfold!r}", field="kfold")
        smallest_class, smallest = min(counts.items(), key=lambda kv: kv[1])
        if kfold > smallest:
            raise TrainingError(
                f"kfold={kfold} exceeds the {smallest} row(s) of the smallest class {smallest_class!r}",
                field="kfold",
            )
        splitter = StratifiedKFold(n_splits=int(kfold), shuffle=True, random_state=seed)
        return [(tr, te) for tr, te in splitter.split(np.zeros(n), y)]
    if test_fraction is None or not 0.0 < float(test_fraction) < 1.0:
        raise TrainingError(f"testFraction must be in (0, 1), got {test_fraction!r}", field="testFraction")
    n_test = int(np.ceil(n * float(test_fraction)))
    if n_test >= n or n - n_test < 1:
        raise TrainingError(
            f"testFraction={test_fraction} on {n} rows leaves no training rows", field="testFraction"
        )
    if min(counts.values()) >= 2 and n_test >= len(counts) and n - n_test >= len(counts):
        splitter = StratifiedShuffleSplit(n_splits=1, test_size=float(test_fraction), random_state=seed)
        return [next(iter(splitter.split(np.zeros(n), y)))]
    if min(counts.values()) >= 2:
        raise TrainingError(
            f"testFraction={test_fraction} on {n} rows gives {n_test} test rows, fewer than the {len(counts)} classes",
            field="testFraction",
        )
    singles = [c for c, k in counts.items() if k == 1]
    log.warning("class(es) %s have a single row: testFraction split is not stratified", singles[:5])
    plain = ShuffleSplit(n_splits=1, test_size=float(test_fraction), random_state=seed)
    return [next(iter(plain.split(np.zeros(n))))]
