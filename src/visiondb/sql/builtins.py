"""SQL functions every database has: `"fetch"(uri)` / `fetch_bytes(uri)` return the bytes behind a URI or image."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import pyarrow as pa

from ..core.entities import quote_ident
from ..errors import VisionDBError
from ..storage.images import ref_from_json
from .names import VISIONDB_FUNCTIONS
from .udf import create_macro, fail_row, impl_name, register_arrow_udf, udf_call

if TYPE_CHECKING:
    from ..engine import VisionDB

FETCH_THREADS = 8


def register_builtins(db: "VisionDB") -> None:
    def fetch_udf(refs: pa.Array) -> pa.Array:
        texts = refs.to_pylist()

        def one(text: str | None) -> bytes | tuple[str, VisionDBError] | None:
            if text is None:
                return None
            label = text
            try:
                ref = ref_from_json(text)
                if ref is None:
                    return None
                label = ref.label
                return db.read_ref(ref)[0]
            except VisionDBError as exc:
                return label, exc

        with ThreadPoolExecutor(FETCH_THREADS) as pool:
            results = list(pool.map(one, texts))
        for i, result in enumerate(results):  # failures go to the statement's sink from this (the UDF's) thread
            if isinstance(result, tuple):
                label, error = result
                fail_row("fetch", label, error)
                results[i] = None
        return pa.array(results, pa.binary())

    register_arrow_udf(db, impl_name("fetch"), fetch_udf, ["VARCHAR"], "BLOB")
    # FETCH is a reserved word in DuckDB's grammar: `"fetch"(uri)` works quoted, `fetch_bytes(uri)` unquoted.
    for name in sorted(VISIONDB_FUNCTIONS):
        create_macro(db, quote_ident(name), ["x"], udf_call(impl_name("fetch"), "to_json(x)"))
