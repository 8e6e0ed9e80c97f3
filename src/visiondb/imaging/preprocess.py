"""Model input preprocessing: resize the shorter side, centre-crop, normalise into a preallocated CHW slice."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

DECODE_VERSION = "dec2"
"""Bumped whenever decode_rgb's or `crop`'s pixels change, so cached embeddings keyed by `Preprocessing.id` are invalidated.

dec2: `crop` resamples only the centre box (same filter geometry as resize-then-crop; <0.01% of pixels differ by 1).
"""

_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "lanczos": Image.Resampling.LANCZOS,
    "nearest": Image.Resampling.NEAREST,
}


@dataclass(frozen=True)
class Preprocessing:
    """How a backbone wants its input: out = (pixel * scale - mean) / std on a size x size centre crop."""

    name: str
    size: int
    resize_to: int
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    scale: float = 1.0
    _affine: tuple[np.ndarray, np.ndarray] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.interpolation not in _RESAMPLE:
            raise ValueError(f"unknown interpolation {self.interpolation!r}; expected one of {sorted(_RESAMPLE)}")
        if self.resize_to < self.size:
            raise ValueError(f"resize_to {self.resize_to} is smaller than crop size {self.size}")
        std = np.asarray(self.std, dtype=np.float32).reshape(3, 1, 1)
        mean = np.asarray(self.mean, dtype=np.float32).reshape(3, 1, 1)
        object.__setattr__(self, "_affine", (np.float32(self.scale) / std, -mean / std))

    @property
    def id(self) -> str:
        """Stable short identifier of every parameter (and the decode version): an embedding-cache key component."""
        spec = f"{self.size}|{self.resize_to}|{self.interpolation}|{self.mean}|{self.std}|{self.scale}|{DECODE_VERSION}"
        digest = hashlib.sha256(spec.encode()).hexdigest()[:8]
        return f"{self.name}{self.size}-{digest}"

    @property
    def shape(self) -> tuple[int, int, int]:
        """CHW shape of one preprocessed image."""
        return (3, self.size, self.size)

    def crop(self, img: Image.Image) -> Image.Image:
        """Centre size x size crop of the image resized so its shorter side is `resize_to` (RGB in, RGB out).

        Only the source box under the crop is resampled (Pillow's `box=`), with the scale factors a full resize
        to (new_w, new_h) would use: the same pixels as resize-then-crop at about half the cost.
        """
        width, height = img.size
        ratio = self.resize_to / min(width, height)
        new_w = max(self.size, round(width * ratio))
        new_h = max(self.size, round(height * ratio))
        left = (new_w - self.size) // 2
        top = (new_h - self.size) // 2
        sx, sy = width / new_w, height / new_h
        box = (left * sx, top * sy, (left + self.size) * sx, (top + self.size) * sy)
        return img.resize((self.size, self.size), _RESAMPLE[self.interpolation], box=box)

    def preprocess_into(self, img: Image.Image, out: np.ndarray) -> None:
        """Write the normalised CHW float32 crop of an RGB image into `out` (a slice of a batch array)."""
        pixels = np.asarray(self.crop(img if img.mode == "RGB" else img.convert("RGB")), dtype=np.uint8)
        np.copyto(out, pixels.transpose(2, 0, 1), casting="unsafe")
        mul, add = self._affine
        np.multiply(out, mul, out=out)
        np.add(out, add, out=out)

    def to_array(self, img: Image.Image) -> np.ndarray:
        """Preprocess one image into a new [3, size, size] float32 array."""
        out = np.empty(self.shape, dtype=np.float32)
        self.preprocess_into(img, out)
        return out


def EFFICIENTNET(size: int) -> Preprocessing:  # noqa: N802 - reads as a constant family
    """EfficientNet-Lite preprocessing: bicubic resize to round(size/0.875), centre crop, (x - 127) / 128."""
    return Preprocessing(
        name="efficientnet",
        size=size,
        resize_to=round(size / 0.875),
        interpolation="bicubic",
        mean=(127.0, 127.0, 127.0),
        std=(128.0, 128.0, 128.0),
        scale=1.0,
    )


IMAGENET_224 = Preprocessing(
    name="imagenet",
    size=224,
    resize_to=256,
    interpolation="bilinear",
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
    scale=1.0 / 255.0,
)
"""torchvision's classic ImageNet evaluation transform (MobileNetV2 and friends)."""


def preprocess_into(img: Image.Image, out: np.ndarray, preprocessing: Preprocessing = IMAGENET_224) -> None:
    """Module-level form of `Preprocessing.preprocess_into` (writes the CHW crop of `img` into `out`)."""
    preprocessing.preprocess_into(img, out)
