"""The embedding-cache key tells bf16 (PyTorch on CUDA) vectors from fp32 ones (CPU), and keeps fp32 keys unchanged."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from visiondb.models.backbones import load_backbone
from visiondb.models.embedder import Embedder, get_embedder
from visiondb.models.runtime import TorchBackend, autocast_dtype, torch_precision


@pytest.fixture(scope="module")
def lite0():
    return load_backbone("efficientnet_lite0")


@pytest.fixture(scope="module")
def torch_cpu(lite0) -> TorchBackend:
    return TorchBackend(lite0, "pooled", device="cpu")


def fp32_key(embedder: Embedder) -> str:
    """The key format every existing cache entry was written under."""
    return f"efficientnet_lite0:{embedder.backbone.weights_sha256[:16]}:pooled:{embedder.preprocessing.id}"


def test_cpu_backends_are_fp32_and_keep_their_keys(lite0, torch_cpu: TorchBackend, cache_dir: Path) -> None:
    onnx = get_embedder("efficientnet_lite0", "pooled", "onnx", cache_dir=cache_dir / "onnx")
    on_cpu = Embedder(lite0, "pooled", torch_cpu)
    assert onnx.backend.precision == "fp32" and torch_cpu.precision == "fp32"
    assert onnx.key == on_cpu.key == fp32_key(onnx)


def test_precision_follows_the_autocast_rule() -> None:
    assert autocast_dtype(torch.device("cuda")) is torch.bfloat16 and torch_precision(torch.device("cuda")) == "bf16"
    assert autocast_dtype(torch.device("cuda", 1)) is torch.bfloat16
    assert autocast_dtype(torch.device("cpu")) is None and torch_precision(torch.device("cpu")) == "fp32"


def test_cuda_torch_key_differs(lite0, torch_cpu: TorchBackend) -> None:
    """A backend whose device is CUDA reports bf16 and gets its own key. No GPU here: a copy of the real CPU
    backend with the device a CUDA construction sets (its module never runs; precision derives from the device)."""
    on_cuda = copy.copy(torch_cpu)
    on_cuda.device = torch.device("cuda")
    assert on_cuda.precision == "bf16"
    embedder = Embedder(lite0, "pooled", on_cuda)
    assert embedder.key == fp32_key(embedder) + ":bf16"
    assert embedder.key != Embedder(lite0, "pooled", torch_cpu).key


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_real_cuda_backend_is_bf16(lite0) -> None:
    embedder = Embedder(lite0, "pooled", TorchBackend(lite0, "pooled", device="cuda"))
    assert embedder.backend.precision == "bf16" and embedder.key == fp32_key(embedder) + ":bf16"
