"""Inference runtimes behind one interface: PyTorch (CUDA bf16 or CPU) and ONNX Runtime (CPU, cached export)."""
from __future__ import annotations

import contextlib
import io
import os
import tempfile
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from visiondb.errors import ConfigError, VisionDBError
from visiondb.models.backbones import Backbone, check_layer

if TYPE_CHECKING:
    import onnxruntime as ort

ONNX_OPSET = 17
ONNX_CALL_ROWS = 2
"""Rows per ONNX Runtime call on CPU. A small batch keeps its activations in the core's cache: measured on 2
AMD EPYC cores, 8.9 ms CPU per image at 2 rows against 9.4 at 4 and 10.0 at 16 for efficientnet_lite0
(lite1 -6 %, lite2 -9 %, mobilenet_v2 -6 % at 2 rows against 16); one row per call costs a little more."""
VERIFY_ATOL = 1e-4
"""Largest absolute difference allowed between ONNX Runtime and PyTorch outputs at export (no relative term).
Measured on real photos: at most 1.8e-5 (mobilenet_v2 logits), 1.2e-5 for efficientnet_lite0 logits."""
PUBLISHED_MODE = 0o644
STALE_EXPORT_S = 3600
"""Temp files of an export older than this are leftovers of a killed process and are removed by the next export."""
BACKEND_KINDS = ("auto", "torch", "onnx")


def available_cores() -> int:
    """CPU cores this process may run on (affinity-aware)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def default_cache_dir() -> Path:
    """Where exported ONNX files live: $VISIONDB_CACHE_DIR/onnx, else ~/.cache/visiondb/onnx."""
    root = os.environ.get("VISIONDB_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "visiondb") / "onnx"


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The dtype TorchBackend's forward autocasts to on `device`: bfloat16 on CUDA, None (plain float32) elsewhere."""
    return torch.bfloat16 if device.type == "cuda" else None


_PRECISIONS = {None: "fp32", torch.bfloat16: "bf16"}


def torch_precision(device: torch.device) -> str:
    """Numeric precision of TorchBackend's vectors on `device`: 'bf16' on CUDA (autocast), else 'fp32'."""
    return _PRECISIONS[autocast_dtype(device)]


class InferenceBackend(ABC):
    """Runs one backbone layer: float32 NCHW batch in, float32 [n, dim] out.

    `concurrency` is how many threads may call `run_part` at once to use the machine fully (1: serialise calls).
    """

    name: str
    dim: int
    concurrency: int = 1

    @property
    @abstractmethod
    def precision(self) -> str:
        """Numeric precision of the forward ('fp32', 'bf16'): vectors of different precisions differ (~1e-2)."""

    def run_part(self, batch: np.ndarray) -> np.ndarray:
        """Forward a batch on the calling thread only (the pipeline's inference workers call this)."""
        return self.run(batch)

    @abstractmethod
    def run(self, batch: np.ndarray) -> np.ndarray:
        """Forward a preprocessed float32 NCHW batch; return float32 [n, dim]."""


class TorchBackend(InferenceBackend):
    """PyTorch eager: CUDA with bf16 autocast, pinned memory and non-blocking copies when available, else CPU."""

    def __init__(self, backbone: Backbone, layer: str, device: str | None = None, threads: int | None = None) -> None:
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dim = backbone.layer_dim(layer)
        self.name = f"torch-{self.device.type}"
        if self.device.type == "cpu":
            torch.set_num_threads(threads or available_cores())
        self.module = backbone.layer_module(layer).to(self.device, memory_format=torch.channels_last).eval()

    @property
    def precision(self) -> str:
        """'bf16' on CUDA, 'fp32' on CPU: from `autocast_dtype`, as the forward is."""
        return torch_precision(self.device)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Forward under inference_mode, autocast to `autocast_dtype(device)` where it has one (bf16 on CUDA)."""
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        dtype = autocast_dtype(self.device)
        with torch.inference_mode():
            if self.device.type == "cuda":
                x = x.pin_memory().to(self.device, non_blocking=True)
            with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
                out = self.module(x.contiguous(memory_format=torch.channels_last))
            return out.float().cpu().numpy()


def onnx_path(backbone: Backbone, layer: str, cache_dir: Path) -> Path:
    """Cache file for (weights, layer, opset): reused across processes when present."""
    return cache_dir / f"{backbone.name}-{backbone.weights_sha256[:16]}-{layer}-opset{ONNX_OPSET}.onnx"


def _umask() -> int:
    """This process's umask (read from /proc where possible: setting it to probe is not thread-safe)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def remove_stale_exports(cache_dir: Path, max_age_s: float = STALE_EXPORT_S) -> list[Path]:
    """Delete export temp files (`<cache name>.<random>.tmp`) older than `max_age_s`; return what was removed."""
    removed = []
    cutoff = time.time() - max_age_s
    for tmp in cache_dir.glob("*-opset*.*.tmp"):
        try:
            if tmp.stat().st_mtime < cutoff:
                tmp.unlink()
                removed.append(tmp)
        except OSError:
            continue  # another process removed or published it meanwhile
    return removed


