"""Allocator tuning re-exec, and the benchmark baseline helpers (smoke-sized)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from visiondb.models import allocator
from visiondb.models.baselines import bare_forward_images_per_s, naive_loop_images_per_s
from visiondb.models.embedder import get_embedder

SCRIPT = """
import json, sys
from visiondb.models.allocator import ensure_tuned_malloc, malloc_settings
print("start", flush=True)
ensure_tuned_malloc(sys.argv)
print(json.dumps(malloc_settings()))
"""


STRIPPING_SCRIPT = """
import os, sys
os.environ.pop("GLIBC_TUNABLES", None)  # an environment that drops the setting across exec (e.g. a secure-exec wrapper)
from visiondb.models.allocator import ensure_tuned_malloc
print("start", flush=True)
ensure_tuned_malloc(sys.argv)
print("done")
"""


def _run(env_extra: dict[str, str], script: str = SCRIPT) -> list[str]:
    drop = ("GLIBC_TUNABLES", allocator.OPT_OUT_ENV, allocator.REEXEC_ENV)
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.strip().splitlines()


def test_reexec_sets_tunables() -> None:
    lines = _run({})
    assert lines.count("start") == 2  # ran once untuned, then re-executed with the setting
    settings = json.loads(lines[-1])
    assert settings["tuned"] and settings["mmap_threshold"] == str(allocator.MMAP_THRESHOLD)


def test_reexec_happens_once_when_the_setting_is_stripped() -> None:
    assert _run({}, STRIPPING_SCRIPT) == ["start", "start", "done"]


def test_no_reexec_when_opted_out_or_already_set() -> None:
    assert _run({allocator.OPT_OUT_ENV: "1"}).count("start") == 1
    lines = _run({"GLIBC_TUNABLES": allocator.tuned_env_value("glibc.malloc.arena_max=2")})
    assert lines.count("start") == 1 and "arena_max=2" in json.loads(lines[-1])["GLIBC_TUNABLES"]


def test_baselines_smoke(clothing_photos: list[bytes], tmp_path: Path, onnx_cache: Path) -> None:
    paths = []
    for i, data in enumerate(clothing_photos[:4]):
        paths.append(tmp_path / f"{i}.jpg")
        paths[-1].write_bytes(data)
    naive = naive_loop_images_per_s(paths, batch_size=4)
    bare = bare_forward_images_per_s(get_embedder("efficientnet_lite0", "pooled", "onnx", cache_dir=onnx_cache), n=8, batch_size=4)
    assert naive > 0 and bare > 0
