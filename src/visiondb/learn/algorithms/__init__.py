"""Algorithm registry and estimators; importing this package registers every algorithm."""
from __future__ import annotations

from visiondb.learn.algorithms.registry import ALGORITHMS, Algorithm, get_algorithm, make_estimator, register, validate_params
from visiondb.learn.algorithms import sklearn_models as _sklearn_models  # noqa: F401  (registers)
from visiondb.learn.algorithms import networks as _networks  # noqa: F401  (registers)
from visiondb.learn.algorithms import finetune as _finetune  # noqa: F401  (registers)
from visiondb.learn import stacking as _stacking  # noqa: F401  (registers)

__all__ = ["ALGORITHMS", "Algorithm", "get_algorithm", "make_estimator", "register", "validate_params"]
