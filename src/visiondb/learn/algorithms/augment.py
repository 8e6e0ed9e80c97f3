"""On-the-fly batch augmentation with torch tensor ops (affine_grid/grid_sample): crops, flips, rotation, shift, shear, zoom, colour."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field

from visiondb.learn.algorithms.registry import Params


class AugmentParams(Params):
    """Augmentation options; zero/false/None disables each."""

    randomResizedCrop: float | None = Field(None, gt=0, le=1, description="minimum area fraction kept")
    flip: bool = False
    rotation: float = Field(0.0, ge=0, le=180, description="max degrees")
    shift: float = Field(0.0, ge=0, le=1, description="max fraction of width/height")
    shear: float = Field(0.0, ge=0, lt=90, description="max degrees")
    zoom: float = Field(0.0, ge=0, lt=1, description="max scale change fraction")
    colorJitter: float = Field(0.0, ge=0, le=1, description="max brightness/contrast/saturation change")

    def active(self) -> bool:
        """True when any augmentation is enabled."""
        return bool(self.randomResizedCrop or self.flip or self.rotation or self.shift or self.shear or self.zoom or self.colorJitter)


def _uniform(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    """n uniform samples in [low, high)."""
    return torch.rand(n, generator=gen) * (high - low) + low


def _affine(n: int, opts: AugmentParams, gen: torch.Generator) -> torch.Tensor:
    """Per-sample 2x3 matrices mapping output to input coordinates (normalised [-1, 1] space)."""
    eye = torch.eye(3).repeat(n, 1, 1)
    mat = eye.clone()
    if opts.randomResizedCrop:
        area = _uniform(n, opts.randomResizedCrop, 1.0, gen)
        log_ratio = _uniform(n, math.log(3 / 4), math.log(4 / 3), gen)
        ratio = torch.exp(log_ratio)
        w = torch.sqrt(area * ratio).clamp(max=1.0)
        h = torch.sqrt(area / ratio).clamp(max=1.0)
        cx = (torch.rand(n, generator=gen) * 2 - 1) * (1 - w)
        cy = (torch.rand(n, generator=gen) * 2 - 1) * (1 - h)
        crop = eye.clone()
        crop[:, 0, 0], crop[:, 1, 1], crop[:, 0, 2], crop[:, 1, 2] = w, h, cx, cy
        mat = mat @ crop
    if opts.shift:
        shift = eye.clone()
        shift[:, 0, 2] = _uniform(n, -opts.shift, opts.shift, gen) * 2
        shift[:, 1, 2] = _uniform(n, -opts.shift, opts.shift, gen) * 2
        mat = mat @ shift
    if opts.rotation:
        angle = torch.deg2rad(_uniform(n, -opts.rotation, opts.rotation, gen))
        rot = eye.clone()
        rot[:, 0, 0], rot[:, 0, 1] = torch.cos(angle), -torch.sin(angle)
        rot[:, 1, 0], rot[:, 1, 1] = torch.sin(angle), torch.cos(angle)
        mat = mat @ rot
    if opts.shear:
        shear = eye.clone()
        shear[:, 0, 1] = torch.tan(torch.deg2rad(_uniform(n, -opts.shear, opts.shear, gen)))
        mat = mat @ shear
    if opts.zoom:
        scale = 1.0 / _uniform(n, 1 - opts.zoom, 1 + opts.zoom, gen)
        zoom = eye.clone()
        zoom[:, 0, 0], zoom[:, 1, 1] = scale, scale
        mat = mat @ zoom
    if opts.flip:
        flip = eye.clone()
        flip[:, 0, 0] = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
        mat = mat @ flip
    return mat[:, :2, :]


def _color(x: torch.Tensor, amount: float, gen: torch.Generator) -> torch.Tensor:
    """Random brightness, contrast and (RGB only) saturation factors in [1-amount, 1+amount]."""
    n = x.shape[0]
    shape = (n, 1, 1, 1)
    bright = _uniform(n, 1 - amount, 1 + amount, gen).view(shape).to(x)
    contrast = _uniform(n, 1 - amount, 1 + amount, gen).view(shape).to(x)
    x = x * bright
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * contrast + mean
    if x.shape[1] == 3:
        sat = _uniform(n, 1 - amount, 1 + amount, gen).view(shape).to(x)
        grey = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
        x = (x - grey) * sat + grey
    return x.clamp(0.0, 1.0)


def augment_batch(x: torch.Tensor, opts: AugmentParams, gen: torch.Generator) -> torch.Tensor:
    """Augment a float batch [B, C, H, W] with values in [0, 1]; labels are untouched by construction."""
    if not opts.active():
        return x
    if opts.randomResizedCrop or opts.shift or opts.rotation or opts.shear or opts.zoom or opts.flip:
        theta = _affine(x.shape[0], opts, gen).to(device=x.device, dtype=x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if opts.colorJitter:
        x = _color(x, opts.colorJitter, gen)
    return x
