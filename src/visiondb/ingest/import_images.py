"""`import.images`: a folder, CSV of URIs or archive → a dataset of image values (+ label, split).

Fetches run in parallel with a progress bar; every image is fully decoded once to reject corrupt or truncated
files; failures go to the run's `errors` and to `<outputDataset>_errors` without stopping the import. Rows are
written in atomic chunks keyed by `_rowName`, so a killed import resumes and fetches only what is missing.
"""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable

import pyarrow as pa

from ..core.config import Params
from ..core.entities import Procedure, quote_ident
from ..core.outputs import OutputDataset
from ..core.registry import PROCEDURE_TYPES
from ..core.runs import RunContext
from ..errors import VisionDBError
from .writes import ERROR_COLUMNS, clear_errors, errors_table, registered, write_errors

CHUNK_ROWS = 128


class ImportImagesParams(Params):
    dataFileUrl: str
    outputDataset: OutputDataset
    uriColumn: str = "uri"
    labelColumn: str | None = None
    splitColumn: str | None = None
    limit: int | None = None
    concurrency: int | None = None
    verify: bool = True  # decode every image once so corrupt/truncated files become per-row errors
    resume: bool = True


@PROCEDURE_TYPES.register("import.images")
class ImportImages(Procedure):
    """Images and their labels into a table with columns `_rowName, image, label, split, …`."""

    Params = ImportImagesParams
    params: ImportImagesParams

    def run(self, ctx: RunContext) -> dict:
        from .sources import discover_images

        p, db = self.params, self.db
        out = p.outputDataset.id
        db.datasets.check_id(out)
        ctx.set_progress(0, None, phase="listing " + p.dataFileUrl)
        records = discover_images(
            p.dataFileUrl,
            db.fetcher,
            uri_column=p.uriColumn,
            label_column=p.labelColumn,
            split_column=p.splitColumn,
            limit=p.limit,
        )
        for r in records:
            _assign_roles(r)
        rows, rejected = _unique_rows(p.dataFileUrl, records)
        extra_cols = sorted({k for _, r in rows for k in r.extra})
        signature = json.dumps({"procedure": self.id, "params": p.model_dump(mode="json")}, sort_keys=True)
        done = self._prepare(out, extra_cols, signature)
        self._add_columns(out, [(n, r) for n, r in rows if n in done], extra_cols)
        for e in rejected:
            ctx.record_error(e["cause"], row=e["_rowName"], uri=e["uri"])
        write_errors(db, out, rejected, ctx.run_id)
        todo = [(name, r) for name, r in rows if name not in done]
        imported = self._import(ctx, out, todo, extra_cols)
        db.catalog.set_marker(out, self.type_name, signature, complete=True)
        db.datasets.register_output(out, p.outputDataset.type, {"createdBy": self.id})
        db.datasets.register_output(errors_table(out), "tabular", {"createdBy": self.id})
        count = db.table_status(out)["rowCount"]
        return {
            "outputDataset": out,
            "errorsDataset": errors_table(out),
            "rowCount": count,
            "imported": imported,
            "alreadyPresent": len(rows) - len(todo),
            "errorCount": ctx.record.get("errorCount", 0),
            "discovered": len(records),
        }

    # set-up and resume ---------------------------------------------------------------------
    def _prepare(self, out: str, extra_cols: list[str], signature: str) -> set[str]:
        """Create (or keep, when resuming the same unfinished import) the output and error tables."""
        db, cur = self.db, self.db.cursor()
        resuming = self.params.resume and db.catalog.resumable(out, signature)
        if not resuming:
            cur.execute(f"DROP TABLE IF EXISTS {quote_ident(out)}")
            cur.execute(f"DROP TABLE IF EXISTS {quote_ident(errors_table(out))}")
        extras = "".join(f", {quote_ident(c)} VARCHAR" for c in extra_cols)
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {quote_ident(out)}"
            f" (_rowName VARCHAR PRIMARY KEY, image image, label VARCHAR, split VARCHAR{extras})"
        )
        cur.execute(f"CREATE TABLE IF NOT EXISTS {quote_ident(errors_table(out))} ({ERROR_COLUMNS})")
        db.catalog.set_marker(out, self.type_name, signature, complete=False)
        if not resuming:
            return set()
        return {r[0] for r in cur.execute(f"SELECT _rowName FROM {quote_ident(out)}").fetchall()}

    def _add_columns(self, out: str, present: list[tuple[str, Any]], extra_cols: list[str]) -> None:
        """A resumed import whose CSV gained columns since the interrupted run: add them (VARCHAR, like every CSV
        column) and fill them in for the rows already imported, from the CSV as it is now."""
        have = {c["name"].lower() for c in self.db.table_status(out)["columns"]}
        added = [c for c in extra_cols if c.lower() not in have]
        if not added:
            return
        values = [{"_rowName": name, **{c: _text(r.extra.get(c)) for c in added}} for name, r in present]
        schema = pa.schema([(c, pa.string()) for c in ("_rowName", *added)])
        with self.db.transaction() as cur:
            for c in added:
                cur.execute(f"ALTER TABLE {quote_ident(out)} ADD COLUMN {quote_ident(c)} VARCHAR")
            if values:
                with registered(cur, "_vdb_new_columns", pa.Table.from_pylist(values, schema=schema)):
                    sets = ", ".join(f"{quote_ident(c)} = v.{quote_ident(c)}" for c in added)
                    cur.execute(f"UPDATE {quote_ident(out)} SET {sets} FROM _vdb_new_columns v"
                                f" WHERE {quote_ident(out)}._rowName = v._rowName")

    # fetching, checking, writing --------------------------------------------------------------
    def _import(self, ctx: RunContext, out: str, todo: list[tuple[str, Any]], extra_cols: list[str]) -> int:
        db, p = self.db, self.params
        uris = [r.uri for _, r in todo]
        good: list[dict] = []
        bad: list[dict] = []
        imported = 0
        bar = ctx.bar(len(todo), f"import.images → {out}", unit="img")
        checker = ThreadPoolExecutor(max_workers=2, thread_name_prefix="visiondb-verify")
        try:
            results = db.fetcher.read_many(uris, concurrency=p.concurrency)
            for batch in chunked(results, CHUNK_ROWS):
                checked = checker.map(lambda item: (item[0], self._check(todo[item[0]][1].uri, item[1])), batch)
                for index, outcome in checked:
                    name, record = todo[index]
                    if isinstance(outcome, VisionDBError):
                        status = getattr(outcome, "status", None)
                        ctx.record_error(outcome.message, row=name, uri=record.uri, status=status)
                        bad.append({"_rowName": name, "uri": record.uri, "status": status, "cause": outcome.message})
                    else:
                        good.append(
                            {
                                "_rowName": name,
                                "image": outcome,
                                "label": record.label,
                                "split": record.split,
                                **{c: _text(record.extra.get(c)) for c in extra_cols},
                            }
                        )
                imported += self._flush(out, good, bad, ctx.run_id)
                bar.update(len(batch))
                good, bad = [], []
        finally:
            checker.shutdown()
            bar.close()
        return imported

    def _check(self, uri: str, fetched: bytes | Exception) -> dict | VisionDBError:
        if isinstance(fetched, VisionDBError):
            return fetched
        if isinstance(fetched, Exception):
            return VisionDBError(f"{uri}: {fetched}")
        try:
            if self.params.verify:
                from ..imaging.decode import decode_rgb

                decode_rgb(fetched, min_side=32)
            return self.db.store_image(uri, fetched)
        except VisionDBError as exc:
            return exc

    def _flush(self, out: str, good: list[dict], bad: list[dict], run_id: str) -> int:
        """Insert one chunk and its errors atomically; rows already present (a resumed run) are skipped, never
        duplicated, and rows that now succeed lose the error rows earlier runs left for them."""
        with self.db.transaction() as cur:
            if good:
                with registered(cur, "_vdb_import_chunk", pa.Table.from_pylist(good)):
                    cur.execute(
                        f"INSERT INTO {quote_ident(out)} BY NAME SELECT * REPLACE (image::image AS image)"
                        f" FROM _vdb_import_chunk c WHERE c._rowName NOT IN (SELECT _rowName FROM {quote_ident(out)})"
                    )
                clear_errors(self.db, out, [g["_rowName"] for g in good], run_id)
            write_errors(self.db, out, bad, run_id)
        return len(good)


