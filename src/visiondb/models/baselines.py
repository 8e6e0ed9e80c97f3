"""Reference throughputs for benchmarks: the tutorial-style naive loop and the bare forward pass."""
from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from visiondb.models.backbones import load_backbone
from visiondb.models.embedder import Embedder


def naive_loop_images_per_s(paths: Sequence[str | Path], model: str = "efficientnet_lite0", batch_size: int = 32) -> float:
    """Images/s of the way tutorials write it: PIL open -> RGB -> resize/crop -> torch forward, default torch settings."""
    backbone = load_backbone(model)
    pre = backbone.preprocessing
    start = time.perf_counter()
    for offset in range(0, len(paths), batch_size):
        tensors = []
        for path in paths[offset:offset + batch_size]:
            img = Image.open(path).convert("RGB")
            width, height = img.size  # torchvision-style Resize(shorter side) + CenterCrop, full-size decode
            ratio = pre.resize_to / min(width, height)
            new_w, new_h = max(pre.size, round(width * ratio)), max(pre.size, round(height * ratio))
            img = img.resize((new_w, new_h), Image.Resampling.BICUBIC)
            left, top = (new_w - pre.size) // 2, (new_h - pre.size) // 2
            img = img.crop((left, top, left + pre.size, top + pre.size))
            arr = np.asarray(img, dtype=np.float32).transpose(2, 0, 1)
            mean = np.asarray(pre.mean, np.float32)[:, None, None]
            std = np.asarray(pre.std, np.float32)[:, None, None]
            tensors.append(torch.from_numpy((arr * pre.scale - mean) / std))
        with torch.no_grad():
            backbone.features(torch.stack(tensors))
    return len(paths) / (time.perf_counter() - start)


def bare_forward_images_per_s(embedder: Embedder, n: int = 256, batch_size: int = 32) -> float:
    """Images/s of the embedder's runtime alone on pre-made tensors (no decode): the ceiling for the pipeline.

    Goes through `Embedder.run`, which uses every core (ONNX: the batch split across the single-threaded callers).
    """
    rng = np.random.default_rng(0)
    batch = rng.uniform(-1.0, 1.0, size=(batch_size,) + embedder.preprocessing.shape).astype(np.float32)
    embedder.run(batch[:2])  # warm-up (allocations, kernel selection)
    done = 0
    start = time.perf_counter()
    while done < n:
        take = min(batch_size, n - done)
        embedder.run(batch[:take])
        done += take
    return n / (time.perf_counter() - start)
