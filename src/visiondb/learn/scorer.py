"""`classifier` functions: a stored model as a SQL function returning STRUCT(label, scores MAP)."""
from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pyarrow as pa

from ..core.config import Params
from ..core.entities import Function
from ..core.registry import FUNCTION_TYPES
from ..errors import ConfigError, ImageDecodeError, VisionDBError
from ..sql.udf import create_macro, fail_row, impl_name, register_arrow_udf, udf_call
from .inputs import list_column_matrix
from .model_store import ModelEntry, load_model_config, load_model_entry

SCORE_TYPE = "STRUCT(label VARCHAR, scores MAP(VARCHAR, DOUBLE))"


class ClassifierParams(Params):
    modelName: str | None = None  # an entry of the model registry (`<experiment>_scorer_<fold>`)
    version: int | None = None
    modelFileUrl: str | None = None  # or a `.vdbm` package file


@FUNCTION_TYPES.register("classifier")
class ClassifierFunction(Function):
    """Scores features (or images, or several feature arrays for stacking) with a trained model."""

    Params = ClassifierParams
    params: ClassifierParams

    def __init__(self, db: Any, id: str, params: ClassifierParams) -> None:
        super().__init__(db, id, params)
        if not params.modelName and not params.modelFileUrl:
            raise ConfigError("classifier needs params.modelName or params.modelFileUrl", field="params.modelName")
        self._entry: ModelEntry | None = None
        self._config: dict | None = None
        self._model: Any = None
        self._lock = threading.Lock()

    # model loading --------------------------------------------------------------------------
    @property
    def entry(self) -> ModelEntry:
        if self._entry is None:
            if self.params.modelFileUrl:
                from .packages import import_package

                name, version = import_package(self.db, self.params.modelFileUrl, register_function=False)
                self._entry = load_model_entry(self.db, name, version)
            else:
                assert self.params.modelName
                self._entry = load_model_entry(self.db, self.params.modelName, self.params.version)
        return self._entry

    @property
    def model(self) -> Any:
        with self._lock:
            if self._model is None:
                from .persistence import load_model

                self._model = load_model(self.entry.model_bytes, self.entry.model_format)
            return self._model

    @property
    def model_config(self) -> dict:
        """The stored model's config; registering needs only this, not the model bytes (connect stays cheap)."""
        if self._config is None:
            if self._entry is not None or self.params.modelFileUrl:
                self._config = self.entry.config
            else:
                assert self.params.modelName
                self._config = load_model_config(self.db, self.params.modelName, self.params.version)
        return self._config

    @property
    def input_kind(self) -> str:
        return self.model_config.get("inputKind", "features")

    def input_names(self) -> list[str]:
        return list(self.model_config.get("inputs", ["features"]))

    def status(self) -> dict:
        return {k: v for k, v in self.entry.describe().items() if k != "metrics"}

    # SQL --------------------------------------------------------------------------------------------
    def register(self) -> None:
        names = self.input_names()
        if self.input_kind == "images":
            register_arrow_udf(self.db, impl_name(self.id), self._udf, ["VARCHAR"], SCORE_TYPE)
            create_macro(self.db, self.id, ["x"], udf_call(impl_name(self.id), "to_json(x)"))
            return
        args = [f"f{i}" for i in range(len(names))]
        register_arrow_udf(self.db, impl_name(self.id), self._udf, ["FLOAT[]"] * len(args), SCORE_TYPE)
        create_macro(self.db, self.id, args, udf_call(impl_name(self.id), *(f"CAST({a} AS FLOAT[])" for a in args)))

    def _udf(self, *columns: pa.Array) -> pa.Array:
        n = len(columns[0])
        valid = np.ones(n, dtype=bool)
        for col in columns:
            if col.null_count:
                valid &= ~col.is_null().to_numpy(zero_copy_only=False)
        labels = self.labels
        proba = np.zeros((n, len(labels)))
        if valid.any():
            present = np.flatnonzero(valid)
            subset = list(columns) if valid.all() else [col.filter(pa.array(valid)) for col in columns]
            sub_proba, scored = self.predict_proba(subset)
            proba[present] = sub_proba
            valid[present[~scored]] = False
        return score_array(proba, labels, valid)

    @property
    def labels(self) -> list[str]:
        return [str(c) for c in self.model.classes_]

    def predict_proba(self, columns: list[pa.Array]) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities for whole columns at once (one batched model call), and which rows were scored.

        A row that cannot be scored (unreadable or undecodable image, NaN/inf features, wrong width) is recorded
        in the statement's error sink and left unscored (zeros, `scored` False); without a sink it raises."""
        if self.input_kind == "images":
            X, scored = self._image_inputs(columns[0])
        else:
            X, scored = self._feature_inputs(columns)
        out = np.zeros((len(scored), len(self.labels)))
        if scored.any():
            out[scored] = self.model.predict_proba(X)
        return out, scored

    def _row_failed(self, item: str, error: VisionDBError) -> None:
        """Record a row that cannot be scored; without an error sink (a plain SELECT, a REST call) raise, naming it."""
        fail_row(self.id, item, error)

    def _image_inputs(self, column: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """Encoded bytes of the rows that can be scored, and a mask of those rows; an image that cannot be read
        or decoded is reported by its URI."""
        from ..storage.images import ref_from_json

        refs = [ref_from_json(t) for t in column.to_pylist()]
        X = np.empty(len(refs), dtype=object)
        for i, ref in enumerate(refs):
            try:
                assert ref is not None
                X[i] = self.db.read_ref(ref)[0]
            except VisionDBError as exc:
                self._row_failed(ref.label if ref else "<null>", exc)
                X[i] = None
        read = np.flatnonzero([x is not None for x in X])
        check = getattr(self.model, "undecodable", None)
        failures = check(X[read]) if check is not None and len(read) else {}
        for pos, exc in failures.items():
            i = int(read[pos])
            self._row_failed(refs[i].label, ImageDecodeError(exc.details.get("reason", exc.message), uri=refs[i].label))
            X[i] = None
        scored = np.asarray([x is not None for x in X], dtype=bool)
        return X[scored], scored

    def _feature_inputs(self, columns: list[pa.Array]) -> tuple[list[np.ndarray] | np.ndarray, np.ndarray]:
        """The model input for the rows that fit it, and a mask of those rows; rows of another width than the
        model's `featureDims` or with NaN/inf values are reported one by one (every row wrong: a statement error)."""
        arrays = [col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col for col in columns]
        names = self.input_names()
        expected = self.model_config.get("featureDims") or []
        ok = np.ones(len(arrays[0]), dtype=bool)
        for i, arr in enumerate(arrays):
            lengths = pa.compute.list_value_length(arr).to_numpy(zero_copy_only=False)
            want = expected[i] if i < len(expected) else (int(lengths[0]) if len(lengths) else 0)
            wrong = lengths != want
            if len(wrong) and wrong.all():
                raise VisionDBError(
                    f"{self.id}: input {i} has {int(lengths[0])} features but the model was trained on {want}"
                )
            for r in np.flatnonzero(wrong & ok):
                self._row_failed(feature_item(names[i], arr[int(r)].as_py()), VisionDBError(
                    f"{names[i]} has {int(lengths[r])} values but the model was trained on {want}"))
            ok &= ~wrong
        mats = [list_column_matrix(arr.filter(pa.array(ok)), name) for arr, name in zip(arrays, names)]
        finite = np.ones(int(ok.sum()), dtype=bool)
        for i, m in enumerate(mats):
            bad = ~np.isfinite(m).all(axis=1)
            for r in np.flatnonzero(bad & finite):
                self._row_failed(feature_item(names[i], m[r].tolist()),
                                 VisionDBError(f"{names[i]} has NaN or infinite values"))
            finite &= ~bad
        rows = np.flatnonzero(ok)
        ok[rows[~finite]] = False
        mats = [m[finite] for m in mats]
        return (mats if self.input_kind == "feature_list" else mats[0]), ok


def feature_item(name: str, values: list[float]) -> str:
    """How a feature row is named in errors (the UDF sees no row name): its input name and leading values."""
    shown = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values[:4])
    return f"{name} [{shown}{', ...' if len(values) > 4 else ''}] ({len(values)} values)"


def score_array(proba: np.ndarray, labels: list[str], valid: np.ndarray) -> pa.Array:
    """STRUCT(label, scores MAP) rows from a probability matrix; invalid rows are NULL."""
    n, k = proba.shape
    top = np.asarray(labels, dtype=object)[proba.argmax(axis=1)] if k else np.array([None] * n)
    offsets = pa.array(np.arange(0, n * k + 1, k, dtype=np.int32))
    scores = pa.MapArray.from_arrays(offsets, pa.array(labels * n, pa.string()), pa.array(proba.ravel(), pa.float64()))
    return pa.StructArray.from_arrays(
        [pa.array(top.tolist(), pa.string()), scores], names=["label", "scores"], mask=pa.array(~valid)
    )
