"""Dataset types: `tabular` (a DuckDB table, MLDB's default mutable dataset)."""
from __future__ import annotations

import re

from ..core.config import Params
from ..core.entities import Dataset, quote_ident
from ..core.registry import DATASET_TYPES
from ..errors import ConfigError

TYPE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_ \[\]\(\),]*$")


class TabularParams(Params):
    columns: dict[str, str] | None = None  # name -> SQL type, to create an empty table up front
    createdBy: str | None = None


@DATASET_TYPES.register("tabular")
class TabularDataset(Dataset):
    """A table in the DuckDB file; procedures append to it, SQL reads it by name."""

    Params = TabularParams
    params: TabularParams

    def create(self) -> None:
        cols = self.params.columns
        if not cols or self.db.table_exists(self.id):
            return
        parts = []
        for name, sql_type in cols.items():
            if not TYPE_NAME.match(sql_type):
                raise ConfigError(f"column {name!r}: invalid type {sql_type!r}", field=f"params.columns.{name}")
            parts.append(f"{quote_ident(name)} {sql_type}")
        self.db.cursor().execute(f"CREATE TABLE {quote_ident(self.id)} (_rowName VARCHAR, {', '.join(parts)})")
