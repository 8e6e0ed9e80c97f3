"""Type registries: each entity kind maps MLDB-style type names to the classes that implement them."""
from __future__ import annotations

from typing import Callable, Generic, TypeVar

from ..errors import ConfigError

T = TypeVar("T", bound=type)


class Registry(Generic[T]):
    """A name → class table filled by the `register` decorator; lookups name the unknown type and the known ones."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._types: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(cls: T) -> T:
            if name in self._types and self._types[name] is not cls:
                raise ValueError(f"{self.kind} type {name!r} registered twice")
            cls.type_name = name  # type: ignore[attr-defined]
            self._types[name] = cls
            return cls

        return decorator

    def get(self, name: str) -> T:
        _load_builtin_types()
        try:
            return self._types[name]
        except KeyError:
            known = ", ".join(sorted(self._types))
            raise ConfigError(f"unknown {self.kind} type {name!r} (known: {known})", field="type") from None

    def names(self) -> list[str]:
        _load_builtin_types()
        return sorted(self._types)


DATASET_TYPES: Registry = Registry("dataset")
FUNCTION_TYPES: Registry = Registry("function")
PROCEDURE_TYPES: Registry = Registry("procedure")

_loaded = False


def _load_builtin_types() -> None:
    """Import the modules whose decorators fill the registries (once, lazily, to keep imports light)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    from .. import builtin_types  # noqa: F401
