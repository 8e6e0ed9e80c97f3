"""`image.embedding`: a pretrained CNN as a SQL function returning the penultimate (or logits) vector.

Vectors are cached in `vdb.embeddings` by (content hash, model key), so the same photo under two URLs,
or a re-run over stored images, costs no decode and no forward pass.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterable, Literal

import numpy as np
import pyarrow as pa

from ..core.config import Params
from ..core.entities import Function
from ..core.registry import FUNCTION_TYPES
from ..errors import VisionDBError
from ..storage.embedding_cache import vectors_to_arrow
from ..storage.images import CONTENT_SCHEMES, ImageRef, ref_from_json
from .udf import create_macro, fail_row, impl_name, register_arrow_udf, udf_call


def balanced_batch_size(n: int, batch_size: int, workers: int) -> int:
    """Largest batch <= `batch_size` cutting `n` rows into a multiple of `workers` near-equal batches.

    The pipeline runs `workers` batches at once; a lone short last batch would leave the other workers idle
    at the end of every UDF call (one call per transform chunk).
    """
    if n <= 0:
        return max(1, batch_size)
    workers = max(1, workers)
    rounds = -(-n // (workers * batch_size))
    return max(1, -(-n // (workers * rounds)))


class EmbeddingParams(Params):
    model: str = "efficientnet_lite0"
    architecture: str | None = None
    layer: Literal["pooled", "logits"] = "pooled"
    backend: Literal["auto", "torch", "onnx"] = "auto"
    batchSize: int = 16  # upper bound; each UDF call balances its misses across the inference workers
    useCache: bool = True


@FUNCTION_TYPES.register("image.embedding")
class ImageEmbedding(Function):
    """`name(image_or_uri) -> FLOAT[]`: pooled features (default) or logits of a pretrained backbone."""

    Params = EmbeddingParams
    params: EmbeddingParams

    def __init__(self, db: Any, id: str, params: EmbeddingParams) -> None:
        super().__init__(db, id, params)
        self._embedder: Any = None
        self._lock = threading.Lock()
        self.forward_rows = 0  # rows that went through the network (tests count cache hits with it)

    @property
    def embedder(self) -> Any:
        with self._lock:
            if self._embedder is None:
                from ..models.embedder import get_embedder

                try:
                    self._embedder = get_embedder(
                        model=self.params.model,
                        layer=self.params.layer,
                        backend=self.params.backend,
                        cache_dir=self.db.cache_dir / "onnx",
                        opener=self.db.read_uri,
                        architecture=self.params.architecture,
                    )
                except VisionDBError:
                    raise
                except Exception as exc:
                    raise VisionDBError(
                        f"function {self.id!r}: cannot load model {self.params.model!r}: {exc}", field="params.model"
                    ) from None
            return self._embedder

    def register(self) -> None:
        register_arrow_udf(self.db, impl_name(self.id), self._udf, ["VARCHAR"], "FLOAT[]")
        create_macro(self.db, self.id, ["x"], udf_call(impl_name(self.id), "to_json(x)"))

    def input_names(self) -> list[str]:
        return ["url"]

    def output_name(self) -> str:
        return "embedding"

    def status(self) -> dict:
        return {"model": self.params.model, "layer": self.params.layer, "loaded": self._embedder is not None}

    # the vectorised body --------------------------------------------------------------
    def _udf(self, refs: pa.Array) -> pa.Array:
        return vectors_to_arrow(self.embed_texts(refs.to_pylist()))

    def embed_texts(self, texts: list[str | None]) -> list[np.ndarray | None]:
        out: list[np.ndarray | None] = [None] * len(texts)
        refs: dict[int, ImageRef] = {}
        for i, text in enumerate(texts):
            if text is None:
                continue
            try:
                ref = ref_from_json(text)
                if ref is not None:
                    refs[i] = ref
            except VisionDBError as exc:
                self._fail(text, exc)
        self.embed_refs(refs, out)
        return out

    def embed_refs(self, refs: dict[int, ImageRef], out: list[np.ndarray | None]) -> None:
        embedder = self.embedder
        key = embedder.key
        hashes: dict[int, str] = {i: r.sha256 for i, r in refs.items() if r.sha256}
        data: dict[int, bytes] = {}
        # rows known only by URI: read them to learn their hash (the same photo under two URLs is one vector)
        for i, result in self._read_uris({i: r for i, r in refs.items() if not r.sha256}):
            if isinstance(result, Exception):
                self._fail(refs[i].label, result)
            else:
                data[i], hashes[i] = result
        cache = self.db.embedding_cache
        cached = cache.lookup(key, set(hashes.values())) if self.params.useCache else {}
        todo = {i: h for i, h in hashes.items() if h not in cached}
        for i, h in hashes.items():
            if h in cached:
                out[i] = cached[h]
        if not todo:
            return
        # stored files come back as readers: the pipeline's workers read them in parallel with decoding
        stored = self.db.media.sources([h for i, h in todo.items() if i not in data])
        claimed: dict[str, list[int]] = {}
        for i, h in todo.items():
            claimed.setdefault(h, []).append(i)
        unique: dict[str, list[int]] = {}  # content hash -> rows, for the bytes that go through the network
        items = []
        for h, rows in claimed.items():
            blob = next((data[i] for i in rows if i in data), None) or stored.get(h)
            if blob is not None:
                unique[h] = rows
                items.append((h, blob))
                continue
            for i in rows:  # a hash the media store lacks (a stale image value): key by the bytes its URI holds now
                try:
                    blob, real = self.db.read_ref(refs[i])
                except VisionDBError as exc:
                    self._fail(refs[i].label, exc)
                    continue
                if real not in unique:
                    items.append((real, blob))
                unique.setdefault(real, []).append(i)
        batch = balanced_batch_size(len(items), self.params.batchSize, embedder.workers)
        from ..models.embedder import is_bulk  # (models import torch: loaded with the first embedder)

        # a bulk call (a transform chunk, not a serving batch) stores its vectors once it is over
        with cache.hold() if is_bulk(len(items), batch, embedder.workers) else contextlib.nullcontext():
            for keys, vectors, errors in embedder.embed_stream(items, batch_size=batch):
                new = {h: np.asarray(vec, dtype=np.float32) for h, vec in zip(keys, vectors)}
                self.forward_rows += len(new)
                if self.params.useCache:
                    cache.put(key, new)  # written behind the computation
                for h, vec in new.items():
                    for i in unique[h]:
                        out[i] = vec
                for h, cause in errors:
                    for i in unique[h]:  # every row with that content failed, each under its own name
                        self._fail(refs[i].label, VisionDBError(str(cause)))

    def _read_uris(self, refs: dict[int, ImageRef]) -> Iterable[tuple[int, Any]]:
        from ..storage.media import sha256_hex

        if not refs:
            return []
        order = list(refs)
        uris = [refs[i].uri or "" for i in order]
        results = []
        local = [(i, u) for i, u in zip(order, uris) if u.startswith(CONTENT_SCHEMES)]
        remote = [(i, u) for i, u in zip(order, uris) if not u.startswith(CONTENT_SCHEMES)]
        for i, u in local:
            try:
                blob = self.db.read_uri(u)
                results.append((i, (blob, sha256_hex(blob))))
            except VisionDBError as exc:
                results.append((i, exc))
        if remote:
            for pos, result in self.db.fetcher.read_many([u for _, u in remote], progress=False):
                i = remote[pos][0]
                results.append((i, result if isinstance(result, Exception) else (result, sha256_hex(result))))
        return results

    def _fail(self, item: str, error: Exception) -> None:
        fail_row(self.id, item, error)
