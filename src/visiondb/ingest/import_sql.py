"""`import.sql` and `export.sql`: datasets from/to a remote SQL database (MariaDB, PostgreSQL, SQLite) by URL.

`import.sql` streams a SELECT in chunks; an `image` column of bytes (BLOB/BYTEA) goes into the media store (tiny images
inline in `vdb.blobs`, batched), an `image` column of URIs is fetched and stored. `export.sql` upserts a visiondb
query's rows into a remote table, one transaction per chunk, so re-running it never duplicates rows.
"""
from __future__ import annotations

import hashlib
import re
from typing import Any

import duckdb
import pyarrow as pa

from ..core.config import Params
from ..core.entities import Procedure, quote_ident
from ..core.outputs import OutputDataset
from ..core.registry import PROCEDURE_TYPES
from ..core.runs import RunContext
from ..errors import ConfigError, QueryError, VisionDBError
from ..sql.udf import statement_error
from ..storage import external
from ..storage.images import store_images
from .writes import ERROR_COLUMNS, IMAGE_ARROW, errors_table, write_chunk, write_errors

def source_name(query: str) -> str:
    """`sql:<name>/<row>` prefix: the table of a simple `SELECT ... FROM t`, else a short hash of the query."""
    m = re.fullmatch(r"\s*select\s.+?\sfrom\s+([A-Za-z_][\w.]*)\s*(where\s.*|order\s.*|limit\s.*)?;?\s*", query,
                     flags=re.I | re.S)
    if m and not re.search(r"\bjoin\b|,\s*[A-Za-z_][\w.]*\s*(where|$)", query[m.start(1):], flags=re.I):
        return m.group(1)
    return "q" + hashlib.sha256(query.encode()).hexdigest()[:12]


MAX_CHUNK_ROWS = 10_000_000
"""Rows per fetched or written chunk at most: a chunk is held in memory, and drivers take the size as a C int."""


def check_chunk_size(rows: int) -> None:
    """ConfigError unless 1 <= chunkSize <= MAX_CHUNK_ROWS."""
    if not 1 <= rows <= MAX_CHUNK_ROWS:
        raise ConfigError(f"chunkSize must be between 1 and {MAX_CHUNK_ROWS:,}, got {rows}", field="params.chunkSize")


class ImportSQLParams(Params):
    connection: str
    query: str
    outputDataset: OutputDataset
    chunkSize: int = 10_000
    named: str | None = None  # result column giving _rowName (else the row number, from 1)
    imageColumn: str = "image"
    fetchImages: bool = True
    concurrency: int | None = None


