"""Entity configs `{"type": ..., "params": {...}}` and typed params validated with pydantic."""
from __future__ import annotations

import json
from typing import Any, Mapping

from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import ConfigError


class Params(BaseModel):
    """Base for every type's params: camelCase names as MLDB spells them; unknown names are errors."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, arbitrary_types_allowed=True)


class EntityConfig(BaseModel):
    """The MLDB entity config shape."""

    model_config = ConfigDict(extra="forbid")
    type: str
    params: dict[str, Any] = {}
    id: str | None = None


def load_json(raw: str | bytes, what: str, field: str) -> Any:
    """Parse JSON text; every way it can be malformed is a ConfigError naming `field`: not UTF-8, a syntax error,
    nesting deeper than the parser's recursion limit, or an integer over Python's digit limit."""
    if isinstance(raw, (bytes, bytearray)):
        try:
            raw = bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{what} is not valid JSON: not UTF-8 text (byte {exc.start}: "
                              f"{bytes(raw[exc.start:exc.start + 1])!r})", field=field) from None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{what} is not valid JSON: {exc}", field=field) from None
    except RecursionError:
        raise ConfigError(f"{what} is nested too deeply", field=field) from None
    except ValueError as exc:  # "Exceeds the limit (4300 digits) for integer string conversion"
        raise ConfigError(f"{what} is not valid JSON: {exc}", field=field) from None


def json_object(text: str | bytes, what: str, field: str, shape: str) -> dict:
    """Parse JSON text that must hold an object; errors name `field` and the expected `shape`."""
    value = load_json(text, what, field)
    if not isinstance(value, dict):
        raise ConfigError(f"{what} must be an object like {shape}", field=field)
    return value


def parse_config(config: Mapping[str, Any] | str, kind: str) -> EntityConfig:
    """Accept a dict or JSON text; name the offending field when the shape is wrong."""
    if isinstance(config, str):
        config = json_object(config, f"{kind} config", "config", '{"type": ..., "params": {...}}')
    if not isinstance(config, Mapping):
        raise ConfigError(f"{kind} config must be an object with 'type' and 'params'", field="config")
    if "type" not in config:
        raise ConfigError(f"{kind} config is missing 'type'", field="type")
    check_unicode(config, "")
    try:
        return EntityConfig.model_validate(dict(config))
    except ValidationError as exc:
        raise validation_error(exc, kind, prefix="") from None


def check_unicode(value: Any, where: str) -> None:
    """ConfigError naming the field when a string (key or value) holds a lone UTF-16 surrogate: such text cannot be
    stored, sent to a database or used as a file name (JSON's "\\ud800" escape decodes to one)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ConfigError(f"{where or 'config'}: text is not valid Unicode (a lone surrogate)",
                              field=where or "config") from None
    elif isinstance(value, Mapping):
        for key, item in value.items():
            check_unicode(key, where or "config")
            check_unicode(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_unicode(item, f"{where}[{i}]")


def parse_params(params_cls: type[Params], params: Mapping[str, Any], type_name: str) -> Params:
    """Validate params for one type; errors read like `params.outputDataset: Field required`."""
    try:
        return params_cls.model_validate(dict(params or {}))
    except ValidationError as exc:
        raise validation_error(exc, type_name, prefix="params.") from None


def validation_error(exc: ValidationError, what: str, prefix: str) -> ConfigError:
    first = exc.errors()[0]
    field = prefix + ".".join(str(p) for p in first["loc"])
    msg = first["msg"]
    if first["type"] == "missing":
        msg = "missing required param"
    elif first["type"] == "extra_forbidden":
        msg = "unknown param"
    problems = [f"{prefix}{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
    return ConfigError(f"{what}: {field}: {msg}", field=field, problems=problems)
