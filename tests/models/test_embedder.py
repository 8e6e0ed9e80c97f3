"""Runtimes (PyTorch vs ONNX Runtime), reduced-size decode fidelity, and the streaming embed pipeline."""
from __future__ import annotations

import io
import os
import stat
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visiondb.errors import ConfigError, FetchError
from visiondb.imaging.decode import decode_rgb
from visiondb.models.backbones import load_backbone
from visiondb.models.embedder import Embedder, get_embedder
from visiondb.models.runtime import STALE_EXPORT_S, OnnxBackend, TorchBackend, make_backend, onnx_path


@pytest.fixture(scope="module")
def lite0():
    return load_backbone("efficientnet_lite0")


@pytest.fixture(scope="module")
def photo_batch(lite0, clothing_photos: list[bytes]) -> np.ndarray:
    pre = lite0.preprocessing
    return np.stack([pre.to_array(decode_rgb(b, min_side=pre.resize_to)) for b in clothing_photos])


def test_onnx_matches_torch_and_is_cached(lite0, photo_batch: np.ndarray, onnx_cache: Path) -> None:
    for layer, dim in (("pooled", 1280), ("logits", 1000)):
        onnx = OnnxBackend(lite0, layer, cache_dir=onnx_cache, threads=2)
        assert onnx.path == onnx_path(lite0, layer, onnx_cache) and onnx.path.exists()
        assert lite0.weights_sha256[:16] in onnx.path.name and layer in onnx.path.name and "opset17" in onnx.path.name
        torch_out = TorchBackend(lite0, layer, device="cpu", threads=2).run(photo_batch)
        onnx_out = onnx.run(photo_batch)
        assert onnx_out.shape == (len(photo_batch), dim) and onnx_out.dtype == np.float32
        np.testing.assert_allclose(onnx_out, torch_out, atol=1e-4, rtol=0)  # the absolute bound export checks
        mtime = onnx.path.stat().st_mtime_ns
        again = OnnxBackend(lite0, layer, cache_dir=onnx_cache, threads=2)
        assert not again.exported and again.path.stat().st_mtime_ns == mtime


def test_onnx_call_rows_keep_vectors(lite0, photo_batch: np.ndarray, onnx_cache: Path) -> None:
    """The default 2-row session calls (faster on CPU) and the 2-core split give the whole-batch call's vectors."""
    whole = OnnxBackend(lite0, "pooled", cache_dir=onnx_cache, call_rows=len(photo_batch))
    paired = OnnxBackend(lite0, "pooled", cache_dir=onnx_cache)
    assert paired.call_rows == 2
    expected = whole.run_part(photo_batch)
    for batch in (photo_batch, photo_batch[:5], photo_batch[:1]):
        for got in (paired.run_part(batch), paired.run(batch)):
            assert got.shape == (len(batch), 1280)
            np.testing.assert_allclose(got, expected[: len(batch)], atol=1e-5, rtol=1e-5)


def test_make_backend_choices(lite0, onnx_cache: Path) -> None:
    assert make_backend(lite0, "pooled", "auto", cache_dir=onnx_cache).name == "onnx-cpu"  # no CUDA here
    assert make_backend(lite0, "pooled", "torch").name.startswith("torch-")
    with pytest.raises(ConfigError, match="unknown backend 'tpu'"):
        make_backend(lite0, "pooled", "tpu")


def test_reduced_decode_keeps_top1(lite0, large_photos: list[bytes], onnx_cache: Path) -> None:
    from visiondb.imaging.decode import dct_scale_factor, probe_image

    scaled = [b for b in large_photos if dct_scale_factor(*probe_image(b)[1:], lite0.preprocessing.resize_to) > 1]
    assert len(scaled) >= 6  # the pipeline really decodes these at 1/2 or 1/4 scale
    embedder = Embedder(lite0, "logits", make_backend(lite0, "logits", "onnx", cache_dir=onnx_cache))
    full = embedder.embed_images([decode_rgb(b) for b in scaled])
    reduced = embedder.embed_bytes(scaled)
    # measured (1/2 and 1/4 DCT scales): 7/8 identical top-1; the 8th a near-tie (p=0.25 vs 0.17) whose top-1
    # stays in the other's top-3; logits cosine >= 0.986 for all
    agree = full.argmax(1) == reduced.argmax(1)
    assert agree.sum() >= len(scaled) - 1
    for i in np.flatnonzero(~agree):
        assert full[i].argmax() in np.argsort(reduced[i])[-3:]
    cosine = (full * reduced).sum(1) / np.linalg.norm(full, axis=1) / np.linalg.norm(reduced, axis=1)
    assert cosine.min() > 0.98


