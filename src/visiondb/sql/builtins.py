"""SQL functions every database has: `"fetch"(uri)` / `fetch_bytes(uri)` return the bytes behind a URI or image."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import pyarrow as pa

from ..errors import VisionDBError
from ..storage.images import ref_from_json
from .udf import create_macro, impl_name, register_arrow_udf, report_row_error

if TYPE_CHECKING:
    from ..engine import VisionDB

FETCH_THREADS = 8


def register_builtins(db: "VisionDB") -> None:
    def fetch_udf(refs: pa.Array) -> pa.Array:
        texts = refs.to_pylist()

        def one(text: str | None) -> bytes | None:
            if text is None:
                return None
            try:
                ref = ref_from_json(text)
                assert ref is not None
                return db.read_ref(ref)[0]
            except VisionDBError as exc:
                if report_row_error("fetch", text, exc):
                    return None
                raise VisionDBError(f"fetch({text}): {exc.message}") from None

        with ThreadPoolExecutor(FETCH_THREADS) as pool:
            return pa.array(list(pool.map(one, texts)), pa.binary())

    register_arrow_udf(db, impl_name("fetch"), fetch_udf, ["VARCHAR"], "BLOB")
    # FETCH is a reserved word in DuckDB's grammar: `"fetch"(uri)` works quoted, `fetch_bytes(uri)` unquoted.
    for name in ('"fetch"', "fetch_bytes"):
        create_macro(db, name, ["x"], f"{impl_name('fetch')}(to_json(x))")
