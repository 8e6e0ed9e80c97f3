"""Torch models and the decode cache under concurrent serving threads; CUDA-trained models served on CPU hosts."""
from __future__ import annotations

import copy
import pickle
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterator

import numpy as np
import pytest
import torch
from sklearn.base import clone

from visiondb.errors import TrainingError
from visiondb.learn.algorithms import images, make_estimator
from visiondb.learn.algorithms.finetune import FinetuneClassifier
from visiondb.learn.algorithms.torch_base import inference_device, module_device
from visiondb.learn.persistence import dump_model, load_model
from visiondb.learn.reference_runs import encode_png


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Switch threads often so races show up in a short test."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)


@pytest.fixture
def empty_cache() -> Iterator[None]:
    """Start and end with an empty decode cache."""
    images.clear_cache()
    yield
    images.clear_cache()


def _blobs(n: int = 60, dim: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Two well-separated Gaussian classes as float32 features."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.array(["a", "b"], dtype=object), n // 2)
    X = rng.normal(size=(n, dim)).astype(np.float32) + np.where(y == "a", -2.0, 2.0)[:, None].astype(np.float32)
    return X, y


def _pngs(n: int = 24, side: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Random greyscale PNGs whose brightness encodes the class."""
    rng = np.random.default_rng(1)
    y = np.repeat(np.array(["dark", "light"], dtype=object), n // 2)
    base = np.where(y == "dark", 40, 200)[:, None, None]
    pixels = np.clip(base + rng.integers(-30, 30, size=(n, side, side)), 0, 255).astype(np.uint8)
    return encode_png(pixels), y


def _run_threads(jobs: list[Callable[[], Any]], workers: int = 8) -> list[Any]:
    """Run every job on a pool, all released at once; re-raises the first failure."""
    barrier = threading.Barrier(workers)

    def gated(job: Callable[[], Any]) -> Any:
        try:
            barrier.wait(timeout=10)
        except threading.BrokenBarrierError:
            pass
        return job()

    with ThreadPoolExecutor(workers) as pool:
        return [f.result() for f in [pool.submit(gated, job) for job in jobs]]


@pytest.mark.parametrize("algorithm, params, data", [
    ("mlp", {"epochs": 2, "hiddenSizes": [16], "batchSize": 16}, _blobs),
    ("cnn", {"epochs": 1, "channels": [4], "dense": 8, "imageSize": [12, 12], "batchSize": 8}, _pngs),
])
def test_concurrent_predictions_match_serial(algorithm, params, data, fast_switching, empty_cache) -> None:
    X, y = data()
    model = make_estimator(algorithm, params, seed=0, class_weight=None)
    model.progress_bar = False
    model.fit(X, y)
    slices = [slice(i % 5, len(X) - i % 3) for i in range(24)]
    serial = [model.predict_proba(X[s]) for s in slices]
    images.clear_cache()  # image threads also race on the decode cache
    threaded = _run_threads([lambda s=s: model.predict_proba(X[s]) for s in slices])
    for want, got in zip(serial, threaded):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert module_device(model.module_) == inference_device(model.config.device)


def test_model_copies_after_prediction_and_release() -> None:
    X, y = _blobs()
    model = make_estimator("mlp", {"epochs": 1, "hiddenSizes": [8]}, seed=0, class_weight=None)
    model.progress_bar = False
    model.fit(X, y)
    want = model.predict_proba(X)  # creates the prediction lock, which must not block copying
    for twin in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        np.testing.assert_allclose(twin.predict_proba(X), want, rtol=0, atol=1e-12)
    assert clone(model).get_params() == model.get_params()
    model.release_device()
    assert module_device(model.module_).type == "cpu"
    np.testing.assert_allclose(model.predict_proba(X), want, rtol=0, atol=1e-12)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a host without CUDA")
def test_cuda_trained_model_predicts_on_cpu_host() -> None:
    X, y = _blobs()
    model = make_estimator("mlp", {"epochs": 1, "hiddenSizes": [8], "device": "cpu"}, seed=0, class_weight=None)
    model.progress_bar = False
    model.fit(X, y)
    want = model.predict_proba(X)
    model.params = {**model.params, "device": "cuda"}  # as if trained on a GPU box
    loaded = load_model(*dump_model(model))
    assert loaded.config.device == "cuda"
    np.testing.assert_allclose(loaded.predict_proba(X), want, rtol=0, atol=1e-12)
    with pytest.raises(TrainingError, match="CUDA is not available"):
        loaded.fit(X, y)  # training still insists on the device asked for


def test_inference_device_falls_back_only_for_cuda() -> None:
    assert inference_device("cpu").type == "cpu"
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert inference_device("cuda").type == want and inference_device("auto").type == want


def test_concurrent_decoding_keeps_cache_consistent(monkeypatch, fast_switching, empty_cache) -> None:
    data, _ = _pngs(n=16, side=10)
    options: dict[str, Any] = {"grayscale": True, "size": (8, 8)}
    one = images.decode_images(data[:1], **options)[0].nbytes
    images.clear_cache()
    monkeypatch.setattr(images, "_CACHE_LIMIT_BYTES", 3 * one)  # room for three images: constant eviction
    want = images.decode_images(data, **options)
    windows = [np.roll(data, -k)[: 4 + k % 9] for k in range(48)]
    got = _run_threads([lambda w=w: images.decode_images(w, **options) for w in windows])
    for k, out in enumerate(got):
        np.testing.assert_array_equal(out, np.roll(want, -k, axis=0)[: 4 + k % 9])
    assert images._cache_bytes == sum(a.nbytes for a in images._CACHE.values()) <= 3 * one
    assert len(images._CACHE) <= 3


def test_loading_a_finetune_model_leaves_the_global_rng_alone() -> None:
    arch = {"model": "efficientnet_lite0", "freeze": "all", "dropout": 0.2, "classes": 2}
    draws = []
    for seed in (0, 7):
        torch.manual_seed(123)
        FinetuneClassifier({}, seed=seed)._build(arch, pretrained=False)
        draws.append(torch.rand(4))
    assert torch.equal(draws[0], draws[1])  # the build consumed draws but did not reseed with the model's seed
