"""Image decoding and model preprocessing: one decode path shared by training and serving."""
from __future__ import annotations

from visiondb.imaging.decode import MAX_PIXELS, decode_rgb, probe_image
from visiondb.imaging.preprocess import EFFICIENTNET, IMAGENET_224, Preprocessing, preprocess_into

__all__ = [
    "MAX_PIXELS",
    "decode_rgb",
    "probe_image",
    "Preprocessing",
    "EFFICIENTNET",
    "IMAGENET_224",
    "preprocess_into",
]
