"""Run small PyTorch CPU ops on the calling thread only, without touching the process-wide thread setting.

PyTorch's CPU kernels fork an OpenMP team of `torch.get_num_threads()` threads for ops as small as resampling
one photo, and every thread that calls them (each pipeline worker, each request thread) gets a team of its own.
For a 224 crop that doubles the CPU for the same wall time: measured 0.64-0.81 ms CPU with 2 threads against
0.31-0.34 ms with one. `torch.set_num_threads(1)` would change it for the whole process (training too);
OpenMP's own `omp_set_num_threads` changes only the calling thread's setting, so this module calls that, scoped.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
from collections.abc import Iterator
from pathlib import Path

import torch

_OPENMP_NAMES = ("libgomp*.so*", "libomp*.so*", "libiomp5*.so*")


@functools.cache
def _torch_openmp_setter():  # noqa: ANN202 - a ctypes function or None
    """`omp_set_num_threads` of the OpenMP runtime PyTorch ships with (None when PyTorch does not use OpenMP)."""
    if "parallel backend: OpenMP" not in torch.__config__.parallel_info():
        return None
    lib_dir = Path(torch.__file__).parent / "lib"
    for pattern in _OPENMP_NAMES:
        for path in sorted(lib_dir.glob(pattern)):
            try:
                setter = ctypes.CDLL(str(path)).omp_set_num_threads
            except (OSError, AttributeError):
                continue
            setter.argtypes, setter.restype = [ctypes.c_int], None
            return setter
    return None


@contextlib.contextmanager
def torch_on_this_thread() -> Iterator[None]:
    """Within the block, PyTorch CPU ops run on the calling thread alone; the thread's setting is restored after."""
    before = torch.get_num_threads()  # also runs PyTorch's once-per-thread setup, so it cannot undo ours later
    setter = _torch_openmp_setter() if before > 1 else None
    if setter is None:
        yield
        return
    setter(1)
    try:
        yield
    finally:
        setter(before)
