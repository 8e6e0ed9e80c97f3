"""The `outputDataset` param: a dataset id string or MLDB's `{"id": ..., "type": ...}` object."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator


class OutputDataset(BaseModel):
    """Where a procedure writes; `type` defaults to `tabular` (a DuckDB table)."""

    model_config = ConfigDict(extra="forbid")
    id: str
    type: str = "tabular"
    params: dict[str, Any] = {}

    @model_validator(mode="before")
    @classmethod
    def from_string(cls, value: Any) -> Any:
        return {"id": value} if isinstance(value, str) else value
