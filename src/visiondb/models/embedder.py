"""Embedder: backbone + layer + runtime, with a streaming decode->preprocess->infer pipeline over many images."""
from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sized
from itertools import islice
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image

from visiondb.errors import VisionDBError
from visiondb.imaging.decode import decode_array
from visiondb.models.backbones import Backbone, Opener, check_layer, load_backbone
from visiondb.models.runtime import ONNX_CALL_ROWS, InferenceBackend, available_cores, make_backend

K = TypeVar("K")
T = TypeVar("T")
Source = bytes | Callable[[], bytes]
SMALL_INPUT = 2  # rows up to which embed_stream runs inline (serving latency)


def _cause(exc: BaseException) -> str:
    """One-line reason for a failed row."""
    if isinstance(exc, VisionDBError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"


TAPER = 4
"""The last round of batches of a sized input is cut into batches this many times smaller (see tapered_batches)."""
BULK_ROUNDS = 2
"""An input of more than this many rounds of batches (one batch per worker) is bulk work: a transform chunk, not a
serving batch."""


def is_bulk(rows: int, batch_size: int, workers: int) -> bool:
    """Whether `rows` make bulk work (see BULK_ROUNDS): tapered last batches, the embedding cache held until the end."""
    return rows > BULK_ROUNDS * workers * batch_size


def tapered_batches(items: Iterable[T], batch_size: int, workers: int) -> Iterator[list[T]]:
    """`batch_size` batches, except that the last `workers x batch_size` items of a long sized input (over two
    rounds of batches: a transform chunk, not a serving batch) come in batches TAPER times smaller: workers run
    at slightly different speeds, and with full-size final batches one core idled for up to a batch's time
    (~90 ms at 16 photos) at the end of every call."""
    iterator = iter(items)
    size = len(items) if isinstance(items, Sized) and is_bulk(len(items), batch_size, workers) else None
    small = min(batch_size, max(ONNX_CALL_ROWS, batch_size // TAPER))  # no smaller than one runtime call
    done = 0
    while True:
        step = batch_size if size is None or size - done > workers * batch_size else small
        batch = list(islice(iterator, step))
        if not batch:
            return
        done += len(batch)
        yield batch


@dataclass
class Embedder:
    """A warm model producing `dim`-wide vectors; `key` identifies (model, weights, layer, preprocessing, precision)
    for caches."""

    backbone: Backbone
    layer: str
    backend: InferenceBackend
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _slots: threading.BoundedSemaphore = field(init=False, repr=False)
    _pool: ThreadPoolExecutor | None = field(default=None, init=False, repr=False)
    _pool_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _local: threading.local = field(default_factory=threading.local, init=False, repr=False)

    def __post_init__(self) -> None:
        self._slots = threading.BoundedSemaphore(max(1, self.backend.concurrency))

    @property
    def key(self) -> str:
        """Embedding-cache key component: model name, weights hash prefix, layer, preprocessing id, then
        `:<precision>` for a reduced-precision runtime (bf16 on CUDA); fp32 keys carry no suffix."""
        key = f"{self.backbone.name}:{self.backbone.weights_sha256[:16]}:{self.layer}:{self.preprocessing.id}"
        precision = self.backend.precision
        return key if precision == "fp32" else f"{key}:{precision}"

    @property
    def dim(self) -> int:
        """Width of the produced vectors."""
        return self.backend.dim

    @property
    def preprocessing(self):  # noqa: ANN201 - Preprocessing
        """The backbone's input preprocessing."""
        return self.backbone.preprocessing

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Forward a preprocessed batch using the whole machine (serialised: the backend parallelises inside)."""
        with self._lock:
            return self.backend.run(batch)

    def decode(self, data: bytes) -> np.ndarray:
        """Decode bytes exactly as the pipeline does (reduced-size JPEG decode for this preprocessing): HWC uint8."""
        return decode_array(data, min_side=self.preprocessing.resize_to)

    def embed_images(self, images: list[np.ndarray | Image.Image], batch_size: int = 32) -> np.ndarray:
        """Vectors [len(images), dim] for already-decoded images (HWC uint8 arrays or RGB Pillow images)."""
        return self._embed_all(images, self.preprocessing.preprocess_into, batch_size)

    def embed_bytes(self, blobs: list[bytes], batch_size: int = 32) -> np.ndarray:
        """Vectors for encoded images (raises on the first undecodable one)."""
        return self._embed_all(blobs, self.preprocessing.preprocess_bytes_into, batch_size)

    def _embed_all(self, items: list[T], fill: Callable[[T, np.ndarray], None], batch_size: int) -> np.ndarray:
        """Vectors [len(items), dim]: `fill` writes each item's preprocessed slot, batch by batch, on this thread."""
        out = np.empty((len(items), self.dim), dtype=np.float32)
        buffer = np.empty((min(batch_size, max(1, len(items))),) + self.preprocessing.shape, dtype=np.float32)
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            for i, item in enumerate(chunk):
                fill(item, buffer[i])
            out[start:start + len(chunk)] = self.run(buffer[:len(chunk)])
        return out

    def _embed_rows(
        self, rows: Iterable[tuple[K, Source]], buffer: np.ndarray, forward: Callable[[np.ndarray], np.ndarray]
    ) -> tuple[list[K], np.ndarray, list[tuple[K, str]]]:
        """Fill `buffer` with the rows that decode, forward them, and report the others by cause."""
        keys: list[K] = []
        errors: list[tuple[K, str]] = []
        for key, source in rows:
            try:
                self._fill(source, buffer[len(keys)])
                keys.append(key)
            except Exception as exc:  # noqa: BLE001 - a bad row is reported, never fatal
                errors.append((key, _cause(exc)))
        vectors = forward(buffer[: len(keys)]) if keys else np.empty((0, self.dim), dtype=np.float32)
        return keys, vectors, errors

    def _embed_small(self, items: list[tuple[K, Source]] | tuple) -> tuple[list[K], np.ndarray, list[tuple[K, str]]]:
        """The pipeline's result for a handful of rows, computed on the calling thread (using every core)."""
        buffer = np.empty((len(items),) + self.preprocessing.shape, dtype=np.float32)
        return self._embed_rows(items, buffer, self.run)

    def _fill(self, source: Source, out: np.ndarray) -> None:
        """Worker task: fetch (if lazy), decode (the crop's box alone where the format allows) and preprocess one
        row into its buffer slot."""
        data = source() if callable(source) else source
        self.preprocessing.preprocess_bytes_into(data, out)

    @property
    def workers(self) -> int:
        """Threads `embed_stream` runs: one per core (each decodes a batch, then forwards it), at least as many
        as the runtime's concurrent callers."""
        return max(available_cores(), self.backend.concurrency)

    def embed_stream(
        self,
        items: Iterable[tuple[K, Source]],
        batch_size: int = 32,
        workers: int | None = None,
    ) -> Iterator[tuple[list[K], np.ndarray, list[tuple[K, str]]]]:
        """Yield (good keys, vectors [k, dim], [(key, cause)] failures) per batch, in input order.

        `workers` threads (default `self.workers`) each take the next batch, fetch/decode/preprocess its rows
        into the thread's own preallocated buffer, then forward it (at most `backend.concurrency` forwards run
        at once: ONNX on CPU, one single-threaded session call per core; a GPU, one). While one worker
        forwards, the others decode, so decode overlaps inference with no hand-off between threads: measured
        ~0.5 ms CPU per image less than a separate decode pool feeding inference threads on 2 cores. At most
        2 x workers batches are in flight, so memory is bounded whatever the input size. Decode (libjpeg-turbo,
        PyTorch resampling, numpy) and ONNX Runtime release the GIL.
        """
        if isinstance(items, (list, tuple)) and 0 < len(items) <= SMALL_INPUT:
            yield self._embed_small(items)  # one request: starting pipeline threads would cost more than it saves
            return
        count = max(1, workers or self.workers)
        local = self._local

        def embed_batch(batch: list[tuple[K, Source]]) -> tuple[list[K], np.ndarray, list[tuple[K, str]]]:
            buffer = getattr(local, "buffer", None)
            if buffer is None or len(buffer) < len(batch):
                buffer = local.buffer = np.empty((batch_size,) + self.preprocessing.shape, dtype=np.float32)
            return self._embed_rows(batch, buffer, self.run_part)

        batches = tapered_batches(items, batch_size, count)
        pool = self._shared_pool() if workers is None else ThreadPoolExecutor(count, thread_name_prefix="visiondb-embed")
        in_flight: deque[Future[tuple[list[K], np.ndarray, list[tuple[K, str]]]]] = deque()
        try:
            while True:
                while len(in_flight) < 2 * count:
                    batch = next(batches, None)
                    if batch is None:
                        break
                    in_flight.append(pool.submit(embed_batch, batch))
                if not in_flight:
                    return
                yield in_flight.popleft().result()
        finally:
            for future in in_flight:
                future.cancel()
            if workers is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def _shared_pool(self) -> ThreadPoolExecutor:
        """The embedder's own worker threads, kept between calls (a transform calls once per chunk) so their
        batch buffers and the runtime's per-thread state stay warm."""
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="visiondb-embed")
            return self._pool

    def run_part(self, batch: np.ndarray) -> np.ndarray:
        """Forward a batch on this thread; up to `backend.concurrency` callers run at once (the pipeline's workers)."""
        with self._slots:
            return self.backend.run_part(batch)


_EMBEDDERS: dict[tuple[str, str, str, str, str | None, int | None], Embedder] = {}
_EMBEDDERS_LOCK = threading.Lock()


def get_embedder(
    model: str = "efficientnet_lite0",
    layer: str = "pooled",
    backend: str = "auto",
    cache_dir: Path | str | None = None,
    opener: Opener | None = None,
    architecture: str | None = None,
    threads: int | None = None,
) -> Embedder:
    """Process-wide memoised Embedder: one warm model per (model, layer, backend, cache dir, architecture, threads)."""
    check_layer(layer)
    memo_key = (model, layer, backend, str(cache_dir or ""), architecture, threads)
    with _EMBEDDERS_LOCK:
        embedder = _EMBEDDERS.get(memo_key)
        if embedder is None:
            backbone = load_backbone(model, opener=opener, architecture=architecture)
            runtime = make_backend(backbone, layer, kind=backend, cache_dir=cache_dir, threads=threads)
            embedder = Embedder(backbone, layer, runtime)
            _EMBEDDERS[memo_key] = embedder
        return embedder
