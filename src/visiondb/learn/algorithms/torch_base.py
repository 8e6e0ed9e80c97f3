"""Shared PyTorch training loop for the network algorithms: batching, class weights, schedules, early stopping, history."""
from __future__ import annotations

import contextlib
import copy
import itertools
import math
import sys
import threading
from typing import Any, Callable, Iterator, Literal

import numpy as np
import torch
from pydantic import Field
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import ShuffleSplit, StratifiedShuffleSplit
from sklearn.utils.class_weight import compute_class_weight
from torch import nn
from tqdm.auto import tqdm

from visiondb.errors import TrainingError
from visiondb.learn.algorithms.augment import AugmentParams
from visiondb.learn.algorithms.registry import Params, validate_params


class EarlyStopping(Params):
    """Stop when `monitor` has not improved by more than `minDelta` for `patience` epochs; best weights are restored."""

    monitor: Literal["val_loss", "val_accuracy"] = "val_loss"
    patience: int = Field(5, ge=1)
    minDelta: float = Field(0.0, ge=0)


class NetworkParams(Params):
    """Params shared by every network algorithm."""

    epochs: int = Field(10, ge=1)
    batchSize: int = Field(32, ge=1)
    learningRate: float = Field(1e-3, gt=0)
    weightDecay: float = Field(0.0, ge=0)
    schedule: Literal["constant", "onecycle", "cosine"] = "constant"
    earlyStopping: EarlyStopping | None = None
    validationFraction: float = Field(0.0, ge=0, lt=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"


def pick_device(name: str) -> torch.device:
    """`auto` = CUDA when available, else CPU."""
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise TrainingError("device 'cuda' was asked for but CUDA is not available", field="device")
        return torch.device("cuda")
    return torch.device("cpu")


def inference_device(name: str) -> torch.device:
    """Device to predict on: like `pick_device`, but `cuda` falls back to CPU on a host without CUDA."""
    return pick_device("auto" if name == "cuda" else name)


def module_device(module: nn.Module) -> torch.device:
    """Device holding the module's first parameter or buffer (CPU for an empty module)."""
    tensor = next(itertools.chain(module.parameters(), module.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


@contextlib.contextmanager
def seeded_rng(seed: int, device: str) -> Iterator[None]:
    """Seed torch's global CPU RNG (and the current CUDA device's when training on `device` uses CUDA) for the
    block, restoring the caller's RNG states on exit: training is reproducible without reseeding the process."""
    cuda = device != "cpu" and torch.cuda.is_available()
    with torch.random.fork_rng(devices=[torch.cuda.current_device()] if cuda else []):
        torch.random.default_generator.manual_seed(seed)
        if cuda:
            torch.cuda.manual_seed(seed)  # the current device only: the one forked above and trained on
        yield


_LOCK_GUARD = threading.Lock()


def _validation_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train/validation split of training rows (plain shuffle when a class is too small)."""
    n = len(y)
    n_val = max(1, int(round(n * fraction)))
    _, counts = np.unique(y, return_counts=True)
    if counts.min() >= 2 and n_val >= len(counts) and n - n_val >= len(counts):
        splitter: Any = StratifiedShuffleSplit(n_splits=1, test_size=n_val, random_state=seed)
    else:
        splitter = ShuffleSplit(n_splits=1, test_size=n_val, random_state=seed)
    train, val = next(iter(splitter.split(np.zeros(n), y)))
    return np.sort(train), np.sort(val)


class TorchClassifier(ClassifierMixin, BaseEstimator):
    """scikit-learn-contract wrapper over a torch module; subclasses define input preparation and the architecture."""

    algorithm: str = ""

    def __init__(
        self,
        params: dict[str, Any] | None = None,
        seed: int = 0,
        class_weight: str | None = None,
        on_epoch: Callable[[int, dict[str, Any]], None] | None = None,
        progress_bar: bool = True,
    ) -> None:
        self.params = params
        self.seed = seed
        self.class_weight = class_weight
        self.on_epoch = on_epoch
        self.progress_bar = progress_bar

    # ---- hooks for subclasses -------------------------------------------------------------
    def _prepare(self, X: Any) -> torch.Tensor:
        """Turn raw X into a CPU tensor the module's `_to_input` consumes (features or uint8 images)."""
        raise NotImplementedError

    def _architecture(self, inputs: torch.Tensor, n_classes: int) -> dict[str, Any]:
        """JSON-able description from which `_build` rebuilds the module (saved with the weights)."""
        raise NotImplementedError

    def _build(self, arch: dict[str, Any]) -> nn.Module:
        """Build the module from an architecture description."""
        raise NotImplementedError

    def _to_input(self, batch: torch.Tensor, train: bool) -> torch.Tensor:
        """Convert a prepared batch (already on device) into the module input; augment when training."""
        return batch.float()

    # ---- sklearn contract -------------------------------------------------------------------
    @property
    def config(self) -> Any:
        """Validated params of this estimator."""
        return validate_params(self.algorithm, self.params)

    def _augment_opts(self) -> AugmentParams | None:
        """Augmentation options (image networks only)."""
        return getattr(self.config, "augment", None)

    @property
    def show_progress(self) -> bool:
        """Bars unless turned off here or for the whole process (VISIONDB_PROGRESS=0)."""
        from ...core.runs import progress_enabled

        return self.progress_bar and progress_enabled()

    def fit(self, X: Any, y: Any) -> "TorchClassifier":
        """Train on X, y (`_fit`) with torch's global RNG seeded by `seed`; the caller's RNG state is left as it was."""
        with seeded_rng(self.seed, self.config.device):
            self._fit(X, y)
        return self

    def _fit(self, X: Any, y: Any) -> None:
        """The training itself (run by `fit` under `seeded_rng`): keeps `history`, restores best weights under early stopping."""
        inputs, y_idx = self._setup(X, y)
        self.history = self._train(self.module_, inputs, y_idx, self.config)

    def _setup(self, X: Any, y: Any) -> tuple[torch.Tensor, np.ndarray]:
        """Classes, prepared inputs and a freshly built module (inside `fit`'s seeded RNG); returns (inputs, label indices)."""
        self.classes_, y_idx = np.unique(np.asarray(y), return_inverse=True)
        if len(self.classes_) < 2:
            raise TrainingError(f"{self.algorithm}: need at least two classes, got {self.classes_.tolist()}")
        inputs = self._prepare(X)
        self.arch_ = self._architecture(inputs, len(self.classes_))
        self.module_ = self._build(self.arch_)
        return inputs, y_idx

    def _param_groups(self, module: nn.Module, cfg: Any) -> list[dict[str, Any]]:
        """Optimizer parameter groups (one learning rate for every trainable parameter by default)."""
        return [{"params": [p for p in module.parameters() if p.requires_grad], "lr": cfg.learningRate}]

    def _train(self, module: nn.Module, inputs: torch.Tensor, y_idx: np.ndarray, cfg: Any) -> list[dict[str, Any]]:
        """The epoch loop; returns the history."""
        device = pick_device(cfg.device)
        use_bf16 = device.type == "cuda"
        module.to(device)
        gen = torch.Generator().manual_seed(self.seed)
        targets = torch.as_tensor(y_idx, dtype=torch.long)
        fraction = cfg.validationFraction or (0.1 if cfg.earlyStopping else 0.0)
        if fraction:
            train_rows, val_rows = _validation_split(y_idx, fraction, self.seed)
        else:
            train_rows, val_rows = np.arange(len(y_idx)), np.array([], dtype=np.int64)
        self.validation_index_ = val_rows
        weight = None
        if self.class_weight == "balanced":
            present = np.unique(y_idx[train_rows])
            w = np.ones(len(self.classes_), dtype=np.float32)
            w[present] = compute_class_weight("balanced", classes=present, y=y_idx[train_rows])
            weight = torch.as_tensor(w, device=device)
        criterion = nn.CrossEntropyLoss(weight=weight)
        groups = self._param_groups(module, cfg)
        optimizer = torch.optim.Adam(groups, lr=cfg.learningRate, weight_decay=cfg.weightDecay)
        batch = cfg.batchSize
        steps = math.ceil(len(train_rows) / batch)
        scheduler: Any = None
        if cfg.schedule == "onecycle":
            scheduler = torch.optim.lr_scheduler.OneCycleLR(
                optimizer, max_lr=[g["lr"] for g in groups], epochs=cfg.epochs, steps_per_epoch=steps
            )
        elif cfg.schedule == "cosine":
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs * steps)
        stop = cfg.earlyStopping
        best_score, best_state, best_epoch, wait = math.inf, None, 0, 0
        history: list[dict[str, Any]] = []
        train_t = torch.as_tensor(train_rows)
        for epoch in range(1, cfg.epochs + 1):
            module.train()
            self._train_mode_hook(module)
            order = train_t[torch.randperm(len(train_t), generator=gen)]
            total_loss, correct, seen = 0.0, 0, 0
            bar = tqdm(
                range(steps), desc=f"{self.algorithm} epoch {epoch}/{cfg.epochs}", leave=False,
                disable=not self.show_progress, mininterval=1.0,
            )
            for step in bar:
                idx = order[step * batch:(step + 1) * batch]
                xb = self._to_input(inputs[idx].to(device), train=True)
                yb = targets[idx].to(device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                    logits = module(xb)
                loss = criterion(logits.float(), yb)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                total_loss += float(loss.detach()) * len(idx)
                correct += int((logits.argmax(1) == yb).sum())
                seen += len(idx)
                bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.4f}", refresh=False)
            logs: dict[str, Any] = {
                "epoch": epoch,
                "loss": total_loss / max(seen, 1),
                "accuracy": correct / max(seen, 1),
                "lr": float(optimizer.param_groups[0]["lr"]),
            }
            if len(val_rows):
                logits = self._logits(module, inputs[torch.as_tensor(val_rows)], device)
                yv = targets[torch.as_tensor(val_rows)]
                cpu_weight = weight.cpu() if weight is not None else None
                logs["val_loss"] = float(nn.functional.cross_entropy(logits, yv, weight=cpu_weight))
                logs["val_accuracy"] = float((logits.argmax(1) == yv).float().mean())
            bar.close()
            if self.show_progress:
                shown = {k: round(v, 4) for k, v in logs.items() if k != "epoch" and isinstance(v, float)}
                tqdm.write(f"{self.algorithm} epoch {epoch}/{cfg.epochs} {shown}", file=sys.stderr)
            history.append(logs)
            if self.on_epoch is not None:
                self.on_epoch(epoch, dict(logs))
            if stop is not None:
                score = logs[stop.monitor] * (1 if stop.monitor == "val_loss" else -1)
                if score < best_score - stop.minDelta:
                    best_score, best_epoch, wait = score, epoch, 0
                    best_state = copy.deepcopy(module.state_dict())
                else:
                    wait += 1
                    if wait >= stop.patience:
                        break
        if stop is not None and best_state is not None:
            module.load_state_dict(best_state)
            for logs in history:
                logs["best"] = logs["epoch"] == best_epoch
        self.best_epoch_ = best_epoch if stop is not None else len(history)
        module.to("cpu").eval()
        return history

    def _train_mode_hook(self, module: nn.Module) -> None:
        """Called after `module.train()` each epoch (finetune keeps frozen BatchNorm in eval mode)."""

    @torch.no_grad()
    def _logits(self, module: nn.Module, inputs: torch.Tensor, device: torch.device, chunk: int = 512) -> torch.Tensor:
        """Eval-mode float32 logits on CPU, computed in chunks."""
        was_training = module.training
        module.eval()
        out = []
        for start in range(0, len(inputs), chunk):
            xb = self._to_input(inputs[start:start + chunk].to(device), train=False)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                out.append(module(xb).float().cpu())
        module.train(was_training)
        return torch.cat(out) if out else torch.empty(0, len(self.classes_))

    def _predict_lock(self) -> threading.Lock:
        """Per-model lock serialising device moves and forward passes (created on first use, never pickled)."""
        lock = self.__dict__.get("_predict_lock_")
        if lock is None:
            with _LOCK_GUARD:
                lock = self.__dict__.setdefault("_predict_lock_", threading.Lock())
        return lock

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())
        state.pop("_predict_lock_", None)
        return state

    def predict_proba(self, X: Any) -> np.ndarray:
        """Softmax class probabilities [n, n_classes] in `classes_` order; safe to call from several threads.

        The module moves to the inference device once and stays there (`release_device` moves it back)."""
        if not hasattr(self, "module_"):
            raise TrainingError(f"{self.algorithm}: model is not trained")
        inputs = self._prepare(X)
        target = inference_device(self.config.device)
        with self._predict_lock():
            module = self.module_
            if module_device(module).type != target.type:
                module.to(target)
            logits = self._logits(module, inputs, module_device(module))
        return torch.softmax(logits.double(), dim=1).numpy()

    def release_device(self) -> None:
        """Move a fitted module back to CPU (frees accelerator memory held since the last prediction)."""
        if hasattr(self, "module_"):
            with self._predict_lock():
                self.module_.to("cpu")

    def predict(self, X: Any) -> np.ndarray:
        """Most probable class label per row."""
        return self.classes_[self.predict_proba(X).argmax(axis=1)]
