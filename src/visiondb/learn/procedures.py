"""Learning procedures: `classifier.experiment`, `classifier.train` and `classifier.predict` (MLDB names)."""
from __future__ import annotations

from typing import Any, Literal

import duckdb
import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict

from ..core.config import Params
from ..core.entities import Procedure, quote_ident
from ..core.outputs import OutputDataset
from ..core.registry import PROCEDURE_TYPES
from ..core.runs import RunContext
from ..errors import ConfigError, TrainingError
from ..sql.statements import require_one_statement
from ..sql.udf import statement_error
from .inputs import content_hashes, feature_matrix, image_bytes, list_column_matrix, row_names
from .packages import export_model, package_target


class DatasetFold(BaseModel):
    """MLDB's explicit fold: SQL conditions choosing the training and testing rows of `inputData`."""

    model_config = ConfigDict(extra="forbid")
    trainingWhere: str = "true"
    testingWhere: str = "true"


class TrainingParams(Params):
    inputData: str
    algorithm: str = "logistic_regression"
    configuration: dict[str, Any] = {}
    mode: Literal["categorical", "boolean"] = "categorical"
    randomSeed: int = 0
    classWeight: Literal["balanced"] | None = None
    dropMissingLabels: bool = False


class ExperimentParams(TrainingParams):
    experimentName: str
    testFraction: float = 0.5
    kfold: int | None = None
    datasetFolds: list[DatasetFold] | None = None
    testingDataOverride: str | None = None
    modelFileUrlPattern: str | None = None  # write a .vdbm package per fold; `$fold` and `$runid` are substituted


class TrainParams(TrainingParams):
    functionName: str
    modelFileUrl: str | None = None


class TrainingData:
    """Inputs of one training query: X in the algorithm's input kind, labels, row names and content hashes."""

    def __init__(
        self, db: Any, table: pa.Table, algorithm: str, configuration: dict, mode: str, rows: list[str] | None = None
    ) -> None:
        """`rows`: manifest ids of the table's rows (default its `_rowName`s, else positions)."""
        from .algorithms.registry import get_algorithm

        self.table = table
        self.kind = get_algorithm(algorithm).input_kind
        if "label" not in table.column_names:
            raise TrainingError(f"inputData must yield a `label` column (columns: {table.column_names})", field="label")
        labels = table.column("label").to_pylist()
        if mode == "boolean":
            labels = [None if v is None else str(bool(v) if not isinstance(v, str) else v.lower() in ("1", "true", "yes")).lower() for v in labels]
        self.y = np.asarray([None if v is None else str(v) for v in labels], dtype=object)
        if self.kind == "images":
            column = "features" if "features" in table.column_names else "image"
            if column not in table.column_names:
                raise TrainingError("image algorithms need a `features` or `image` column with images or URIs", field="features")
            self.X: Any = image_bytes(db, table.column(column).to_pylist())
            self.inputs = [column]
            self.dims: list[int] = []
        elif self.kind == "feature_list":
            learners = configuration.get("baseLearners") or []
            if not learners:
                raise ConfigError("stacking needs configuration.baseLearners", field="configuration.baseLearners")
            self.inputs = [bl["features"] for bl in learners]
            self.X = [list_column_matrix(self._column(c), c) for c in self.inputs]
            self.dims = [m.shape[1] for m in self.X]
        else:
            self.X = feature_matrix(table)
            self.inputs = ["features"]
            self.dims = [self.X.shape[1]]
        self.rows = rows if rows is not None else row_names(table)
        # how errors name rows: by id when the rows have names, by position otherwise
        self.row_labels = self.rows if rows is not None or "_rowName" in table.column_names else None
        self.hashes = content_hashes(table, self.X)

    def _column(self, name: str) -> pa.Array:
        if name not in self.table.column_names:
            raise TrainingError(f"inputData has no column {name!r} (columns: {self.table.column_names})", field=name)
        return self.table.column(name).combine_chunks()

    def take(self, idx: np.ndarray) -> Any:
        return [m[idx] for m in self.X] if isinstance(self.X, list) else self.X[idx]


def run_query(db: Any, query: str, field: str) -> pa.Table:
    """The rows of `query` (one statement) as Arrow; errors name `field`."""
    require_one_statement(db, query, field)
    try:
        return db.cursor().execute(query).to_arrow_table()
    except duckdb.Error as exc:
        raise statement_error(exc, f"{field}: {exc}", field=field) from None


def with_testing_rows(db: Any, table: pa.Table, query: str) -> tuple[pa.Table, list[str]]:
    """`table` followed by the rows of the `testingDataOverride` query, and source-qualified row ids
    (`train:<name>`, `test:<name>`) so that a `_rowName` used in both tables stays unambiguous in the manifest."""
    test = run_query(db, query, "testingDataOverride")
    missing = [c for c in table.column_names if c not in test.column_names]
    if missing:
        raise TrainingError(f"testingDataOverride lacks column(s) {missing} of inputData", field="testingDataOverride")
    combined = pa.concat_tables([table, test.select(table.column_names).cast(table.schema)])
    return combined, [f"train:{r}" for r in row_names(table)] + [f"test:{r}" for r in row_names(test)]


