"""Network algorithms: `mlp` on feature vectors, `mlp_pixels` and `cnn` on decoded images."""
from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, PositiveInt
from torch import nn

from visiondb.errors import ImageDecodeError, TrainingError
from visiondb.learn.algorithms.augment import AugmentParams, augment_batch
from visiondb.learn.algorithms.images import decode_images, undecodable
from visiondb.learn.algorithms.registry import register
from visiondb.learn.algorithms.torch_base import EarlyStopping, NetworkParams, TorchClassifier


class MLPParams(NetworkParams):
    """Params of `mlp` (feature vectors)."""

    hiddenSizes: list[PositiveInt] = Field(default_factory=lambda: [256])
    dropout: float = Field(0.2, ge=0, lt=1)
    epochs: int = Field(50, ge=1)
    batchSize: int = Field(64, ge=1)
    validationFraction: float = Field(0.1, ge=0, lt=1)
    earlyStopping: EarlyStopping | None = Field(default_factory=EarlyStopping)


class ImageNetworkParams(NetworkParams):
    """Params shared by networks that decode images themselves."""

    imageSize: tuple[PositiveInt, PositiveInt] = (28, 28)
    grayscale: bool = True
    augment: AugmentParams = Field(default_factory=AugmentParams)


class PixelMLPParams(ImageNetworkParams):
    """Params of `mlp_pixels` (Keras tutorial: Flatten -> Dense(128, relu) -> Dense(classes))."""

    hiddenSizes: list[PositiveInt] = Field(default_factory=lambda: [128])
    dropout: float = Field(0.0, ge=0, lt=1)


class CNNParams(ImageNetworkParams):
    """Params of `cnn`: conv blocks (conv-BN-ReLU x convsPerBlock, max-pool), then dense + dropout."""

    channels: list[PositiveInt] = Field(default_factory=lambda: [32, 64], min_length=1)
    kernelSize: int = Field(3, ge=1)
    convsPerBlock: int = Field(1, ge=1)
    dense: int = Field(128, ge=1)
    dropout: float = Field(0.3, ge=0, lt=1)
    epochs: int = Field(12, ge=1)
    batchSize: int = Field(128, ge=1)
    learningRate: float = Field(3e-3, gt=0)
    schedule: Literal["constant", "onecycle", "cosine"] = "onecycle"