def test_embed_stream_errors_in_order(lite0, clothing_photos: list[bytes], onnx_cache: Path) -> None:
    embedder = Embedder(lite0, "pooled", make_backend(lite0, "pooled", "onnx", cache_dir=onnx_cache))
    expected = embedder.embed_bytes(clothing_photos)

    def failing_fetch() -> bytes:
        raise FetchError("HTTP 404 fetching http://127.0.0.1:9/x.jpg", uri="http://127.0.0.1:9/x.jpg", status=404)

    items: list[tuple[str, object]] = []
    for i, data in enumerate(clothing_photos):
        items.append((f"ok{i}", data if i % 2 else (lambda d=data: d)))
        if i == 2:
            items.append(("cut", data[: len(data) // 2]))
        if i == 5:
            items.append(("html", b"<html>nope</html>"))
            items.append(("gone", failing_fetch))
    batches = list(embedder.embed_stream(items, batch_size=3, workers=2))
    keys = [k for good, _, _ in batches for k in good]
    vectors = np.concatenate([v for _, v, _ in batches])
    errors = dict(e for _, _, errs in batches for e in errs)
    assert keys == [f"ok{i}" for i in range(len(clothing_photos))]
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    assert set(errors) == {"cut", "html", "gone"}
    assert "truncated image data" in errors["cut"] or "corrupt image" in errors["cut"]
    assert "not an image" in errors["html"] and "HTTP 404" in errors["gone"]
    assert all(len(good) == len(v) for good, v, _ in batches)


def test_embed_stream_stops_early_and_handles_empty(lite0, onnx_cache: Path) -> None:
    embedder = Embedder(lite0, "pooled", make_backend(lite0, "pooled", "onnx", cache_dir=onnx_cache))
    assert list(embedder.embed_stream([], batch_size=4)) == []
    buf = io.BytesIO()
    Image.new("RGB", (300, 260), (200, 30, 30)).save(buf, "JPEG")
    endless = ((i, buf.getvalue()) for i in range(10**9))
    stream = embedder.embed_stream(endless, batch_size=4, workers=1)
    first = next(stream)
    assert first[0] == [0, 1, 2, 3] and first[1].shape == (4, 1280)
    stream.close()  # must not hang or keep decoding the endless input


def test_get_embedder_memoised(onnx_cache: Path) -> None:
    a = get_embedder("efficientnet_lite0", "pooled", "onnx", cache_dir=onnx_cache)
    b = get_embedder("efficientnet_lite0", "pooled", "onnx", cache_dir=onnx_cache)
    assert a is b and a.dim == 1280
    sha = a.backbone.weights_sha256[:16]
    assert a.key == f"efficientnet_lite0:{sha}:pooled:{a.preprocessing.id}"
    with pytest.raises(ConfigError, match="unknown layer"):
        get_embedder("efficientnet_lite0", "conv5")


def test_get_embedder_memo_keeps_thread_layouts_apart(onnx_cache: Path) -> None:
    one = get_embedder("efficientnet_lite0", "pooled", "onnx", cache_dir=onnx_cache, threads=1)
    two = get_embedder("efficientnet_lite0", "pooled", "onnx", cache_dir=onnx_cache, threads=2)
    assert one is not two and one.backend.intra_op_threads == 1 and two.backend.intra_op_threads == 2
    assert get_embedder("efficientnet_lite0", "pooled", "onnx", cache_dir=onnx_cache, threads=2) is two


def test_corrupt_cached_onnx_is_reexported(lite0, photo_batch: np.ndarray, tmp_path: Path) -> None:
    path = onnx_path(lite0, "pooled", tmp_path)
    path.write_bytes(b"half-written export")
    with pytest.warns(RuntimeWarning, match="re-exporting unreadable cached ONNX file"):
        backend = OnnxBackend(lite0, "pooled", cache_dir=tmp_path)
    assert backend.exported and path.stat().st_size > 1_000_000
    assert backend.run(photo_batch[:2]).shape == (2, 1280)


def test_export_publishes_readable_file_and_drops_stale_temps(lite0, tmp_path: Path) -> None:
    stem = onnx_path(lite0, "logits", tmp_path).stem
    stale, fresh, other = tmp_path / f"{stem}.old1.tmp", tmp_path / f"{stem}.live2.tmp", tmp_path / "notes.tmp"
    for leftover in (stale, fresh, other):
        leftover.write_bytes(b"partial")
    hours_ago = time.time() - STALE_EXPORT_S - 60
    os.utime(stale, (hours_ago, hours_ago))
    os.utime(other, (hours_ago, hours_ago))
    backend = OnnxBackend(lite0, "logits", cache_dir=tmp_path)
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(backend.path.stat().st_mode) == 0o644 & ~umask
    assert not stale.exists() and fresh.exists() and other.exists()  # a running export's temp and foreign files stay
    assert sorted(p.name for p in tmp_path.glob("*.onnx")) == [backend.path.name]