def model_config(p: TrainingParams, data: TrainingData, labels: list[str], procedure: dict) -> dict:
    return {
        "algorithm": p.algorithm,
        "params": p.configuration,
        "labels": labels,
        "inputKind": data.kind,
        "inputs": data.inputs,
        "featureDims": data.dims,
        "mode": p.mode,
        "procedure": procedure,
    }


def save_and_register(
    db: Any, name: str, model: Any, p: TrainingParams, data: TrainingData, train_idx: np.ndarray,
    test_idx: np.ndarray | None, metrics: dict, procedure: dict,
) -> int:
    """Persist a fitted model as the next version of `name` and (re)point the SQL function `name` at it."""
    from .model_store import save_model
    from .package import make_manifest
    from .persistence import dump_model

    blob, fmt = dump_model(model)
    labels = [str(c) for c in model.classes_]
    manifest = make_manifest(
        [data.rows[i] for i in train_idx],
        [data.hashes[i] for i in train_idx],
        extra={"testRows": [data.rows[i] for i in test_idx] if test_idx is not None else []},
    )
    version = save_model(
        db, name, algorithm=p.algorithm, config=model_config(p, data, labels, procedure), manifest=manifest,
        metrics=metrics, model_bytes=blob, model_format=fmt,
    )
    db.functions.put(name, {"type": "classifier", "params": {"modelName": name, "version": version}})
    return version


@PROCEDURE_TYPES.register("classifier.experiment")
class ClassifierExperiment(Procedure):
    """Train and test a classifier on folds; register `<experimentName>_scorer_<fold>` per fold."""

    Params = ExperimentParams
    params: ExperimentParams

    def run(self, ctx: RunContext) -> dict:
        from .experiment import run_experiment

        p, db = self.params, self.db
        db.functions.check_id(f"{p.experimentName}_scorer_0")
        if p.datasetFolds and p.testingDataOverride:
            raise ConfigError("params.datasetFolds and params.testingDataOverride cannot be combined: give the test"
                              " rows as each fold's testingWhere, or drop datasetFolds", field="params.datasetFolds")
        if p.modelFileUrlPattern:  # refused targets fail now, not after every fold has trained
            package_target(db, p.modelFileUrlPattern.replace("$fold", "0").replace("$runid", ctx.run_id),
                           "params.modelFileUrlPattern")
        query, fold_columns = self._query()
        table = run_query(db, query, "inputData")
        folds: Any = None
        rows = None
        if p.testingDataOverride:
            n_train = table.num_rows
            table, rows = with_testing_rows(db, table, p.testingDataOverride)
            folds = [(np.arange(n_train), np.arange(n_train, table.num_rows))]
        elif fold_columns:
            folds = [self._fold_indices(table, tr, te) for tr, te in fold_columns]
            table = table.drop_columns([c for pair in fold_columns for c in pair])
        elif p.kfold:
            folds = {"kfold": p.kfold}
        else:
            folds = {"test_fraction": p.testFraction}
        ctx.set_progress(0, None, phase="reading inputData")
        data = TrainingData(db, table, p.algorithm, p.configuration, p.mode, rows)
        ctx.set_progress(0, len(folds) if isinstance(folds, list) else (p.kfold or 1), phase="training")
        history: list[dict] = []

        def on_progress(event: dict) -> None:
            history.append(event)
            ctx.set_progress(event.get("fold", 0), None, phase="training", last=event)

        result = run_experiment(
            data.X, data.y, algorithm=p.algorithm, params=p.configuration, folds=folds, seed=p.randomSeed,
            on_progress=on_progress, class_weight=p.classWeight, drop_missing_labels=p.dropMissingLabels,
            row_names=data.row_labels,
        )
        procedure = {"type": self.type_name, "params": p.model_dump(mode="json")}
        out_folds = []
        for k, fold in enumerate(result.folds):
            name = f"{p.experimentName}_scorer_{k}"
            version = save_and_register(
                db, name, fold.model, p, data, fold.train_index, fold.test_index, fold.resultsTest, procedure
            )
            entry: dict[str, Any] = {
                "fold": k,
                "functionName": name,
                "modelName": name,
                "modelVersion": version,
                "resultsTest": fold.resultsTest,
                "trainRows": int(len(fold.train_index)),
                "testRows": int(len(fold.test_index)),
                "fitSeconds": fold.fit_seconds,
            }
            if fold.history:
                entry["history"] = fold.history
            if p.modelFileUrlPattern:
                path = p.modelFileUrlPattern.replace("$fold", str(k)).replace("$runid", ctx.run_id)
                export_model(db, f"{name}:{version}", path, "params.modelFileUrlPattern")
                entry["modelFileUrl"] = path
            out_folds.append(entry)
        return {"folds": out_folds, "aggregatedTest": result.aggregatedTest, "labels": result.labels}

    def _query(self) -> tuple[str, list[tuple[str, str]]]:
        p = self.params
        if not p.datasetFolds:
            return p.inputData, []
        parts, columns = [], []
        for k, fold in enumerate(p.datasetFolds):
            tr, te = f"__vdb_train_{k}", f"__vdb_test_{k}"
            parts.append(f"({fold.trainingWhere}) AS {tr}, ({fold.testingWhere}) AS {te}")
            columns.append((tr, te))
        return f"SELECT *, {', '.join(parts)} FROM ({p.inputData}) AS __vdb_input", columns

    @staticmethod
    def _fold_indices(table: pa.Table, tr: str, te: str) -> tuple[np.ndarray, np.ndarray]:
        train = np.asarray(table.column(tr).to_pylist(), dtype=object)
        test = np.asarray(table.column(te).to_pylist(), dtype=object)
        return np.nonzero(train == True)[0], np.nonzero(test == True)[0]  # noqa: E712 (NULL counts as false)


