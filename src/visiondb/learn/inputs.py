"""Turning a query result (Arrow) into training/scoring inputs: feature matrices, image bytes, labels."""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from ..errors import TrainingError
from ..storage.images import ref_from_value

if TYPE_CHECKING:
    from ..engine import VisionDB

RESERVED = {"_rowName", "label"}


def feature_matrix(table: pa.Table, column: str | None = None) -> np.ndarray:
    """A float32 [n, d] matrix from a list column, or from all numeric non-label columns (MLDB's `{*}` style)."""
    if column is not None or "features" in table.column_names:
        name = column or "features"
        if name not in table.column_names:
            raise TrainingError(f"inputData has no column {name!r} (columns: {table.column_names})", field=name)
        return list_column_matrix(table.column(name).combine_chunks(), name)
    numeric = [
        c for c in table.column_names
        if c not in RESERVED and (pa.types.is_integer(table.schema.field(c).type) or pa.types.is_floating(table.schema.field(c).type))
    ]
    if not numeric:
        raise TrainingError("inputData must yield a `features` column (an array) or numeric feature columns", field="features")
    return np.column_stack([table.column(c).to_numpy(zero_copy_only=False).astype(np.float32) for c in numeric])


def list_column_matrix(arr: pa.Array, name: str = "features") -> np.ndarray:
    """Rows of equal-length numeric lists → matrix; names the first row that is null or of another length."""
    if not (pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type) or pa.types.is_fixed_size_list(arr.type)):
        raise TrainingError(f"column {name!r} must be a numeric array column, got {arr.type}", field=name)
    if arr.null_count:
        first = next(i for i, v in enumerate(arr.is_null().to_pylist()) if v)
        raise TrainingError(f"{name}: row {first} has no features (NULL) — was its image unreadable?", field=name, row=first)
    if pa.types.is_fixed_size_list(arr.type):
        width = arr.type.list_size
    else:
        lengths = pa.compute.list_value_length(arr).to_numpy(zero_copy_only=False)
        width = int(lengths[0]) if len(lengths) else 0
        bad = np.nonzero(lengths != width)[0]
        if len(bad):
            raise TrainingError(
                f"{name}: row {int(bad[0])} has {int(lengths[bad[0]])} values but row 0 has {width}", field=name,
                row=int(bad[0]),
            )
    values = arr.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    return values.reshape(len(arr), width)


def image_bytes(db: "VisionDB", values: list[Any]) -> np.ndarray:
    """Encoded bytes for each image value / URI (from the media store by hash when stored)."""
    refs = [ref_from_value(v) for v in values]
    stored = db.media.get_many([r.sha256 for r in refs if r is not None and r.sha256])
    out = np.empty(len(refs), dtype=object)
    for i, ref in enumerate(refs):
        if ref is None:
            raise TrainingError(f"image: row {i} is NULL", field="features", row=i)
        out[i] = stored.get(ref.sha256) if ref.sha256 else None
        if out[i] is None:
            out[i] = db.read_ref(ref)[0]
    return out


def content_hashes(table: pa.Table, X: Any) -> list[str]:
    """Per-row content hash for the training manifest: image sha256 when known, else a hash of the features."""
    for name in ("features", "image"):
        if name in table.column_names and pa.types.is_struct(table.schema.field(name).type):
            return [v.get("sha256") or "" for v in table.column(name).to_pylist()]
    if isinstance(X, list):
        return [hashlib.sha256(b"".join(np.ascontiguousarray(m[i]).tobytes() for m in X)).hexdigest() for i in range(len(X[0]))]
    if isinstance(X, np.ndarray) and X.dtype == object:
        return [hashlib.sha256(b).hexdigest() for b in X]
    return [hashlib.sha256(np.ascontiguousarray(row).tobytes()).hexdigest() for row in X]


def row_names(table: pa.Table) -> list[str]:
    if "_rowName" in table.column_names:
        return [str(v) for v in table.column("_rowName").to_pylist()]
    return [str(i) for i in range(table.num_rows)]
