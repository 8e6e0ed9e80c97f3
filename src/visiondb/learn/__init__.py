"""The learning library: estimators, splits, metrics, experiments, stacking, model persistence and packages.

Pure Python over numpy arrays (no database access) so the SQL procedures can call it.
"""
from __future__ import annotations

from visiondb.learn.algorithms import ALGORITHMS, make_estimator
from visiondb.learn.metrics import aggregate, results_test
from visiondb.learn.splits import make_folds

__all__ = ["ALGORITHMS", "aggregate", "make_estimator", "make_folds", "results_test"]
