"""Pretrained backbones, inference runtimes (PyTorch / ONNX Runtime) and the streaming featurization pipeline."""
from __future__ import annotations

from visiondb.models.backbones import BACKBONES, Backbone, BackboneSpec, load_backbone, register_backbone
from visiondb.models.embedder import Embedder, get_embedder
from visiondb.models.runtime import InferenceBackend, OnnxBackend, TorchBackend, make_backend

__all__ = [
    "BACKBONES",
    "Backbone",
    "BackboneSpec",
    "load_backbone",
    "register_backbone",
    "Embedder",
    "get_embedder",
    "InferenceBackend",
    "OnnxBackend",
    "TorchBackend",
    "make_backend",
]
