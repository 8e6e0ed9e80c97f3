"""Model input preprocessing: resize the shorter side, centre-crop, normalise into a preallocated CHW slice."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from visiondb.imaging.decode import decode_box
from visiondb.imaging.threads import torch_on_this_thread

DECODE_VERSION = "dec3"
"""Bumped whenever the decoded or cropped pixels change, so cached embeddings keyed by `Preprocessing.id` are invalidated.

dec2: `crop` resamples only the centre box (same filter geometry as resize-then-crop; <0.01% of pixels differ by 1).
dec3: JPEGs decode at power-of-two DCT scales only; the box is resampled by PyTorch's antialiased uint8 kernels.
"""

INTERPOLATIONS = ("bicubic", "bilinear", "lanczos", "nearest")


def _resample(pixels: np.ndarray, height: int, width: int, interpolation: str) -> np.ndarray:
    """Resize HWC uint8 pixels to height x width with Pillow's filter geometry (antialiased when shrinking).

    PyTorch's uint8 antialiased bicubic/bilinear kernels (ported from Pillow-SIMD) run ~2.5x faster than Pillow
    here; lanczos, which PyTorch lacks, goes through Pillow.
    """
    if interpolation == "lanczos":
        img = Image.fromarray(np.ascontiguousarray(pixels), "RGB")
        return np.asarray(img.resize((width, height), Image.Resampling.LANCZOS))
    if not pixels.flags.writeable or min(pixels.strides) < 0:  # torch.from_numpy takes neither (e.g. np.fliplr views)
        pixels = pixels.copy()
    x = torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0)
    with torch_on_this_thread():  # one photo is too small to share: a thread team costs more CPU than it saves
        if interpolation == "nearest":
            y = F.interpolate(x, size=(height, width), mode="nearest-exact")
        else:
            y = F.interpolate(x, size=(height, width), mode=interpolation, antialias=True, align_corners=False)
    return y[0].permute(1, 2, 0).numpy()


def centre_box(src_w: int, src_h: int, height: int, width: int, resize_to: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the source pixels under the centre height x width crop of an image resized
    so its shorter side is `resize_to`."""
    ratio = resize_to / min(src_w, src_h)
    new_w, new_h = max(width, round(src_w * ratio)), max(height, round(src_h * ratio))
    left, top = (new_w - width) // 2, (new_h - height) // 2
    sx, sy = src_w / new_w, src_h / new_h
    x0, y0 = round(left * sx), round(top * sy)
    return x0, y0, max(x0 + 1, round((left + width) * sx)), max(y0 + 1, round((top + height) * sy))


def centre_crop(pixels: np.ndarray, height: int, width: int, resize_to: int, interpolation: str) -> np.ndarray:
    """Centre height x width crop of HWC pixels resized so their shorter side is `resize_to`.

    Only the source box under the crop is resampled: the same pixels as resize-then-crop at a fraction of the cost.
    """
    x0, y0, x1, y1 = centre_box(pixels.shape[1], pixels.shape[0], height, width, resize_to)
    return _resample(pixels[y0:y1, x0:x1], height, width, interpolation)


def crop_bytes(data: bytes, height: int, width: int, resize_to: int, interpolation: str) -> np.ndarray:
    """`centre_crop(decode_array(data, min_side=resize_to), ...)`, decoding only the box under the crop where the
    format allows (`decode_box`): the same pixels."""
    box = decode_box(data, lambda w, h: centre_box(w, h, height, width, resize_to), min_side=resize_to)
    return _resample(box, height, width, interpolation)


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
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"unknown interpolation {self.interpolation!r}; expected one of {list(INTERPOLATIONS)}")
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

    def crop_array(self, pixels: np.ndarray) -> np.ndarray:
        """Centre size x size crop (HWC uint8) of RGB pixels resized so their shorter side is `resize_to`."""
        return centre_crop(pixels, self.size, self.size, self.resize_to, self.interpolation)

    def preprocess_into(self, image: np.ndarray | Image.Image, out: np.ndarray) -> None:
        """Write the normalised CHW float32 crop of RGB pixels (HWC uint8 array or Pillow image) into `out`."""
        if isinstance(image, Image.Image):
            image = np.asarray(image if image.mode == "RGB" else image.convert("RGB"), dtype=np.uint8)
        self._normalise_into(self.crop_array(image), out)

    def preprocess_bytes_into(self, data: bytes, out: np.ndarray) -> None:
        """`preprocess_into(decode_array(data, min_side=resize_to), out)`, decoding only the crop's box where the
        format allows (`decode_box`): the same values."""
        self.preprocess_box_into(decode_box(data, self.box, min_side=self.resize_to), out)

    def box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of the pixels under the crop in a width x height decoded image."""
        return centre_box(width, height, self.size, self.size, self.resize_to)

    def preprocess_box_into(self, pixels: np.ndarray, out: np.ndarray) -> None:
        """Resample the HWC pixels under the crop's box (`self.box`) to size x size and write them, normalised, into
        `out`."""
        self._normalise_into(_resample(pixels, self.size, self.size, self.interpolation), out)

    def _normalise_into(self, crop: np.ndarray, out: np.ndarray) -> None:
        """out = (crop * scale - mean) / std, HWC uint8 in, CHW float32 out."""
        np.copyto(out, crop.transpose(2, 0, 1), casting="unsafe")
        mul, add = self._affine
        np.multiply(out, mul, out=out)
        np.add(out, add, out=out)

    def to_array(self, image: np.ndarray | Image.Image) -> np.ndarray:
        """Preprocess one image into a new [3, size, size] float32 array."""
        out = np.empty(self.shape, dtype=np.float32)
        self.preprocess_into(image, out)
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


def preprocess_into(
    image: np.ndarray | Image.Image, out: np.ndarray, preprocessing: Preprocessing = IMAGENET_224
) -> None:
    """Module-level form of `Preprocessing.preprocess_into` (writes the CHW crop of `image` into `out`)."""
    preprocessing.preprocess_into(image, out)
