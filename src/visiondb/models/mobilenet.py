"""torchvision's MobileNetV2 layout (without torchvision) so its official ImageNet state dict loads strictly."""
from __future__ import annotations

import torch
from torch import nn

# (expand ratio t, output channels c, repeats n, first stride s), as in the MobileNetV2 paper / torchvision.
_SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


class ConvBNReLU6(nn.Sequential):
    """Conv (no bias) + BatchNorm + ReLU6, indexed 0/1/2 like torchvision's Conv2dNormActivation."""

    def __init__(self, inp: int, out: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> None:
        super().__init__(
            nn.Conv2d(inp, out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise (3x3) -> project (1x1, linear), with a residual when shapes allow."""

    def __init__(self, inp: int, out: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = int(round(inp * expand))
        self.use_res_connect = stride == 1 and inp == out
        layers: list[nn.Module] = [ConvBNReLU6(inp, hidden, kernel=1)] if expand != 1 else []
        layers += [ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden), nn.Conv2d(hidden, out, 1, bias=False), nn.BatchNorm2d(out)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block (plus the identity when strides and channels match)."""
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 1.0x: `features` (19 stages, 1280 channels out) and `classifier` (Dropout, Linear)."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = [ConvBNReLU6(3, 32, stride=2)]
        channels = 32
        for expand, out, repeats, stride in _SETTINGS:
            for i in range(repeats):
                layers.append(InvertedResidual(channels, out, stride if i == 0 else 1, expand))
                channels = out
        layers.append(ConvBNReLU6(channels, 1280, kernel=1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Global-average-pooled 1280-d features."""
        return nn.functional.adaptive_avg_pool2d(self.features(x), 1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits."""
        return self.classifier(self.pooled(x))
