"""Model (de)serialisation: torch networks as safetensors + JSON config, scikit-learn estimators via joblib, stacks as zips."""
from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import joblib
import numpy as np
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from visiondb.errors import VisionDBError

FORMAT_TORCH = "torch-safetensors"
FORMAT_SKLEARN = "sklearn-joblib"
FORMAT_STACKING = "stacking-zip"


def _torch_dump(model: Any) -> bytes:
    """safetensors weights with the rebuild config in the safetensors metadata header."""
    config = {
        "algorithm": model.algorithm,
        "params": model.params,
        "seed": model.seed,
        "class_weight": model.class_weight,
        "classes": model.classes_.tolist(),
        "classes_dtype": str(model.classes_.dtype),
        "arch": model.arch_,
        "history": getattr(model, "history", None),
    }
    state = {k: v.detach().cpu().contiguous() for k, v in model.module_.state_dict().items()}
    return st_save(state, metadata={"visiondb": json.dumps(config)})


def _torch_load(data: bytes) -> Any:
    """Rebuild the architecture from the metadata config (no pretrained download) and load the weights."""
    from visiondb.learn.algorithms.networks import NETWORK_CLASSES

    header_len = int.from_bytes(data[:8], "little")
    meta = json.loads(data[8:8 + header_len])["__metadata__"]
    config = json.loads(meta["visiondb"])
    cls = NETWORK_CLASSES[config["algorithm"]]
    model = cls(config["params"], seed=config["seed"], class_weight=config["class_weight"])
    dtype = config["classes_dtype"]
    model.classes_ = np.asarray(config["classes"], dtype=object if dtype == "object" else dtype)
    model.arch_ = config["arch"]
    model.history = config["history"]
    if config["algorithm"] == "finetune":
        module = model._build(model.arch_, pretrained=False)
    else:
        module = model._build(model.arch_)
    module.load_state_dict(st_load(data))
    module.eval()
    model.module_ = module
    return model


def dump_model(model: Any) -> tuple[bytes, str]:
    """Serialise a fitted estimator; returns (bytes, format name)."""
    from visiondb.learn.algorithms.torch_base import TorchClassifier
    from visiondb.learn.stacking import StackingClassifier

    if isinstance(model, TorchClassifier):
        return _torch_dump(model), FORMAT_TORCH
    if isinstance(model, StackingClassifier):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            members = []
            for i, sub in enumerate([*model.base_models_, model.meta_model_]):
                data, fmt = dump_model(sub)
                name = f"model_{i}.bin"
                zf.writestr(name, data)
                members.append({"name": name, "format": fmt})
            zf.writestr("stacking.json", json.dumps({
                "params": model.params, "seed": model.seed, "class_weight": model.class_weight,
                "classes": model.classes_.tolist(), "members": members,
            }))
        return buf.getvalue(), FORMAT_STACKING
    buf = io.BytesIO()
    joblib.dump(model, buf)
    return buf.getvalue(), FORMAT_SKLEARN


def load_model(data: bytes, fmt: str) -> Any:
    """Inverse of `dump_model`."""
    if fmt == FORMAT_TORCH:
        return _torch_load(data)
    if fmt == FORMAT_SKLEARN:
        return joblib.load(io.BytesIO(data))
    if fmt == FORMAT_STACKING:
        from visiondb.learn.stacking import StackingClassifier

        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            spec = json.loads(zf.read("stacking.json"))
            subs = [load_model(zf.read(m["name"]), m["format"]) for m in spec["members"]]
        model = StackingClassifier(spec["params"], seed=spec["seed"], class_weight=spec["class_weight"])
        model.classes_ = np.asarray(spec["classes"])
        model.base_models_, model.meta_model_ = subs[:-1], subs[-1]
        return model
    raise VisionDBError(f"unknown model format {fmt!r}; known: {FORMAT_TORCH}, {FORMAT_SKLEARN}, {FORMAT_STACKING}", field="format")
