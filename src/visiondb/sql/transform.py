"""`transform`: run a SELECT and write its rows into a dataset, in resumable chunks.

Row identity is the source dataset's `_rowName` (added to the select list through DuckDB's parser when the
query is a plain SELECT over one dataset whose rows do not depend on each other); chunks are read in `_rowName`
order and each chunk is inserted atomically with an anti-join, so an interrupted run resumes after the last
written row with no duplicates. A run of more than one chunk writes into a staging table that replaces the output
only once complete, so a failed re-run leaves the previous output as it was.
"""
from __future__ import annotations

import functools
import json
from typing import Any

import duckdb
from pydantic import Field

from ..core.config import Params
from ..core.entities import Procedure, quote_ident
from ..core.outputs import OutputDataset
from ..core.registry import PROCEDURE_TYPES
from ..core.runs import RunContext
from ..errors import ConfigError, VisionDBError
from .ast import ROW_NAME, SelectShape, parse_select, tables_named, with_row_name
from .udf import collect_errors, statement_error


def staging_table(out: str) -> str:
    """The table a run of more than one chunk writes (and an interrupted one resumes) before replacing `out`."""
    return f"__vdb_staging_{out}"


class TransformParams(Params):
    inputData: str
    outputDataset: OutputDataset
    chunkSize: int = Field(512, ge=1)
    resume: bool = True