@PROCEDURE_TYPES.register("import.sql")
class ImportSQL(Procedure):
    """Runs a SELECT on a remote database and stores the rows as a dataset, images into the media store."""

    Params = ImportSQLParams
    params: ImportSQLParams

    def run(self, ctx: RunContext) -> dict:
        p, db = self.params, self.db
        out = p.outputDataset.id
        db.datasets.check_id(out)
        check_chunk_size(p.chunkSize)
        engine = external.make_engine(p.connection, policy=db.fetcher.policy)
        prefix = f"sql:{source_name(p.query)}/"
        cur = db.cursor()
        ctx.set_progress(0, None, phase=f"querying {external.masked(engine)}")
        bar = ctx.bar(None, f"import.sql → {out}")
        rows = errors = 0
        result_set = False
        try:
            for chunk in external.stream_query(engine, p.query, chunk_size=p.chunkSize):
                if not result_set:  # the query answered: only now replace the last run's errors table
                    cur.execute(f"DROP TABLE IF EXISTS {quote_ident(errors_table(out))}")
                    cur.execute(f"CREATE TABLE {quote_ident(errors_table(out))} ({ERROR_COLUMNS})")
                result_set = True
                if p.named is not None and p.named not in chunk.column_names:
                    raise ConfigError(f"named column {p.named!r} is not in the query result {chunk.column_names}",
                                      field="params.named")
                table, bad = self._prepare(chunk, rows, prefix)
                if table.num_rows or rows == 0:  # an empty first chunk (no rows) still replaces the output
                    write_chunk(db, out, table, first=(rows == 0), image_columns=(p.imageColumn,))
                for e in bad:
                    ctx.record_error(e["cause"], row=e["_rowName"], uri=e["uri"])
                write_errors(db, out, bad, ctx.run_id)
                rows += table.num_rows + len(bad)
                errors += len(bad)
                bar.update(chunk.num_rows)
        finally:
            bar.close()
            engine.dispose()
        if not result_set:
            raise QueryError(f"import.sql: query returned no result set: {p.query[:200]}", field="params.query")
        db.datasets.register_output(out, p.outputDataset.type, {"createdBy": self.id})
        db.datasets.register_output(out + "_errors", "tabular", {"createdBy": self.id})
        status = db.table_status(out)
        return {"outputDataset": out, "errorsDataset": out + "_errors", "rowCount": status["rowCount"],
                "errorCount": errors, "columns": status["columns"]}

    def _prepare(self, chunk: pa.Table, offset: int, prefix: str) -> tuple[pa.Table, list[dict]]:
        """Add `_rowName`, turn the image column into image values; returns (good rows, per-row errors)."""
        p = self.params
        if p.named is not None:
            names = [None if v is None else str(v) for v in chunk.column(p.named).to_pylist()]
            names = [n if n is not None else str(offset + i + 1) for i, n in enumerate(names)]
        else:
            names = [str(offset + i + 1) for i in range(chunk.num_rows)]
        table = chunk.drop_columns(["_rowName"]) if "_rowName" in chunk.column_names else chunk
        table = table.add_column(0, "_rowName", pa.array(names, pa.string()))
        col = p.imageColumn
        if col not in table.column_names:
            return table, []
        ctype = table.schema.field(col).type
        raw = table.column(col).to_pylist()
        if pa.types.is_binary(ctype) or pa.types.is_large_binary(ctype):
            values = store_images(self.db, [(prefix + n, v) for n, v in zip(names, raw)])
            uris = [prefix + n for n in names]
        elif pa.types.is_string(ctype) and p.fetchImages:
            values, uris = self._fetch(raw), raw
        else:
            return table, []
        bad: list[dict] = []
        keep: list[int] = []
        for i, v in enumerate(values):
            if isinstance(v, VisionDBError):
                bad.append({"_rowName": names[i], "uri": uris[i], "status": getattr(v, "status", None),
                            "cause": f"row {names[i]}: {v.message}"})
            else:
                keep.append(i)
        table = table.take(pa.array(keep, pa.int64()))
        images = pa.array([values[i] for i in keep], IMAGE_ARROW)
        table = table.set_column(table.column_names.index(col), col, images)
        return table, bad

    def _fetch(self, uris: list[str | None]) -> list[Any]:
        """Fetch URI strings in parallel and store them as image values (errors per row)."""
        db = self.db
        values: list[Any] = [None] * len(uris)
        todo = [i for i, u in enumerate(uris) if u]
        for j, got in db.fetcher.read_many([uris[i] for i in todo], concurrency=self.params.concurrency):
            i = todo[j]
            if isinstance(got, VisionDBError):
                values[i] = got
                continue
            try:
                values[i] = db.store_image(uris[i], got)
            except VisionDBError as exc:
                values[i] = exc
        return values


class ExportSQLParams(Params):
    connection: str
    inputData: str
    outputTable: str
    key: str | list[str] | None = None
    chunkSize: int = 10_000


@PROCEDURE_TYPES.register("export.sql")
class ExportSQL(Procedure):
    """Writes the rows of a visiondb SELECT into a remote table (created when missing), upserting by `key`."""

    Params = ExportSQLParams
    params: ExportSQLParams

    def run(self, ctx: RunContext) -> dict:
        p, db = self.params, self.db
        check_chunk_size(p.chunkSize)
        key = [p.key] if isinstance(p.key, str) else list(p.key or [])
        engine = external.make_engine(p.connection, policy=db.fetcher.policy)
        reader_cur = db.connection.cursor()  # own cursor: the streamed result stays open while we write
        written = 0
        bar = ctx.bar(None, f"export.sql → {p.outputTable}")
        try:
            try:  # a function in inputData may fail while the rows stream, not only when the query starts
                reader = reader_cur.execute(p.inputData).to_arrow_reader(p.chunkSize)
                table = None
                for batch in reader:
                    chunk = pa.Table.from_batches([batch])
                    if table is None:
                        table = external.ensure_table(engine, p.outputTable, chunk.schema, key)
                    written += external.upsert_arrow(engine, table, chunk, key)
                    bar.update(chunk.num_rows)
                if table is None:
                    table = external.ensure_table(engine, p.outputTable, reader.schema, key)
            except duckdb.Error as exc:
                raise statement_error(exc, f"export.sql: inputData failed: {exc}", field="params.inputData") from None
        finally:
            bar.close()
            reader_cur.close()
            engine.dispose()
        return {"outputTable": p.outputTable, "connection": external.masked(p.connection), "rowsWritten": written,
                "key": key}