def export_onnx(backbone: Backbone, layer: str, path: Path) -> None:
    """Export the layer module with a dynamic batch axis, check that ONNX Runtime's output is within VERIFY_ATOL
    (absolute) of PyTorch's on a fixed random batch, then atomically publish it with mode 0o644 less the umask."""
    import onnxruntime as ort

    size = backbone.preprocessing.size
    module = backbone.layer_module(layer).float().cpu().eval()
    sample = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_exports(path.parent)
    fd, tmp_name = tempfile.mkstemp(prefix=path.stem + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                module, (sample,), str(tmp), dynamo=False, opset_version=ONNX_OPSET,
                input_names=["input"], output_names=[layer],
                dynamic_axes={"input": {0: "batch"}, layer: {0: "batch"}},
            )
            expected = module(sample).numpy()
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        got = session.run(None, {"input": sample.numpy()})[0]
        diff = float(np.max(np.abs(got - expected)))
        if not diff <= VERIFY_ATOL:  # NaN fails too
            raise VisionDBError(
                f"ONNX export of {backbone.name}:{layer} disagrees with PyTorch "
                f"(max abs diff {diff:.2e} > {VERIFY_ATOL:g})",
                model=backbone.name, layer=layer,
            )
        os.chmod(tmp, PUBLISHED_MODE & ~_umask())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class OnnxBackend(InferenceBackend):
    """ONNX Runtime on CPU; exports the layer once into `cache_dir` and reuses the file.

    A cached file that ONNX Runtime cannot load (truncated, corrupt) is deleted and exported again, once.

    Default (threads=None): single-threaded session run by `concurrency` = cores callers at once. On CPU that
    is the most efficient layout (no intra-op sync or spin-waiting: measured 11 vs 13-16 ms CPU per image
    for one 2-thread session), and it leaves decode threads room without oversubscribing. `run` splits a
    batch across the callers itself, so single callers still use every core. threads=N: N intra-op threads
    per session, cores // N callers. Every caller feeds the session `call_rows` rows at a time (see ONNX_CALL_ROWS).
    """

    def __init__(
        self, backbone: Backbone, layer: str, cache_dir: Path | str | None = None, threads: int | None = None,
        call_rows: int = ONNX_CALL_ROWS,
    ) -> None:
        check_layer(layer)
        self.dim = backbone.layer_dim(layer)
        self.name = "onnx-cpu"
        self.path = onnx_path(backbone, layer, Path(cache_dir) if cache_dir else default_cache_dir())
        self.exported = not self.path.exists()
        if self.exported:
            export_onnx(backbone, layer, self.path)
        cores = available_cores()
        self.intra_op_threads = max(1, threads or 1)
        self.call_rows = max(1, call_rows)
        self.concurrency = max(1, cores // self.intra_op_threads)
        self.session = self._open_session(backbone, layer)
        self._input = self.session.get_inputs()[0].name
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    @property
    def precision(self) -> str:
        """Always 'fp32': the exported graph runs in float32 on CPU."""
        return "fp32"

    def _session_options(self) -> ort.SessionOptions:
        """Session settings: `intra_op_threads` threads, sequential, no spinning, memory arena on."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # spin-waiting intra-op threads burn the CPU that decode threads need on small machines
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # the arena keeps the largest call's activations for reuse: small with `call_rows`-row calls
        options.enable_cpu_mem_arena = True
        return options

    def _open_session(self, backbone: Backbone, layer: str) -> ort.InferenceSession:
        """A session on the cached file; one that fails to load and was not just exported is re-exported once."""
        import onnxruntime as ort

        def load() -> ort.InferenceSession:
            return ort.InferenceSession(str(self.path), self._session_options(), providers=["CPUExecutionProvider"])

        try:
            return load()
        except Exception as exc:  # noqa: BLE001 - onnxruntime's errors (InvalidProtobuf, Fail...) derive from Exception
            if self.exported:
                raise VisionDBError(f"cannot load the exported ONNX file {self.path}: {exc}",
                                    model=backbone.name, layer=layer) from exc
            warnings.warn(f"re-exporting unreadable cached ONNX file {self.path}: {str(exc)[:200]}", RuntimeWarning,
                          stacklevel=3)
        self.path.unlink(missing_ok=True)
        export_onnx(backbone, layer, self.path)
        self.exported = True
        return load()

    def run_part(self, batch: np.ndarray) -> np.ndarray:
        """Forward one batch on the calling thread, `call_rows` rows per session call (sessions accept
        concurrent `run` calls)."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        step = self.call_rows
        if len(batch) <= step:
            return self.session.run(None, {self._input: batch})[0]
        out = np.empty((len(batch), self.dim), dtype=np.float32)
        for start in range(0, len(batch), step):
            out[start:start + step] = self.session.run(None, {self._input: batch[start:start + step]})[0]
        return out

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Forward one batch split into up to `concurrency` parts run in parallel (two rows use two cores)."""
        parts = min(self.concurrency, len(batch))
        if parts <= 1:
            return self.run_part(batch)
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="visiondb-onnx")
        bounds = np.linspace(0, len(batch), parts + 1).astype(int)
        futures = [self._pool.submit(self.run_part, batch[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
        return np.concatenate([f.result() for f in futures])


def make_backend(
    backbone: Backbone, layer: str, kind: str = "auto", cache_dir: Path | str | None = None, threads: int | None = None
) -> InferenceBackend:
    """Pick a runtime: 'auto' = torch on CUDA, ONNX Runtime on CPU; 'torch' or 'onnx' to force one."""
    check_layer(layer)
    if kind not in BACKEND_KINDS:
        raise ConfigError(f"unknown backend {kind!r}; expected one of {', '.join(BACKEND_KINDS)}", field="backend")
    if kind == "auto":
        kind = "torch" if torch.cuda.is_available() else "onnx"
    if kind == "torch":
        return TorchBackend(backbone, layer, threads=threads)
    return OnnxBackend(backbone, layer, cache_dir=cache_dir, threads=threads)
