"""`transform`: run a SELECT and write its rows into a dataset, in resumable chunks.

Row identity is the source dataset's `_rowName` (added to the select list through DuckDB's parser when the
query is a plain SELECT over one dataset); chunks are read in `_rowName` order and each chunk is inserted
atomically with an anti-join, so an interrupted run resumes after the last written row with no duplicates.
"""
from __future__ import annotations

import functools
import json
from typing import Any

import duckdb

from ..core.config import Params
from ..core.entities import Procedure, quote_ident
from ..core.outputs import OutputDataset
from ..core.registry import PROCEDURE_TYPES
from ..core.runs import RunContext
from ..errors import QueryError
from .ast import SelectShape, parse_select, with_row_name
from .udf import collect_errors

ROW_NAME = "_rowName"


class TransformParams(Params):
    inputData: str
    outputDataset: OutputDataset
    chunkSize: int = 512
    resume: bool = True


@PROCEDURE_TYPES.register("transform")
class Transform(Procedure):
    """MLDB's `transform`: `inputData` (a SELECT) → `outputDataset`, model functions running on whole chunks."""

    Params = TransformParams
    params: TransformParams

    def run(self, ctx: RunContext) -> dict:
        db, p = self.db, self.params
        out = p.outputDataset.id
        self.db.datasets.check_id(out)
        cur = db.cursor()
        source = self._shape.source_table
        keyed_query = self._keyed_query()
        signature = json.dumps({"procedure": self.id, "inputData": p.inputData})
        # a finished output is recomputed (model functions answer from their cache); an unfinished one resumes
        resuming = keyed_query is not None and p.resume and db.catalog.resumable(out, signature)
        total = self._count(source, None) if keyed_query is not None and not resuming else None
        if total is not None and total <= p.chunkSize:
            assert keyed_query is not None
            written, skipped = self._replace(ctx, keyed_query, out, total, signature), 0
            row_count = written
        else:
            with db.transaction():
                if not resuming:
                    cur.execute(f"DROP TABLE IF EXISTS {quote_ident(out)}")
                db.catalog.set_marker(out, self.type_name, signature, complete=False)
            if keyed_query is not None:
                assert source is not None
                written, skipped = self._run_keyed(ctx, source, keyed_query, total)
                row_count = written + skipped
            else:
                written, skipped = self._run_whole(ctx), 0
                row_count = db.table_status(out)["rowCount"]
            with db.transaction():
                self._finish(out, signature)
        return {
            "outputDataset": out,
            "rowsWritten": written,
            "rowsAlreadyPresent": skipped,
            "resumed": resuming,
            "rowCount": row_count,
            "errorCount": ctx.record.get("errorCount", 0),
        }

    def _finish(self, out: str, signature: str) -> None:
        """Mark the output complete and catalogue it as a dataset."""
        self.db.catalog.set_marker(out, self.type_name, signature, complete=True)
        self.db.datasets.register_output(out, self.params.outputDataset.type, {"createdBy": self.id})

    @functools.cached_property
    def _shape(self) -> SelectShape:
        """The parsed input query (parsed once per procedure instance: its params never change)."""
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
        (no single source dataset with `_rowName`, or a grouped / limited query)."""
        shape = self._shape
        source = shape.source_table
        if source is None or shape.grouped or ROW_NAME not in self._columns(source):
            return None
        if ROW_NAME in shape.output_names or shape.has_star:
            return self.params.inputData
        return self._with_row_name

    # keyed, chunked, resumable ---------------------------------------------------------
    def _count(self, source: str, start_after: Any) -> int:
        """Rows of the source after `_rowName` `start_after` (all rows when None)."""
        return self.db.cursor().execute(
            f"SELECT count(*) FROM {quote_ident(source)} WHERE ? IS NULL OR {ROW_NAME} > ?",
            [start_after, start_after],
        ).fetchall()[0][0]

    def _replace(self, ctx: RunContext, query: str, out: str, total: int, signature: str) -> int:
        """One chunk's worth of rows: the query runs over the source as written, and dropping the old output,
        writing the new one and marking it complete commit together (one WAL sync; a run that fails leaves the
        previous output as it was)."""
        bar = ctx.bar(total, f"transform → {out}")
        try:
            with self.db.transaction() as cur:
                cur.execute(f"DROP TABLE IF EXISTS {quote_ident(out)}")
                written = self._write_chunk(ctx, query, out, exists=False) if total else 0
                self._finish(out, signature)
            bar.update(total)
        finally:
            bar.close()
        return written

    def _run_keyed(self, ctx: RunContext, source: str, query: str, total: int | None) -> tuple[int, int]:
        """Chunk by chunk; `total` (all source rows) is None when resuming after the output's last row."""
        db, p = self.db, self.params
        out = p.outputDataset.id
        cur = db.cursor()
        start_after = None
        skipped = 0
        resuming = total is None
        if resuming:
            start_after, skipped = cur.execute(f"SELECT max({ROW_NAME}), count(*) FROM {quote_ident(out)}").fetchall()[0]
            total = self._count(source, start_after)
        bar = ctx.bar(total, f"transform → {out}")
        catalog = cur.execute("SELECT current_database()").fetchall()[0][0]
        qualified = f"{quote_ident(catalog)}.main.{quote_ident(source)}"
        written = seen = 0
        exists = resuming  # a fresh run dropped the output; its first chunk creates it
        shadow = quote_ident(source)  # a temp table of the chunk's rows hides the source from the query
        try:
            while seen < total:
                cur.execute(
                    f"CREATE OR REPLACE TEMP TABLE {shadow} AS SELECT * FROM {qualified}"
                    f" WHERE ? IS NULL OR {ROW_NAME} > ? ORDER BY {ROW_NAME} LIMIT ?",
                    [start_after, start_after, p.chunkSize],
                )
                n, last = cur.execute(f"SELECT count(*), max({ROW_NAME}) FROM temp.main.{shadow}").fetchall()[0]
                if n == 0:
                    break
                written += self._write_chunk(ctx, query, out, exists)
                exists = True
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
                raise QueryError(f"transform {self.id!r}: inputData failed: {exc}", field="inputData") from None
        for err in sink.drain():
            ctx.record_error(err["cause"], uri=err["uri"], function=err["function"])
        return int(written)

    # anything else: one streamed pass -----------------------------------------------------
    def _run_whole(self, ctx: RunContext) -> int:
        out = self.params.outputDataset.id
        reader_cursor = self.db.connection.cursor()  # the stream stays open while chunks are written elsewhere
        written = 0
        bar = ctx.bar(None, f"transform → {out}")
        with collect_errors(reader_cursor) as sink:
            try:
                reader = reader_cursor.execute(self.params.inputData).to_arrow_reader(self.params.chunkSize)
                for batch in reader:
                    if batch.num_rows:
                        written += self.db.write_arrow(out, batch)
                        bar.update(batch.num_rows)
            except duckdb.Error as exc:
                raise QueryError(f"transform {self.id!r}: inputData failed: {exc}", field="inputData") from None
            finally:
                bar.close()
                reader_cursor.close()
        for err in sink.drain():
            ctx.record_error(err["cause"], uri=err["uri"], function=err["function"])
        return written

    # helpers -----------------------------------------------------------------------------------
    def _columns(self, table: str) -> list[str]:
        """Column names of a main-schema table; none when there is no such table."""
        try:
            rows = self.db.cursor().execute(f"DESCRIBE main.{quote_ident(table)}").fetchall()
        except duckdb.CatalogException:
            return []
        return [r[0] for r in rows]
