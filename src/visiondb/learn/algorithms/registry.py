"""Algorithm registry: each algorithm registers a pydantic params model and a builder; `make_estimator` validates."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from visiondb.errors import ConfigError

InputKind = Literal["features", "images", "feature_list"]


class Params(BaseModel):
    """Base for per-algorithm params: unknown keys are rejected, names are camelCase as in configs."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


@dataclass(frozen=True)
class Algorithm:
    """A registered algorithm: what input it takes, how its params are validated, how it is built."""

    name: str
    params_model: type[Params]
    build: Callable[[Params, int, str | None], Any]
    input_kind: InputKind
    doc: str


ALGORITHMS: dict[str, Algorithm] = {}


def register(name: str, params_model: type[Params], input_kind: InputKind = "features") -> Callable:
    """Decorator registering `build(params, seed, class_weight) -> estimator` under `name`."""

    def decorator(build: Callable[[Params, int, str | None], Any]) -> Callable:
        ALGORITHMS[name] = Algorithm(name, params_model, build, input_kind, (build.__doc__ or "").strip())
        return build

    return decorator


def get_algorithm(algorithm: str) -> Algorithm:
    """Look up a registered algorithm or raise ConfigError naming it and the known ones."""
    from visiondb.learn import algorithms  # noqa: F401  (ensures every module has registered)

    try:
        return ALGORITHMS[algorithm]
    except KeyError:
        raise ConfigError(
            f"unknown algorithm {algorithm!r}; known: {', '.join(sorted(ALGORITHMS))}", field="algorithm"
        ) from None


def validate_params(algorithm: str, params: dict[str, Any] | None) -> Params:
    """Validate `params` against the algorithm's model; errors name the offending param."""
    algo = get_algorithm(algorithm)
    try:
        return algo.params_model.model_validate(dict(params or {}))
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "params"
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {'unknown parameter' if e['type'] == 'extra_forbidden' else e['msg']}"
            for e in exc.errors()
        )
        raise ConfigError(f"algorithm {algorithm!r}: invalid params: {problems}", field=f"params.{field}") from None


def make_estimator(algorithm: str, params: dict[str, Any] | None, *, seed: int = 0, class_weight: str | None = None) -> Any:
    """Build an unfitted scikit-learn-compatible estimator for `algorithm` with validated `params`."""
    if class_weight not in (None, "balanced"):
        raise ConfigError(f"classWeight must be 'balanced' or null, got {class_weight!r}", field="classWeight")
    validated = validate_params(algorithm, params)
    return get_algorithm(algorithm).build(validated, seed, class_weight)


def release_device(model: Any) -> None:
    """Free accelerator memory a fitted estimator holds for prediction, if it has any (duck-typed `release_device`)."""
    release = getattr(model, "release_device", None)
    if callable(release):
        release()
