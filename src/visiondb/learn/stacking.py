"""`stacking`: base learners on their own feature matrices, out-of-fold probabilities, then a meta-learner."""
from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.model_selection import StratifiedKFold

from visiondb.errors import TrainingError
from visiondb.learn.algorithms.registry import Params, make_estimator, register, release_device


class BaseLearner(BaseModel):
    """One base learner: which feature matrix (`features` names it for the caller), which algorithm and params."""

    model_config = ConfigDict(extra="forbid")

    features: str
    algorithm: str = "logistic_regression"
    params: dict[str, Any] = Field(default_factory=dict)


class StackingParams(Params):
    """Params of `stacking`; X is a list of matrices in `baseLearners` order."""

    baseLearners: list[BaseLearner] = Field(min_length=1)
    combine: Literal["average", "concatenate"] = "concatenate"
    metaLearner: str = "linear_svm"
    metaParams: dict[str, Any] = Field(default_factory=dict)
    folds: int = Field(5, ge=2)


class StackingClassifier(ClassifierMixin, BaseEstimator):
    """Stacked ensemble; `oof_folds_[i]` records (train_idx, test_idx) per CV fold for base learner i (leakage audits)."""

    def __init__(self, params: dict[str, Any] | None = None, seed: int = 0, class_weight: str | None = None) -> None:
        self.params = params
        self.seed = seed
        self.class_weight = class_weight

    @property
    def config(self) -> StackingParams:
        """Validated params."""
        return StackingParams.model_validate(self.params or {})

    def _matrices(self, X: Any) -> list[np.ndarray]:
        """Check X is one matrix per base learner with equal row counts."""
        cfg = self.config
        if not isinstance(X, (list, tuple)) or len(X) != len(cfg.baseLearners):
            got = len(X) if isinstance(X, (list, tuple)) else type(X).__name__
            raise TrainingError(f"stacking: expected a list of {len(cfg.baseLearners)} feature matrices (one per base learner), got {got}")
        mats = [np.asarray(x, dtype=np.float32) for x in X]
        for i, m in enumerate(mats):
            if m.ndim != 2 or len(m) != len(mats[0]):
                raise TrainingError(
                    f"stacking: feature matrix {i} ({cfg.baseLearners[i].features!r}) has shape {m.shape}; "
                    f"expected [{len(mats[0])}, d]"
                )
        return mats

    def _combine(self, probas: list[np.ndarray]) -> np.ndarray:
        """Average or concatenate base-learner probabilities."""
        return np.mean(probas, axis=0) if self.config.combine == "average" else np.hstack(probas)

    def fit(self, X: Any, y: Any) -> "StackingClassifier":
        """Out-of-fold probabilities per base learner -> meta-learner; base learners are then refit on all rows."""
        cfg = self.config
        mats = self._matrices(X)
        y = np.asarray(y)
        self.classes_, y_idx, counts = np.unique(y, return_inverse=True, return_counts=True)
        if counts.min() < cfg.folds:
            raise TrainingError(f"stacking: folds={cfg.folds} exceeds the {counts.min()} rows of the smallest class")
        cv = StratifiedKFold(n_splits=cfg.folds, shuffle=True, random_state=self.seed)
        splits = list(cv.split(np.zeros(len(y)), y))
        self.oof_folds_ = []
        self.oof_proba_ = []
        self.base_models_ = []
        for spec, mat in zip(cfg.baseLearners, mats):
            estimator = make_estimator(spec.algorithm, spec.params, seed=self.seed, class_weight=self.class_weight)
            self.oof_folds_.append([(tr.copy(), te.copy()) for tr, te in splits])
            self.oof_proba_.append(self._out_of_fold_proba(estimator, mat, y_idx, splits))
            self.base_models_.append(clone(estimator).fit(mat, y))
        self.meta_model_ = make_estimator(cfg.metaLearner, cfg.metaParams, seed=self.seed, class_weight=self.class_weight)
        self.meta_model_.fit(self._combine(self.oof_proba_), y)
        return self

    def _out_of_fold_proba(
        self, estimator: Any, mat: np.ndarray, y_idx: np.ndarray, splits: list[tuple[np.ndarray, np.ndarray]]
    ) -> np.ndarray:
        """`cross_val_predict(method="predict_proba")` on label indices, each fold model released once scored."""
        oof: np.ndarray | None = None
        for tr, te in splits:
            fold_model = clone(estimator).fit(mat[tr], y_idx[tr])
            proba = fold_model.predict_proba(mat[te])
            release_device(fold_model)  # discarded, yet frames torch's optimizer leaves in a cycle keep it until gc runs
            if oof is None:
                oof = np.zeros((len(y_idx), len(self.classes_)), dtype=proba.dtype)
            oof[np.ix_(te, np.asarray(fold_model.classes_, dtype=np.intp))] = proba
        assert oof is not None  # StackingParams.folds >= 2
        return oof

    def predict_proba(self, X: Any) -> np.ndarray:
        """Meta-learner probabilities over combined base-learner probabilities (classes_ order)."""
        mats = self._matrices(X)
        probas = [model.predict_proba(m) for model, m in zip(self.base_models_, mats)]
        return self.meta_model_.predict_proba(self._combine(probas))

    def predict(self, X: Any) -> np.ndarray:
        """Most probable class per row."""
        return self.classes_[self.predict_proba(X).argmax(axis=1)]

    def release_device(self) -> None:
        """Move every fitted base and meta model off the accelerator (see `TorchClassifier.release_device`)."""
        for model in [*getattr(self, "base_models_", []), getattr(self, "meta_model_", None)]:
            release_device(model)


@register("stacking", StackingParams, input_kind="feature_list")
def build_stacking(p: StackingParams, seed: int, class_weight: str | None) -> StackingClassifier:
    """Stacked ensemble over several feature matrices."""
    for spec in p.baseLearners:  # validate nested configs now so errors surface at creation time
        make_estimator(spec.algorithm, spec.params, seed=seed, class_weight=class_weight)
    make_estimator(p.metaLearner, p.metaParams, seed=seed, class_weight=class_weight)
    return StackingClassifier(p.model_dump(mode="json"), seed=seed, class_weight=class_weight)
