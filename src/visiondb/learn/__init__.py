"""The learning library: estimators, splits, metrics, experiments, stacking, model persistence and packages.

Pure Python over numpy arrays (no database access) so the SQL procedures can call it.
"""
from __future__ import annotations

from visiondb.learn.algorithms import ALGORITHMS, get_algorithm, make_estimator, validate_params
from visiondb.learn.experiment import ExperimentResult, FoldResult, prepare_inputs, run_experiment
from visiondb.learn.metrics import aggregate, results_test
from visiondb.learn.package import Package, load_package_model, make_manifest, package_model, read_package, write_package
from visiondb.learn.persistence import dump_model, load_model
from visiondb.learn.splits import make_folds

__all__ = [
    "ALGORITHMS", "ExperimentResult", "FoldResult", "Package", "aggregate", "dump_model", "get_algorithm",
    "load_model", "load_package_model", "make_estimator", "make_folds", "make_manifest", "package_model",
    "prepare_inputs", "read_package", "results_test", "run_experiment", "validate_params", "write_package",
]
