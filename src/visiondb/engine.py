"""The connection object everything hangs off (as in DuckDB's Python API): catalog, media, entities, SQL."""
from __future__ import annotations

import contextlib
import threading
import weakref
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import duckdb
import pyarrow as pa

from .core.catalog import Catalog
from .core.entities import DatasetCollection, FunctionCollection, ProcedureCollection, quote_ident
from .errors import ConflictError, FetchError, NotFoundError
from .sql.udf import statement_error
from .storage.embedding_cache import EmbeddingCache
from .storage.images import CONTENT_SCHEMES, IMAGE_SQL_TYPE, ImageRef, uri_sha256
from .storage.media import MediaStore, sha256_hex

_open_files: dict[Path, weakref.ref] = {}  # database file -> the VisionDB of this process that has it open
_open_files_lock = threading.Lock()


class VisionDB:
    """An open visiondb database: a DuckDB file (or memory), its media store and its entity catalog."""

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        media_dir: str | Path | None = None,
        fetch_policy: Any = None,
        cache_dir: str | Path | None = None,
    ) -> None:
        self.path = Path(path).resolve() if path not in (None, ":memory:") else None
        self._claim_file()
        try:
            self._open(media_dir, fetch_policy, cache_dir)
        except BaseException:  # a half-open object must not keep the DuckDB instance (and its functions) alive
            self.close()
            raise

    def _open(self, media_dir: str | Path | None, fetch_policy: Any, cache_dir: str | Path | None) -> None:
        self._con = duckdb.connect(str(self.path) if self.path else ":memory:")
        self._local = threading.local()
        self._cursors: weakref.WeakSet[duckdb.DuckDBPyConnection] = weakref.WeakSet()  # closed by close()
        self._fetch_policy = fetch_policy
        self._fetcher: Any = None
        self._create_types()
        self.catalog = Catalog(self)
        if media_dir is None and self.path is not None:
            media_dir = self.path.with_name(self.path.name + ".media")
        self.media = MediaStore(self, Path(media_dir) if media_dir else None)
        self.embedding_cache = EmbeddingCache(self)
        if cache_dir is None:
            cache_dir = (self.path.with_name(self.path.name + ".cache")) if self.path else self.media.root / "cache"
        self.cache_dir = Path(cache_dir)
        self.datasets = DatasetCollection(self)
        self.functions = FunctionCollection(self)
        self.procedures = ProcedureCollection(self)
        from .sql.builtins import register_builtins

        register_builtins(self)
        self.load_problems = self.functions.load_all()

    def _claim_file(self) -> None:
        """Refuse a file that another open VisionDB of this process holds: DuckDB would hand this object the same
        database instance, where that object's Python functions are registered under the names these need."""
        if self.path is None:
            return
        with _open_files_lock:
            holder = _open_files.get(self.path)
            if holder is not None and holder() is not None:
                raise ConflictError(f"database file {self.path} is already open in this process: use that "
                                    "visiondb object, or close it first", path=str(self.path))
            _open_files[self.path] = weakref.ref(self)

    def _release_file(self) -> None:
        with _open_files_lock:
            holder = _open_files.get(self.path) if self.path is not None else None
            if holder is not None and holder() is self:
                del _open_files[self.path]

    # connections ---------------------------------------------------------------
    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A per-thread cursor on the shared database (DuckDB connections are not thread-safe)."""
        cur = getattr(self._local, "cursor", None)
        if cur is None:
            cur = self._local.cursor = self._new_cursor()
        return cur

    def aux_cursor(self) -> duckdb.DuckDBPyConnection:
        """A second per-thread cursor for work done inside a running query (UDFs may not reuse the query's own)."""
        cur = getattr(self._local, "aux", None)
        if cur is None:
            cur = self._local.aux = self._new_cursor()
        return cur

    def _new_cursor(self) -> duckdb.DuckDBPyConnection:
        cur = self._con.cursor()
        self._cursors.add(cur)
        return cur

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        return self._con

    @contextlib.contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Run this thread's cursor statements as one transaction: all or nothing, and one WAL sync, not one each."""
        cur = self.cursor()
        cur.begin()
        try:
            yield cur
        except BaseException:
            cur.rollback()
            raise
        cur.commit()

    def _create_types(self) -> None:
        exists = self._con.execute(
            "SELECT count(*) FROM duckdb_types() WHERE type_name = 'image' AND database_name = current_database()"
        ).fetchall()[0][0]
        if not exists:
            self._con.execute(f"CREATE TYPE image AS {IMAGE_SQL_TYPE}")

    def close(self) -> None:
        """Store pending cache writes, then close every cursor and the connection.

        Cursors are closed one by one: a thread-local cursor left in a reference cycle otherwise keeps the
        DuckDB instance open until the garbage collector runs, and a reopen of the same file in this process
        would get the old instance (with the old Python UDFs still registered)."""
        try:
            if hasattr(self, "embedding_cache"):  # absent when opening failed early
                self.embedding_cache.close()
        finally:  # a failing step must not leave the connection open or the file claimed
            try:
                for cur in list(getattr(self, "_cursors", ())):
                    cur.close()
                if hasattr(self, "_con"):
                    self._con.close()
            finally:
                self._release_file()

    def __enter__(self) -> "VisionDB":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # SQL ---------------------------------------------------------------------------
    def sql(self, query: str, params: Sequence[Any] | dict | None = None) -> Any:
        """Run SQL; returns a relation-like result with `.df()`, `.arrow()`, `.fetchall()`."""
        self.embedding_cache.flush()  # the statement sees every cached vector
        cur = self.cursor()
        try:
            cur.execute(query, params) if params is not None else cur.execute(query)
            return Result(cur)
        except duckdb.Error as exc:
            raise statement_error(exc, f"SQL error: {exc}", query=query) from None

    def execute(self, query: str, params: Sequence[Any] | dict | None = None) -> duckdb.DuckDBPyConnection:
        self.embedding_cache.flush()
        try:
            return self.cursor().execute(query, params) if params is not None else self.cursor().execute(query)
        except duckdb.Error as exc:
            raise statement_error(exc, f"SQL error: {exc}", query=query) from None

    def table_exists(self, name: str) -> bool:
        row = self.cursor().execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = ? AND schema_name = 'main'"
            " AND database_name = current_database()",
            [name],
        ).fetchall()
        return bool(row and row[0][0])

    def table_status(self, name: str) -> dict:
        if not self.table_exists(name):
            return {"rowCount": 0, "columns": [], "exists": False}
        cur = self.cursor()
        columns = cur.execute(f"DESCRIBE {quote_ident(name)}").fetchall()
        count = cur.execute(f"SELECT count(*) FROM {quote_ident(name)}").fetchall()[0][0]
        return {"rowCount": count, "columns": [{"name": c[0], "type": c[1]} for c in columns]}

    def write_arrow(self, table: str, data: pa.Table | pa.RecordBatch, *, create: bool = True) -> int:
        """Append Arrow rows to a table, creating it from the Arrow schema on first write."""
        if isinstance(data, pa.RecordBatch):
            data = pa.Table.from_batches([data])
        cur = self.cursor()
        view = f"_vdb_in_{threading.get_ident()}"
        cur.register(view, data)
        try:
            if not self.table_exists(table):
                if not create:
                    raise NotFoundError(f"dataset {table!r} does not exist", id=table)
                cur.execute(f"CREATE TABLE {quote_ident(table)} AS SELECT * FROM {view}")
            else:
                cur.execute(f"INSERT INTO {quote_ident(table)} BY NAME SELECT * FROM {view}")
        finally:
            cur.unregister(view)
        return data.num_rows

    # bytes ------------------------------------------------------------------------
    @property
    def fetcher(self) -> Any:
        if self._fetcher is None:
            from .ingest.fetch import Fetcher
            from .ingest.policy import FetchPolicy

            self._fetcher = Fetcher(self._fetch_policy or FetchPolicy())
        return self._fetcher

    def set_fetch_policy(self, policy: Any) -> None:
        self._fetch_policy = policy
        self._fetcher = None

    def read_uri(self, uri: str) -> bytes:
        """Bytes behind a URI: `mem:`/`media:` hashes from the media store, anything else via the fetcher."""
        if uri.startswith(CONTENT_SCHEMES):
            sha = uri_sha256(uri)
            if sha is None:
                raise FetchError(f"{uri[:80]!r} does not name stored content: expected mem:/media: and a sha256 digest",
                                 uri=uri[:200])
            return self.media.get(sha)
        return self.fetcher.read(uri)

    def read_ref(self, ref: ImageRef) -> tuple[bytes, str]:
        """Bytes and sha256 of an image reference, preferring the media store over a fetch."""
        if ref.sha256:
            try:
                return self.media.get(ref.sha256), ref.sha256
            except NotFoundError:
                if not ref.uri:
                    raise
        if not ref.uri:
            raise FetchError("image value has neither URI nor stored bytes")
        data = self.read_uri(ref.uri)
        return data, sha256_hex(data)

    def store_image(self, uri: str, data: bytes) -> dict:
        """Put bytes in the media store and return the image STRUCT value (raises on non-images)."""
        from .storage.images import store_images

        value = store_images(self, [(uri, data)])[0]
        if isinstance(value, Exception):
            raise value
        assert value is not None
        return value


class Result:
    """A finished statement's rows (fetched at once, so the cursor is free) with relation-like accessors."""

    def __init__(self, cur: duckdb.DuckDBPyConnection) -> None:
        self.columns = [d[0] for d in (cur.description or [])]
        self._table = cur.to_arrow_table() if cur.description else pa.table({})

    def fetchall(self) -> list[tuple]:
        cols = [self._table.column(i).to_pylist(maps_as_pydicts="strict") for i in range(self._table.num_columns)]
        return list(zip(*cols)) if cols else []

    def fetchone(self) -> tuple | None:
        rows = self.fetchall()
        return rows[0] if rows else None

    def df(self) -> Any:
        return self._table.to_pandas()

    def arrow(self) -> pa.Table:
        return self._table

    def __len__(self) -> int:
        return self._table.num_rows

    def __repr__(self) -> str:
        return self.df().to_string(max_rows=40, max_colwidth=60) if self.columns else "<no rows>"


def connect(path: str | Path | None = None, **options: Any) -> VisionDB:
    """Open (or create) a visiondb database file; `None` keeps everything in memory."""
    return VisionDB(path, **options)


def iter_chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