FIXED_COLUMNS = ("_rowName", "image", "label", "split")
_FIXED_LOWER = frozenset(c.lower() for c in FIXED_COLUMNS)


def _assign_roles(record: Any) -> None:
    """CSV columns named label/split (any case) fill those roles unless other columns were named; columns named
    like the other fixed columns (`_rowName`, `image`, any case) are dropped, so no extra column clashes with them."""
    for key in list(record.extra):
        role = key.lower()
        if role not in _FIXED_LOWER:
            continue
        value = record.extra.pop(key)
        if role in ("label", "split") and getattr(record, role) is None:
            setattr(record, role, None if value is None else str(value))


def _unique_rows(data_file_url: str, records: list[Any]) -> tuple[list[tuple[str, Any]], list[dict]]:
    """`(row name, record)` of the first record of each row name, and an error row for every later duplicate and
    every record discovery rejected (a CSV row without a URI is named `row <n>`)."""
    first: dict[str, Any] = {}
    rows: list[tuple[str, Any]] = []
    rejected: list[dict] = []
    for r in records:
        if r.error is not None:
            rejected.append({"_rowName": f"row {r.row + 1}", "uri": r.uri or None, "status": None, "cause": r.error})
            continue
        name = row_name(data_file_url, r.uri)
        if name in first:
            kept = first[name]
            same = "URI" if kept.uri == r.uri else f"row name (as {kept.uri})"
            rejected.append({"_rowName": name, "uri": r.uri, "status": None,
                             "cause": f"row {r.row + 1} ({r.uri}): duplicate of row {kept.row + 1}, same {same};"
                                      " skipped, the first is imported"})
            continue
        first[name] = r
        rows.append((name, r))
    return rows, rejected


def row_name(data_file_url: str, uri: str) -> str:
    """Rows are named by their path relative to the imported folder/archive, else by their URI."""
    import os

    prefixes = [data_file_url.rstrip("/") + "/", f"archive+{data_file_url}#"]
    if "://" not in data_file_url and not data_file_url.startswith("archive+"):
        prefixes.append(os.path.realpath(data_file_url).rstrip("/") + "/")
    for prefix in prefixes:
        if uri.startswith(prefix):
            return uri[len(prefix):]
    return uri


def chunked(items: Iterable[Any], size: int) -> Iterable[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _text(value: Any) -> str | None:
    return None if value is None else str(value)