def mlp_layers(n_in: int, hidden: list[int], dropout: float, n_out: int) -> list[nn.Module]:
    """Linear-ReLU(-Dropout) stack ending in a Linear to n_out logits."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(n_in, width), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        n_in = width
    layers.append(nn.Linear(n_in, n_out))
    return layers


class MLPClassifier(TorchClassifier):
    """Multi-layer perceptron over float feature vectors [n, d]."""

    algorithm = "mlp"

    def _prepare(self, X: Any) -> torch.Tensor:
        arr = np.asarray(X, dtype=np.float32)
        if arr.ndim != 2:
            raise TrainingError(f"mlp: expected a 2-d feature matrix, got shape {arr.shape}")
        return torch.from_numpy(np.ascontiguousarray(arr))

    def _architecture(self, inputs: torch.Tensor, n_classes: int) -> dict[str, Any]:
        cfg = self.config
        return {"inputDim": int(inputs.shape[1]), "hiddenSizes": list(cfg.hiddenSizes), "dropout": cfg.dropout, "classes": n_classes}

    def _build(self, arch: dict[str, Any]) -> nn.Module:
        return nn.Sequential(*mlp_layers(arch["inputDim"], arch["hiddenSizes"], arch["dropout"], arch["classes"]))


class ImageClassifier(TorchClassifier):
    """Base for networks fed encoded image bytes: decode (cached) to uint8, scale to [0, 1], augment when training."""

    resize_mode = "stretch"

    def _decode_options(self) -> dict[str, Any]:
        """Keyword arguments of `decode_images` for this network's input."""
        cfg = self.config
        return {"grayscale": cfg.grayscale, "size": tuple(cfg.imageSize), "resize": self.resize_mode}

    def _prepare(self, X: Any) -> torch.Tensor:
        return torch.from_numpy(decode_images(X, **self._decode_options()))

    def undecodable(self, X: Any) -> dict[int, ImageDecodeError]:
        """Positions of X this network cannot decode, with their errors (checked one image at a time)."""
        return undecodable(X, **self._decode_options())

    def _to_input(self, batch: torch.Tensor, train: bool) -> torch.Tensor:
        x = batch.float() / 255.0
        opts = self._augment_opts()
        if train and opts is not None and opts.active():
            if not hasattr(self, "_aug_gen"):
                self._aug_gen = torch.Generator().manual_seed(self.seed + 1)
            x = augment_batch(x.cpu(), opts, self._aug_gen).to(batch.device)
        return self._normalise(x)

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Pixel scaling after augmentation (identity: pixels / 255)."""
        return x

    def _setup(self, X: Any, y: Any) -> tuple[torch.Tensor, np.ndarray]:
        """Every fit (whatever its loop) restarts the augmentation generator, so a refit augments as the first did."""
        self._aug_gen = torch.Generator().manual_seed(self.seed + 1)
        return super()._setup(X, y)


class PixelMLPClassifier(ImageClassifier):
    """Flatten -> Dense(hidden, relu)... -> Dense(classes): the Keras Fashion-MNIST tutorial model."""

    algorithm = "mlp_pixels"

    def _architecture(self, inputs: torch.Tensor, n_classes: int) -> dict[str, Any]:
        cfg = self.config
        return {"inputDim": int(np.prod(inputs.shape[1:])), "hiddenSizes": list(cfg.hiddenSizes), "dropout": cfg.dropout, "classes": n_classes}

    def _build(self, arch: dict[str, Any]) -> nn.Module:
        return nn.Sequential(nn.Flatten(), *mlp_layers(arch["inputDim"], arch["hiddenSizes"], arch["dropout"], arch["classes"]))


class CNNClassifier(ImageClassifier):
    """Small conv net: [conv-BN-ReLU]*k + max-pool per block, then dense-ReLU-dropout and a linear head."""

    algorithm = "cnn"

    def _architecture(self, inputs: torch.Tensor, n_classes: int) -> dict[str, Any]:
        cfg = self.config
        return {
            "inChannels": int(inputs.shape[1]), "imageSize": [int(inputs.shape[2]), int(inputs.shape[3])],
            "channels": list(cfg.channels), "kernelSize": cfg.kernelSize, "convsPerBlock": cfg.convsPerBlock,
            "dense": cfg.dense, "dropout": cfg.dropout, "classes": n_classes,
        }

    def _build(self, arch: dict[str, Any]) -> nn.Module:
        layers: list[nn.Module] = []
        c_in, (h, w) = arch["inChannels"], arch["imageSize"]
        for c_out in arch["channels"]:
            for _ in range(arch["convsPerBlock"]):
                layers += [
                    nn.Conv2d(c_in, c_out, arch["kernelSize"], padding="same", bias=False),
                    nn.BatchNorm2d(c_out),
                    nn.ReLU(inplace=True),
                ]
                c_in = c_out
            layers.append(nn.MaxPool2d(2))
            h, w = h // 2, w // 2
        if h < 1 or w < 1:
            raise TrainingError(f"cnn: imageSize {arch['imageSize']} is too small for {len(arch['channels'])} pooling blocks")
        layers += [
            nn.Flatten(), nn.Linear(c_in * h * w, arch["dense"]), nn.ReLU(inplace=True),
            nn.Dropout(arch["dropout"]), nn.Linear(arch["dense"], arch["classes"]),
        ]
        return nn.Sequential(*layers)


@register("mlp", MLPParams)
def build_mlp(p: MLPParams, seed: int, class_weight: str | None) -> MLPClassifier:
    """PyTorch MLP on feature vectors with early stopping on a validation split."""
    return MLPClassifier(p.model_dump(mode="json"), seed=seed, class_weight=class_weight)


@register("mlp_pixels", PixelMLPParams, input_kind="images")
def build_mlp_pixels(p: PixelMLPParams, seed: int, class_weight: str | None) -> PixelMLPClassifier:
    """Keras-tutorial dense network on greyscale pixels / 255."""
    return PixelMLPClassifier(p.model_dump(mode="json"), seed=seed, class_weight=class_weight)


@register("cnn", CNNParams, input_kind="images")
def build_cnn(p: CNNParams, seed: int, class_weight: str | None) -> CNNClassifier:
    """Small configurable convolutional network trained from scratch."""
    return CNNClassifier(p.model_dump(mode="json"), seed=seed, class_weight=class_weight)


NETWORK_CLASSES: dict[str, type[TorchClassifier]] = {
    cls.algorithm: cls for cls in (MLPClassifier, PixelMLPClassifier, CNNClassifier)
}
