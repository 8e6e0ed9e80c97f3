"""Make query results and run records JSON-safe: arrays → lists, bytes → base64, times → ISO, NaN → null."""
from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import math
import re
import uuid
from typing import Any

import numpy as np
from starlette.responses import JSONResponse


def jsonable(value: Any, _path: frozenset = frozenset()) -> Any:
    """Recursively convert a Python/NumPy/Arrow-derived value into plain JSON types (cycles become null:
    a failed run's record holds the error details, which hold the run record)."""
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (dict, list, tuple, set)):
        if id(value) in _path:
            return None
        inner = _path | {id(value)}
        if isinstance(value, dict):
            return {str(k): jsonable(v, inner) for k, v in value.items()}
        return [jsonable(v, inner) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return jsonable(float(value))
    if isinstance(value, uuid.UUID):
        return str(value)
    if hasattr(value, "tolist"):
        return jsonable(value.tolist())
    return str(value)


class SafeJSONResponse(JSONResponse):
    """A JSONResponse that first converts its content with `jsonable` (never fails on NaN or bytes)."""

    def render(self, content: Any) -> bytes:
        safe = jsonable(content)
        try:
            return json.dumps(safe, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")
        except UnicodeEncodeError:  # a lone UTF-16 surrogate (e.g. an echoed "\ud800"): escape it as \uXXXX
            return json.dumps(safe, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^:/?#@\s]*:)[^/?#\s]+@")


def public_record(value: Any) -> Any:
    """What REST shows of an entity or run record (or an error body holding one), in one walk: the password of
    every `scheme://user:password@host` URL replaced by *** (configs keep connection URLs as given), and the
    `traceback` of failed runs' statuses (`{"error": ..., "traceback": ...}`) left out (the stored record keeps
    it for the Python API and the server log)."""
    if isinstance(value, str):
        return _URL_PASSWORD.sub(r"\g<head>***@", value)
    if isinstance(value, dict):
        return {k: public_record(v) for k, v in value.items() if not (k == "traceback" and "error" in value)}
    if isinstance(value, (list, tuple)):
        return [public_record(v) for v in value]
    return value


def respond_record(record: Any, status_code: int = 200) -> SafeJSONResponse:
    """A JSON response for entity and run records (`public_record`: credentials masked, no tracebacks)."""
    return respond(public_record(record), status_code)


def respond(content: Any, status_code: int = 200) -> SafeJSONResponse:
    """Shorthand for a JSON-safe response."""
    return SafeJSONResponse(content, status_code=status_code)