@PROCEDURE_TYPES.register("transform")
class Transform(Procedure):
    """MLDB's `transform`: `inputData` (a SELECT) → `outputDataset`, model functions running on whole chunks."""

    Params = TransformParams
    params: TransformParams

    def run(self, ctx: RunContext) -> dict:
        db, p = self.db, self.params
        for parsed in ("_shape", "_with_row_name"):  # the functions the query calls may have changed since
            self.__dict__.pop(parsed, None)
        out = p.outputDataset.id
        db.datasets.check_id(out)
        self._check_output_not_read(out)
        source = self._shape.source_table
        keyed_query = self._keyed_query()
        signature = json.dumps({"procedure": self.id, "inputData": p.inputData})
        stage = staging_table(out)
        unfinished, resuming = self._unfinished(out, signature) if keyed_query is not None else (False, False)
        total = self._count(source, None) if keyed_query is not None and not resuming else None
        if total is not None and total <= p.chunkSize:
            assert keyed_query is not None
            written, skipped = self._replace(ctx, keyed_query, out, total, signature, drop_stage=unfinished), 0
            row_count = written
        else:
            # a view is written in one pass: cut into chunks, the functions it calls would run outside the statement
            # that collects their row errors, and over all its rows again for every chunk
            chunked = (source is not None and keyed_query is not None and self.db.table_exists(source)
                       and self._names_unique(source))
            resuming = resuming and chunked
            query = keyed_query or p.inputData
            written, skipped, row_count = self._run_staged(ctx, stage, query, chunked, total, resuming, signature)
            with db.transaction() as cur:  # the complete new output replaces the old one at once
                cur.execute(f"DROP TABLE IF EXISTS {quote_ident(out)}")
                cur.execute(f"ALTER TABLE {quote_ident(stage)} RENAME TO {quote_ident(out)}")
                self._finish(out, signature)
        return {
            "outputDataset": out,
            "rowsWritten": written,
            "rowsAlreadyPresent": skipped,
            "resumed": resuming,
            "rowCount": row_count,
            "errorCount": ctx.record.get("errorCount", 0),
        }

    def _run_staged(self, ctx: RunContext, stage: str, query: str, chunked: bool, total: int | None,
                    resuming: bool, signature: str) -> tuple[int, int, int]:
        """Write the whole output into `stage`, in `_rowName` chunks (continuing it when resuming) or in one
        streamed pass: (written, skipped, row count)."""
        db = self.db
        with db.transaction() as cur:
            if not resuming:
                cur.execute(f"DROP TABLE IF EXISTS {quote_ident(stage)}")
            db.catalog.set_marker(self.params.outputDataset.id, self.type_name, signature, complete=False)
        if not chunked:
            written = self._run_whole(ctx, query, stage)
            return written, 0, written
        source = self._shape.source_table
        assert source is not None
        written, skipped = self._run_keyed(ctx, source, query, total, stage)
        return written, skipped, written + skipped

    def _unfinished(self, out: str, signature: str) -> tuple[bool, bool]:
        """(an earlier run of `out` did not finish, this run resumes it): a finished output is recomputed (model
        functions answer from their cache); an unfinished one of the same config continues in its staging table."""
        marker = self.db.catalog.get_marker(out)
        unfinished = bool(marker) and not marker.get("complete")
        same = unfinished and self.params.resume and marker.get("signature") == signature
        return unfinished, same and self.db.table_exists(staging_table(out))

    def _check_output_not_read(self, out: str) -> None:
        """Refuse an output that is one of the tables the query reads: replacing it would destroy its input."""
        if tables_named(self._shape.tables, out):
            raise ConfigError(
                f"transform {self.id!r}: outputDataset {out!r} is a table that inputData reads; write to another"
                " dataset", field="params.outputDataset",
            )

    def _finish(self, out: str, signature: str) -> None:
        """Mark the output complete and catalogue it as a dataset."""
        self.db.catalog.set_marker(out, self.type_name, signature, complete=True)
        self.db.datasets.register_output(out, self.params.outputDataset.type, {"createdBy": self.id})

    @functools.cached_property
    def _shape(self) -> SelectShape:
        """The parsed input query (parsed once per run)."""
        return parse_select(self.db.cursor(), self.params.inputData)

    @functools.cached_property
    def _with_row_name(self) -> str | None:
        """The input query with `<source>._rowName` added to its select list; None when it cannot be rewritten."""
        try:
            return with_row_name(self.db.cursor(), self._shape)
        except (duckdb.Error, KeyError, TypeError):
            return None

    def _keyed_query(self) -> str | None:
        """The input query with the source's `_rowName` in its output, or None when rows have no identity
        (no single source dataset with `_rowName`, a query whose rows depend on each other, or one that puts
        another value under that name)."""
        shape = self._shape
        source = shape.source_table
        if source is None or shape.whole or shape.row_name == "altered":
            return None
        if ROW_NAME.lower() not in (c.lower() for c in self._columns(source)):
            return None
        return self.params.inputData if shape.row_name == "kept" else self._with_row_name

    def _names_unique(self, source: str) -> bool:
        """Whether every source row has its own, non-NULL `_rowName`: chunks are cut between names, so rows
        sharing one, or without one, are written in one streamed pass instead."""
        return self.db.cursor().execute(
            f"SELECT count(*) = count(DISTINCT {ROW_NAME}) FROM {quote_ident(source)}"
        ).fetchall()[0][0]

    # keyed, chunked, resumable ---------------------------------------------------------
    def _count(self, source: str, start_after: Any) -> int:
        """Rows of the source after `_rowName` `start_after` (all rows when None)."""
        return self.db.cursor().execute(
            f"SELECT count(*) FROM {quote_ident(source)} WHERE ? IS NULL OR {ROW_NAME} > ?",
            [start_after, start_after],
        ).fetchall()[0][0]

    def _replace(self, ctx: RunContext, query: str, out: str, total: int, signature: str,
                 drop_stage: bool) -> int:
        """One chunk's worth of rows: the query runs over the source as written, and dropping the old output,
        writing the new one (an empty table for no rows) and marking it complete commit together (one WAL sync;
        a run that fails leaves the previous output as it was). `drop_stage`: an unfinished run's table goes
        too."""
        bar = ctx.bar(total, f"transform → {out}")
        try:
            with self.db.transaction() as cur:
                cur.execute(f"DROP TABLE IF EXISTS {quote_ident(out)}")
                if drop_stage:
                    cur.execute(f"DROP TABLE IF EXISTS {quote_ident(staging_table(out))}")
                written = self._write_chunk(ctx, query, out, exists=False)
                self._finish(out, signature)
            bar.update(total)
        finally:
            bar.close()
        return written

    def _run_keyed(self, ctx: RunContext, source: str, query: str, total: int | None, out: str) -> tuple[int, int]:
        """Chunk by chunk into table `out`; `total` (all source rows) is None when resuming after its last row."""
        db, p = self.db, self.params
        cur = db.cursor()
        start_after = None
        skipped = 0
        resuming = total is None
        if resuming:
            start_after, skipped = cur.execute(f"SELECT max({ROW_NAME}), count(*) FROM {quote_ident(out)}").fetchall()[0]
            total = self._count(source, start_after)
        bar = ctx.bar(total, f"transform → {p.outputDataset.id}")
        catalog = cur.execute("SELECT current_database()").fetchall()[0][0]
        qualified = f"{quote_ident(catalog)}.main.{quote_ident(source)}"
        written = seen = 0
        exists = resuming  # a fresh run dropped the table; its first chunk creates it
        shadow = quote_ident(source)  # a temp table of the chunk's rows hides the source from the query
        try:
            while seen < total:
                cur.execute(
                    f"CREATE OR REPLACE TEMP TABLE {shadow} AS SELECT * FROM {qualified}"
                    f" WHERE ? IS NULL OR {ROW_NAME} > ? ORDER BY {ROW_NAME} LIMIT ?",
                    [start_after, start_after, p.chunkSize],
                )
                n, last = cur.execute(f"SELECT count(*), max({ROW_NAME}) FROM temp.main.{shadow}").fetchall()[0]
                if n == 0 and exists:
                    break
                written += self._write_chunk(ctx, query, out, exists)  # with no rows: the empty table
                exists = True
                if n == 0:
                    break
                start_after = last
                seen += n
                bar.update(n)
        finally:
            cur.execute(f"DROP TABLE IF EXISTS temp.main.{shadow}")
            bar.close()
        return written, skipped

    def _write_chunk(self, ctx: RunContext, query: str, out: str, exists: bool) -> int:
        """Run the query over the current chunk straight into the output table (no round trip through Arrow).

        Rows already present (by `_rowName`) are skipped, so a resumed run never duplicates them."""
        cur = self.db.cursor()
        target, select = quote_ident(out), query.strip().rstrip(";")
        with collect_errors(cur) as sink:
            try:
                if exists:
                    cur.execute(
                        f"INSERT INTO {target} BY NAME SELECT * FROM ({select}\n) c WHERE NOT EXISTS"  # \n: a -- comment
                        f" (SELECT 1 FROM {target} o WHERE o.{ROW_NAME} = c.{ROW_NAME})"
                    )
                else:
                    cur.execute(f"CREATE TABLE {target} AS {select}")
                written = cur.fetchall()[0][0]
            except duckdb.Error as exc:
                raise self._input_failed(exc) from None
        for err in sink.drain():
            ctx.record_error(err["cause"], uri=err["uri"], function=err["function"])
        return int(written)

    # anything else: one streamed pass -----------------------------------------------------
    def _run_whole(self, ctx: RunContext, query: str, out: str) -> int:
        """`query` in one streamed pass into table `out` (created empty, with the query's columns, for no rows)."""
        reader_cursor = self.db.connection.cursor()  # the stream stays open while chunks are written elsewhere
        written = 0
        bar = ctx.bar(None, f"transform → {self.params.outputDataset.id}")
        with collect_errors(reader_cursor) as sink:
            try:
                reader = reader_cursor.execute(query).to_arrow_reader(self.params.chunkSize)
                for batch in reader:
                    if batch.num_rows:
                        written += self.db.write_arrow(out, batch)
                        bar.update(batch.num_rows)
                if not self.db.table_exists(out):
                    self.db.write_arrow(out, reader.schema.empty_table())
            except duckdb.Error as exc:
                raise self._input_failed(exc) from None
            finally:
                bar.close()
                reader_cursor.close()
        for err in sink.drain():
            ctx.record_error(err["cause"], uri=err["uri"], function=err["function"])
        return written

    # helpers -----------------------------------------------------------------------------------
    def _input_failed(self, exc: duckdb.Error) -> VisionDBError:
        """The error to raise for a failed inputData statement: a function's own error when one raised it."""
        return statement_error(exc, f"transform {self.id!r}: inputData failed: {exc}", field="inputData")

    def _columns(self, table: str) -> list[str]:
        """Column names of a main-schema table; none when there is no such table."""
        try:
            rows = self.db.cursor().execute(f"DESCRIBE main.{quote_ident(table)}").fetchall()
        except duckdb.CatalogException:
            return []
        return [r[0] for r in rows]
