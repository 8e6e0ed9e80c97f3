"""`import.text`: a CSV (local, http, compressed) → dataset, through DuckDB's CSV reader (MLDB params)."""
from __future__ import annotations

import os
import tempfile

import duckdb

from ..core.config import Params
from ..core.entities import Procedure, quote_ident
from ..core.outputs import OutputDataset
from ..core.registry import PROCEDURE_TYPES
from ..core.runs import RunContext
from ..errors import ConfigError
from ..sql.udf import statement_error


class ImportTextParams(Params):
    dataFileUrl: str
    outputDataset: OutputDataset
    delimiter: str = ","
    quoteChar: str = '"'
    headers: list[str] | None = None  # given: the file has no header line and these are the column names
    select: str = "*"
    named: str = "lineNumber()"
    where: str | None = None
    limit: int | None = None
    offset: int = 0
    encoding: str = "utf-8"
    ignoreBadLines: bool = False


@PROCEDURE_TYPES.register("import.text")
class ImportText(Procedure):
    """MLDB's `import.text`: `select`, `named` and `where` are SQL expressions over the CSV's columns."""

    Params = ImportTextParams
    params: ImportTextParams

    def run(self, ctx: RunContext) -> dict:
        p, db = self.params, self.db
        out = p.outputDataset.id
        db.datasets.check_id(out)
        if len(p.delimiter) != 1:
            raise ConfigError("delimiter must be one character", field="params.delimiter")
        ctx.set_progress(0, None, phase="reading " + p.dataFileUrl)
        data = db.fetcher.read(p.dataFileUrl, decompress=True)
        fd, tmp = tempfile.mkstemp(suffix=".csv", prefix="visiondb-import-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            self._load(tmp, out)
        finally:
            os.unlink(tmp)
        db.datasets.register_output(out, p.outputDataset.type, {"createdBy": self.id})
        status = db.table_status(out)
        ctx.set_progress(status["rowCount"], status["rowCount"], phase="done")
        return {"outputDataset": out, "rowCount": status["rowCount"], "columns": status["columns"]}

    def _load(self, path: str, out: str) -> None:
        p = self.params
        options = {
            "delim": p.delimiter,
            "quote": p.quoteChar,
            "header": p.headers is None,
            "encoding": p.encoding,
            "ignore_errors": p.ignoreBadLines,
        }
        reader_args = ", ".join(f"{k} := ${k}" for k in options)
        if p.headers is not None:
            reader_args += ", names := $names"
            options["names"] = p.headers  # type: ignore[assignment]
        named = p.named.replace("lineNumber()", "lineNumber")
        where = f"WHERE {p.where}" if p.where else ""
        limit = "LIMIT $limit OFFSET $offset" if p.limit is not None else "OFFSET $offset"
        options["offset"] = p.offset  # type: ignore[assignment]
        if p.limit is not None:
            options["limit"] = p.limit  # type: ignore[assignment]
        query = (
            f"CREATE OR REPLACE TABLE {quote_ident(out)} AS"
            f" SELECT CAST({named} AS VARCHAR) AS _rowName, {p.select} EXCLUDE (lineNumber) FROM ("
            f"  SELECT *, row_number() OVER () AS lineNumber FROM read_csv($path, {reader_args})"
            f") {where} ORDER BY lineNumber {limit}"
        )
        if p.select.strip() != "*":
            query = query.replace(f"{p.select} EXCLUDE (lineNumber)", p.select)
        options["path"] = path  # type: ignore[assignment]
        try:
            self.db.cursor().execute(query, options)
        except duckdb.Error as exc:
            raise statement_error(exc, f"import.text {p.dataFileUrl}: {exc}", field="params") from None