@PROCEDURE_TYPES.register("classifier.train")
class ClassifierTrain(Procedure):
    """Train on every row of `inputData` and register the SQL function `functionName`."""

    Params = TrainParams
    params: TrainParams

    def run(self, ctx: RunContext) -> dict:
        from .experiment import prepare_inputs
        from .algorithms.registry import make_estimator

        p, db = self.params, self.db
        db.functions.check_id(p.functionName)
        if p.modelFileUrl:
            package_target(db, p.modelFileUrl, "params.modelFileUrl")  # refused before training, not after
        data = TrainingData(db, run_query(db, p.inputData, "inputData"), p.algorithm, p.configuration, p.mode)
        model = make_estimator(p.algorithm, p.configuration, seed=p.randomSeed, class_weight=p.classWeight)
        X, y, kept = prepare_inputs(
            p.algorithm, data.X, data.y, drop_missing_labels=p.dropMissingLabels, estimator=model,
            row_names=data.row_labels,
        )
        if len(np.unique(y)) < 2:
            raise TrainingError(f"training data holds a single class {y[0]!r}; a classifier needs two or more")
        if hasattr(model, "on_epoch"):
            model.on_epoch = lambda epoch, logs: ctx.set_progress(epoch, None, phase="training", last=logs)
        model.fit(X, y)
        procedure = {"type": self.type_name, "params": p.model_dump(mode="json")}
        version = save_and_register(db, p.functionName, model, p, data, kept, None, {}, procedure)
        if p.modelFileUrl:
            export_model(db, f"{p.functionName}:{version}", p.modelFileUrl, "params.modelFileUrl")
        return {"functionName": p.functionName, "modelVersion": version, "trainRows": int(len(kept)),
                "labels": [str(c) for c in model.classes_], "history": getattr(model, "history", None)}


class PredictParams(Params):
    inputData: str  # a SELECT yielding the scorer's inputs (e.g. `features` or `image`), `_rowName`, optional `label`
    functionName: str
    outputDataset: OutputDataset
    inputs: list[str] | None = None  # columns passed to the scorer, in order (default: the model's own inputs)


@PROCEDURE_TYPES.register("classifier.predict")
class ClassifierPredict(Procedure):
    """Batch predictions into a table: top label, its probability and every class's probability per row."""

    Params = PredictParams
    params: PredictParams

    def run(self, ctx: RunContext) -> dict:
        from ..sql.transform import Transform, TransformParams

        p, db = self.params, self.db
        scorer = db.functions.instance(p.functionName)
        inputs = p.inputs or scorer.input_names()  # type: ignore[attr-defined]
        for name in inputs:
            if not name.isidentifier():
                raise ConfigError(f"input column {name!r} is not a plain column name", field="params.inputs")
        labels = scorer.labels  # type: ignore[attr-defined]
        per_class = ", ".join(
            f"__s.scores[{_sql_string(label)}] AS {quote_ident('p_' + label)}" for label in labels
        )
        args = ", ".join(quote_ident(c) for c in inputs)
        query = (
            f"SELECT * EXCLUDE (__s, {', '.join(quote_ident(c) for c in inputs)}), __s.label AS predicted,"
            f" __s.scores[__s.label] AS probability, __s.scores AS scores, {per_class}"
            f" FROM (SELECT *, {p.functionName}({args}) AS __s FROM ({p.inputData}) AS __vdb_in) AS __vdb_scored"
        )
        transform = Transform(db, self.id, TransformParams(inputData=query, outputDataset=p.outputDataset))
        status = transform.run(ctx)
        out = p.outputDataset.id
        cols = [c["name"] for c in db.table_status(out)["columns"]]
        if "label" in cols:
            row = db.cursor().execute(
                f"SELECT avg(CASE WHEN predicted = label THEN 1.0 ELSE 0.0 END), count(*) FROM {quote_ident(out)}"
                " WHERE label IS NOT NULL"
            ).fetchall()[0]
            status["accuracy"] = row[0]
        status["labels"] = labels
        return status


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
