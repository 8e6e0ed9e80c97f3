"""load_backbone: packaged weights, weights sources (path, zip member, local HTTP), and sane predictions."""
from __future__ import annotations

import functools
import http.server
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_sample_image
from PIL import Image

from visiondb.errors import ConfigError, FetchError, NotFoundError
from visiondb.imaging.decode import decode_rgb
from visiondb.models.backbones import BACKBONES, Backbone, load_backbone

SIZES = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260, "mobilenet_v2": 224}


@functools.lru_cache(maxsize=None)
def _backbone(name: str) -> Backbone:
    return load_backbone(name)


def _logits(backbone: Backbone, images: list[Image.Image]) -> torch.Tensor:
    batch = np.stack([backbone.preprocessing.to_array(img) for img in images])
    with torch.inference_mode():
        return backbone.logits(torch.from_numpy(batch))


@pytest.mark.parametrize("name", sorted(SIZES))
def test_packaged_backbones_load(name: str) -> None:
    backbone = _backbone(name)
    size = backbone.preprocessing.size
    assert size == SIZES[name] and backbone.dim == 1280 and backbone.num_classes == 1000
    assert len(backbone.weights_sha256) == 64 and not backbone.module.training
    x = torch.zeros(2, 3, size, size)
    with torch.inference_mode():
        assert backbone.features(x).shape == (2, 1280)
        assert backbone.logits(x).shape == (2, 1000)
        assert backbone.layer_module("pooled")(x).shape == (2, 1280)
        assert torch.allclose(backbone.layer_module("logits")(x), backbone.logits(x))


def test_registry_has_no_surprises() -> None:
    assert set(BACKBONES) == set(SIZES)
    with pytest.raises(NotFoundError, match="unknown model 'resnet9000'"):
        load_backbone("resnet9000")
    with pytest.raises(ConfigError, match="unknown layer"):
        _backbone("efficientnet_lite0").layer_module("fc7")


def test_china_photo_confident() -> None:
    china = Image.fromarray(load_sample_image("china.jpg"))
    for name in ("efficientnet_lite0", "mobilenet_v2"):
        probs = torch.softmax(_logits(_backbone(name), [china]), dim=1)
        assert probs.max().item() > 0.3, name


def test_lite0_and_lite1_agree_on_clothing(clothing_photos: list[bytes]) -> None:
    # clothing is ambiguous for ImageNet (sarong vs vestment...), so: each model's top-1 is in the other's top-5
    images = [decode_rgb(b) for b in clothing_photos[:3]]
    logits0 = _logits(_backbone("efficientnet_lite0"), images)
    logits1 = _logits(_backbone("efficientnet_lite1"), images)
    top5_0, top5_1 = logits0.topk(5).indices.tolist(), logits1.topk(5).indices.tolist()
    for i in range(len(images)):
        assert top5_1[i][0] in top5_0[i] and top5_0[i][0] in top5_1[i], (top5_0[i], top5_1[i])
    assert sum(a[0] == b[0] for a, b in zip(top5_0, top5_1)) >= 2


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = BACKBONES["efficientnet_lite0"].default_weights()
    root = tmp_path_factory.mktemp("weights")
    (root / "lite0.pth").write_bytes(src.read_bytes())
    with zipfile.ZipFile(root / "bundle.zip", "w") as zf:
        zf.write(src, "models/lite0.pth")
    return root


@pytest.fixture(scope="module")
def http_base(weights_dir: Path) -> Iterator[str]:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(weights_dir))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_weights_sources(weights_dir: Path, http_base: str) -> None:
    reference = _backbone("efficientnet_lite0")
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = reference.features(x)
    sources = [
        str(weights_dir / "lite0.pth"),
        (weights_dir / "lite0.pth").as_uri(),
        f"archive+{weights_dir / 'bundle.zip'}#models/lite0.pth",
        f"{http_base}/lite0.pth",
        f"archive+{http_base}/bundle.zip#models/lite0.pth",
    ]
    for source in sources:
        backbone = load_backbone(source)
        assert backbone.name == "efficientnet_lite0" and backbone.source == source
        assert backbone.weights_sha256 == reference.weights_sha256
        with torch.inference_mode():
            assert torch.allclose(backbone.features(x), expected)


def test_weights_source_errors(weights_dir: Path, http_base: str) -> None:
    with pytest.raises(FetchError, match="HTTP 404") as info:
        load_backbone(f"{http_base}/missing.pth")
    assert info.value.status == 404 and info.value.uri.endswith("/missing.pth")
    with pytest.raises(FetchError, match="archive member not found: 'nope.pth'"):
        load_backbone(f"archive+{weights_dir / 'bundle.zip'}#nope.pth")
    with pytest.raises(ConfigError, match="do not fit mobilenet_v2"):
        load_backbone(str(weights_dir / "lite0.pth"), architecture="mobilenet_v2")
    with pytest.raises(ConfigError, match="cannot read torch weights"):
        load_backbone(str(weights_dir / "bundle.zip"))


def test_caller_opener_is_used(weights_dir: Path) -> None:
    seen: list[str] = []

    def opener(uri: str) -> bytes:
        seen.append(uri)
        return (weights_dir / "lite0.pth").read_bytes()

    backbone = load_backbone("s3://bucket/lite0.pth", opener=opener, architecture="efficientnet_lite0")
    assert seen == ["s3://bucket/lite0.pth"] and backbone.dim == 1280
