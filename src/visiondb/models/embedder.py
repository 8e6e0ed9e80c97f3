"""Embedder: backbone + layer + runtime, with a streaming decode->preprocess->infer pipeline over many images."""
from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np
from PIL import Image

from visiondb.errors import VisionDBError
from visiondb.imaging.decode import decode_array
from visiondb.models.backbones import Backbone, Opener, check_layer, load_backbone
from visiondb.models.runtime import InferenceBackend, available_cores, make_backend

K = TypeVar("K")
Source = bytes | Callable[[], bytes]
_POLL_S = 0.1
SMALL_INPUT = 2  # rows up to which embed_stream runs inline (serving latency)


def _cause(exc: BaseException) -> str:
    """One-line reason for a failed row."""
    if isinstance(exc, VisionDBError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"


@dataclass
class _Batch(Generic[K]):
    """One batch in flight: its keys, per-row decode futures, and the preallocated buffer they write into."""

    keys: list[K]
    futures: list[Future[None]]
    buffer: np.ndarray


@dataclass
class Embedder:
    """A warm model producing `dim`-wide vectors; `key` identifies (model, weights, layer, preprocessing) for caches."""

    backbone: Backbone
    layer: str
    backend: InferenceBackend
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _slots: threading.BoundedSemaphore = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._slots = threading.BoundedSemaphore(max(1, self.backend.concurrency))

    @property
    def key(self) -> str:
        """Embedding-cache key component: model name, weights hash prefix, layer, preprocessing id."""
        return f"{self.backbone.name}:{self.backbone.weights_sha256[:16]}:{self.layer}:{self.preprocessing.id}"

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
        out = np.empty((len(images), self.dim), dtype=np.float32)
        buffer = np.empty((min(batch_size, max(1, len(images))),) + self.preprocessing.shape, dtype=np.float32)
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            for i, img in enumerate(chunk):
                self.preprocessing.preprocess_into(img, buffer[i])
            out[start:start + len(chunk)] = self.run(buffer[:len(chunk)])
        return out

    def embed_bytes(self, blobs: list[bytes], batch_size: int = 32) -> np.ndarray:
        """Vectors for encoded images (raises on the first undecodable one)."""
        return self.embed_images([self.decode(b) for b in blobs], batch_size=batch_size)

    def _embed_small(self, items: list[tuple[K, Source]] | tuple) -> tuple[list[K], np.ndarray, list[tuple[K, str]]]:
        """The pipeline's result for a handful of rows, computed on the calling thread."""
        buffer = np.empty((len(items),) + self.preprocessing.shape, dtype=np.float32)
        keys: list[K] = []
        errors: list[tuple[K, str]] = []
        for key, source in items:
            try:
                self._fill(source, buffer[len(keys)])
                keys.append(key)
            except Exception as exc:  # noqa: BLE001 - a bad row is reported, never fatal
                errors.append((key, _cause(exc)))
        vectors = self.run(buffer[: len(keys)]) if keys else np.empty((0, self.dim), dtype=np.float32)
        return keys, vectors, errors

    def _fill(self, source: Source, out: np.ndarray) -> None:
        """Worker task: fetch (if lazy), decode and preprocess one row into its buffer slot."""
        data = source() if callable(source) else source
        self.preprocessing.preprocess_into(self.decode(data), out)

    def embed_stream(
        self,
        items: Iterable[tuple[K, Source]],
        batch_size: int = 32,
        decode_threads: int | None = None,
    ) -> Iterator[tuple[list[K], np.ndarray, list[tuple[K, str]]]]:
        """Yield (good keys, vectors [k, dim], [(key, cause)] failures) per batch, in input order.

        Stages: a producer thread cuts `items` into batches; a decode pool (`decode_threads`, default = cores)
        fetches/decodes/preprocesses rows straight into preallocated batch buffers; `backend.concurrency`
        inference workers forward ready batches (ONNX on CPU: one single-threaded caller per core), so decode
        of the next batches overlaps inference. Buffers rotate (workers + 3), so memory is bounded whatever
        the input size. All heavy work (libjpeg-turbo, Pillow resampling, numpy, ONNX Runtime) releases the GIL.
        """
        if isinstance(items, (list, tuple)) and 0 < len(items) <= SMALL_INPUT:
            yield self._embed_small(items)  # one request: starting pipeline threads would cost more than it saves
            return
        threads = decode_threads or available_cores()
        workers = max(1, self.backend.concurrency)
        free: queue.Queue[np.ndarray] = queue.Queue()
        for _ in range(workers + 3):  # in flight (workers + 1), queued (1), being filled (1)
            free.put(np.empty((batch_size,) + self.preprocessing.shape, dtype=np.float32))
        ready: queue.Queue[_Batch[K] | BaseException | None] = queue.Queue(maxsize=1)
        stop = threading.Event()
        pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="visiondb-decode")
        infer_pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="visiondb-infer")

        def put(entry: _Batch[K] | BaseException | None) -> bool:
            while not stop.is_set():
                try:
                    ready.put(entry, timeout=_POLL_S)
                    return True
                except queue.Full:
                    continue
            return False

        def take_buffer() -> np.ndarray | None:
            while not stop.is_set():
                try:
                    return free.get(timeout=_POLL_S)
                except queue.Empty:
                    continue
            return None

        def produce() -> None:
            try:
                iterator = iter(items)
                while not stop.is_set():
                    buffer = take_buffer()
                    if buffer is None:
                        return
                    keys: list[K] = []
                    futures: list[Future[None]] = []
                    for key, source in iterator:
                        futures.append(pool.submit(self._fill, source, buffer[len(keys)]))
                        keys.append(key)
                        if len(keys) == batch_size:
                            break
                    if not keys:
                        free.put(buffer)
                        break
                    if not put(_Batch(keys, futures, buffer)):
                        return
                    if len(keys) < batch_size:
                        break
                put(None)
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
                put(exc)

        def infer(entry: _Batch[K]) -> tuple[list[K], np.ndarray, list[tuple[K, str]]]:
            try:
                good: list[int] = []
                errors: list[tuple[K, str]] = []
                for i, (key, future) in enumerate(zip(entry.keys, entry.futures)):
                    exc = future.exception()
                    if exc is None:
                        good.append(i)
                    else:
                        errors.append((key, _cause(exc)))
                if not good:
                    vectors = np.empty((0, self.dim), dtype=np.float32)
                elif len(good) == len(entry.keys):
                    vectors = self.run_part(entry.buffer[:len(good)])
                else:
                    vectors = self.run_part(entry.buffer[good])
                return [entry.keys[i] for i in good], vectors, errors
            finally:
                free.put(entry.buffer)

        producer = threading.Thread(target=produce, name="visiondb-embed-producer", daemon=True)
        producer.start()
        in_flight: deque[Future[tuple[list[K], np.ndarray, list[tuple[K, str]]]]] = deque()
        try:
            exhausted = False
            while True:
                while not exhausted and len(in_flight) < workers + 1:
                    entry = ready.get()
                    if entry is None:
                        exhausted = True
                    elif isinstance(entry, BaseException):
                        raise entry
                    else:
                        in_flight.append(infer_pool.submit(infer, entry))
                if not in_flight:
                    return
                yield in_flight.popleft().result()
        finally:
            stop.set()
            for future in in_flight:
                future.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
            infer_pool.shutdown(wait=True, cancel_futures=True)
            producer.join()

    def run_part(self, batch: np.ndarray) -> np.ndarray:
        """Forward a batch on this thread; up to `backend.concurrency` callers run at once (the pipeline's workers)."""
        with self._slots:
            return self.backend.run_part(batch)


_EMBEDDERS: dict[tuple[str, str, str, str, str | None], Embedder] = {}
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
    """Process-wide memoised Embedder: one warm model per (model, layer, backend, cache dir, architecture)."""
    check_layer(layer)
    memo_key = (model, layer, backend, str(cache_dir or ""), architecture)
    with _EMBEDDERS_LOCK:
        embedder = _EMBEDDERS.get(memo_key)
        if embedder is None:
            backbone = load_backbone(model, opener=opener, architecture=architecture)
            runtime = make_backend(backbone, layer, kind=backend, cache_dir=cache_dir, threads=threads)
            embedder = Embedder(backbone, layer, runtime)
            _EMBEDDERS[memo_key] = embedder
        return embedder
