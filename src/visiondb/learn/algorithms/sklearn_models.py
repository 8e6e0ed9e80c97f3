"""Feature-vector classifiers built from scikit-learn: logistic regression, linear SVM, forests, boosted trees."""
from __future__ import annotations

from typing import Any

from pydantic import Field
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from visiondb.learn.algorithms.registry import Params, register


class LogisticParams(Params):
    """Params of `logistic_regression`."""

    C: float = Field(1.0, gt=0)
    maxIter: int = Field(2000, ge=1)


class LinearSVMParams(Params):
    """Params of `linear_svm`; `calibrationFolds` is the CalibratedClassifierCV cv count."""

    C: float = Field(1.0, gt=0)
    maxIter: int = Field(5000, ge=1)
    calibrationFolds: int = Field(3, ge=2)


class ForestParams(Params):
    """Params of `random_forest`."""

    nEstimators: int = Field(200, ge=1)
    maxDepth: int | None = Field(None, ge=1)


class BoostedParams(Params):
    """Params of `boosted_trees`."""

    maxIter: int = Field(100, ge=1)
    learningRate: float = Field(0.1, gt=0)
    maxDepth: int | None = Field(None, ge=1)


@register("logistic_regression", LogisticParams)
def build_logistic(p: LogisticParams, seed: int, class_weight: str | None) -> Pipeline:
    """StandardScaler + multinomial LogisticRegression (the default algorithm)."""
    return make_pipeline(
        StandardScaler(),
        LogisticRegression(C=p.C, max_iter=p.maxIter, class_weight=class_weight, random_state=seed),
    )


@register("linear_svm", LinearSVMParams)
def build_linear_svm(p: LinearSVMParams, seed: int, class_weight: str | None) -> Any:
    """StandardScaler + LinearSVC; probabilities come from CalibratedClassifierCV (sigmoid, `calibrationFolds`)."""
    svc = LinearSVC(C=p.C, max_iter=p.maxIter, class_weight=class_weight, random_state=seed)
    return make_pipeline(StandardScaler(), CalibratedClassifierCV(svc, method="sigmoid", cv=p.calibrationFolds))


@register("random_forest", ForestParams)
def build_forest(p: ForestParams, seed: int, class_weight: str | None) -> RandomForestClassifier:
    """RandomForestClassifier (single-threaded for reproducibility on shared CPUs)."""
    return RandomForestClassifier(
        n_estimators=p.nEstimators, max_depth=p.maxDepth, class_weight=class_weight, random_state=seed, n_jobs=1
    )


@register("boosted_trees", BoostedParams)
def build_boosted(p: BoostedParams, seed: int, class_weight: str | None) -> HistGradientBoostingClassifier:
    """HistGradientBoostingClassifier with early stopping off (deterministic iteration count)."""
    return HistGradientBoostingClassifier(
        max_iter=p.maxIter,
        learning_rate=p.learningRate,
        max_depth=p.maxDepth,
        class_weight=class_weight,
        early_stopping=False,
        random_state=seed,
    )
