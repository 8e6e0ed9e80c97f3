"""Base classes for the three entity kinds and the collections hanging off a connection (`db.datasets`, ...)."""
from __future__ import annotations

import logging
import re
import threading
import traceback
import uuid
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

import duckdb

from ..errors import ConfigError, ConflictError, NotFoundError, QueryError, VisionDBError
from ..sql.names import builtin_function_names, reserved_by_visiondb, sql_keywords
from .config import EntityConfig, Params, parse_config, parse_params
from .registry import DATASET_TYPES, FUNCTION_TYPES, PROCEDURE_TYPES, Registry
from .runs import RunContext, new_run_record, timestamp

if TYPE_CHECKING:
    from ..engine import VisionDB

log = logging.getLogger("visiondb")
SQL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
ENTITY_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")


class Entity:
    """An instance of a registered type, built from validated params."""

    type_name: ClassVar[str] = ""
    Params: ClassVar[type[Params]] = Params
    kind: ClassVar[str] = ""

    def __init__(self, db: "VisionDB", id: str, params: Params) -> None:
        self.db, self.id, self.params = db, id, params

    def status(self) -> dict:
        return {}


class Dataset(Entity):
    """A DuckDB table known to the catalog."""

    kind = "dataset"

    def create(self) -> None:
        """Create the backing table if the type defines its columns; procedures create it otherwise."""

    def drop(self) -> None:
        """Drop the backing table or view (whichever it is); a refusal by DuckDB is a QueryError."""
        kind = self.object_kind()
        if kind is None:
            return
        try:
            self.db.cursor().execute(f"DROP {kind} IF EXISTS {quote_ident(self.id)}")
        except duckdb.Error as exc:
            raise QueryError(f"dataset {self.id!r}: cannot drop its {kind.lower()}: {exc}", dataset=self.id) from None

    def object_kind(self) -> str | None:
        """'VIEW' or 'TABLE' for the object of the main schema DuckDB resolves this dataset's id to, else None."""
        row = self.db.cursor().execute(
            "SELECT 'VIEW' FROM duckdb_views() WHERE lower(view_name) = lower(?) AND schema_name = 'main'"
            " AND NOT internal AND database_name = current_database()"
            " UNION ALL SELECT 'TABLE' FROM duckdb_tables() WHERE lower(table_name) = lower(?)"
            " AND schema_name = 'main' AND database_name = current_database()",
            [self.id, self.id],
        ).fetchall()
        return row[0][0] if row else None

    def status(self) -> dict:
        return self.db.table_status(self.id)


class Function(Entity):
    """A pure function callable in SQL by its id and applied over REST with `{"input": {...}}`."""

    kind = "function"

    def register(self) -> None:
        """Make the function callable in SQL on the database connection."""
        raise NotImplementedError

    def unregister(self) -> None:
        from ..sql.udf import drop_function

        drop_function(self.db, self.id)

    def apply(self, input: Mapping[str, Any]) -> dict:
        """Apply to one named input; the default binds the inputs as SQL parameters of `id(...)`."""
        from ..sql.udf import apply_via_sql

        return apply_via_sql(self, input)

    def input_names(self) -> list[str]:
        return ["x"]

    def output_name(self) -> str:
        return "output"


class Procedure(Entity):
    """A job; each execution is a run with state, progress, timings, results and per-row errors."""

    kind = "procedure"

    def run(self, ctx: RunContext) -> dict:
        raise NotImplementedError


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class Collection:
    """Common put/get/list/delete over the catalog for one entity kind."""

    kind: ClassVar[str] = ""
    registry: ClassVar[Registry]
    id_pattern: ClassVar[re.Pattern] = SQL_NAME

    def __init__(self, db: "VisionDB") -> None:
        self.db = db
        self._instances: dict[str, Entity] = {}
        self._lock = threading.RLock()

    # construction ------------------------------------------------------------
    def build(self, id: str, config: Mapping[str, Any] | str) -> tuple[EntityConfig, Entity]:
        cfg = parse_config(config, self.kind)
        cls = self.registry.get(cfg.type)
        params = parse_params(cls.Params, cfg.params, cfg.type)
        return cfg, cls(self.db, id, params)

    def check_id(self, id: str) -> None:
        if not isinstance(id, str) or not self.id_pattern.match(id):
            raise ConfigError(
                f"invalid {self.kind} id {id!r}: use letters, digits and underscores, not starting with a digit",
                field="id",
            )

    def check_case_conflict(self, id: str) -> None:
        """Refuse (409) an id that differs only in case from an existing one: DuckDB names ignore case, so
        `D` would replace or drop the table or macro of `d`."""
        conflicts = self.case_conflicts(id)
        if conflicts:
            other = conflicts[0]
            raise ConflictError(
                f"{self.kind} id {id!r} differs only in case from the existing {other!r}; DuckDB names are"
                f" case-insensitive, so use {other!r} or another id", field="id", id=id, existing=other,
            )

    def case_conflicts(self, id: str) -> list[str]:
        """Existing entity ids of this kind equal to `id` but for case."""
        return [e for e in self.list() if e != id and e.lower() == id.lower()]

    def put(self, id: str, config: Mapping[str, Any] | str) -> dict:
        self.check_id(id)
        with self._lock:
            self.check_case_conflict(id)
            cfg, entity = self.build(id, config)
            replacing = id in self._instances or self.db.catalog.get_entity(self.kind, id) is not None
            previous = self._instances.get(id)
            if replacing:
                self._remove_instance(id)
            try:
                self.activate(entity)
            except BaseException:
                if replacing:  # a failed replacement leaves the old entity working
                    self._restore(id, previous)
                raise
            self.db.catalog.put_entity(self.kind, id, cfg.type, cfg.params)
            self._instances[id] = entity
        return self.describe(id)

    def _restore(self, id: str, previous: Entity | None) -> None:
        """Put back the live instance a failed replacement removed."""
        if previous is not None:
            self._instances[id] = previous

    def post(self, config: Mapping[str, Any] | str) -> dict:
        cfg = parse_config(config, self.kind)
        new_id = cfg.id or f"{cfg.type.replace('.', '_')}_{uuid.uuid4().hex[:10]}"
        return self.put(new_id, config if cfg.id is None else {"type": cfg.type, "params": cfg.params})

    def activate(self, entity: Entity) -> None:
        """Hook run when an entity is created or reloaded."""

    def loaded(self, id: str) -> Entity | None:
        """The live instance when already built (never blocks, never reads the catalog): the serving fast path."""
        return self._instances.get(id)

    def instance(self, id: str) -> Entity:
        with self._lock:
            if id in self._instances:
                return self._instances[id]
            found = self.db.catalog.get_entity(self.kind, id)
            if found is None:
                raise NotFoundError(f"{self.kind} {id!r} does not exist", kind=self.kind, id=id)
            type_name, params, _ = found
            _, entity = self.build(id, {"type": type_name, "params": params})
            self._instances[id] = entity
            return entity

    def get(self, id: str) -> dict:
        return self.describe(id)

    def describe(self, id: str) -> dict:
        found = self.db.catalog.get_entity(self.kind, id)
        if found is None:
            raise NotFoundError(f"{self.kind} {id!r} does not exist", kind=self.kind, id=id)
        type_name, params, created = found
        entity = self.instance(id)
        return {
            "id": id,
            "type": type_name,
            "config": {"id": id, "type": type_name, "params": params},
            "state": "ok",
            "created": created.isoformat() if created else None,
            "status": entity.status(),
        }

    def list(self) -> list[str]:
        return self.db.catalog.list_entities(self.kind)

    def exists(self, id: str) -> bool:
        return self.db.catalog.get_entity(self.kind, id) is not None

    def delete(self, id: str) -> None:
        with self._lock:
            if not self.exists(id):
                raise NotFoundError(f"{self.kind} {id!r} does not exist", kind=self.kind, id=id)
            self._remove_instance(id, dropping=True)
            self.db.catalog.delete_entity(self.kind, id)

    def _remove_instance(self, id: str, dropping: bool = False) -> None:
        self._instances.pop(id, None)


class DatasetCollection(Collection):
    kind = "dataset"
    registry = DATASET_TYPES

    def activate(self, entity: Entity) -> None:
        assert isinstance(entity, Dataset)
        entity.create()

    def _remove_instance(self, id: str, dropping: bool = False) -> None:
        sharing = self.case_conflicts(id) if dropping else []
        if sharing:  # an older catalog may hold `d` and `D`: both name one table
            log.warning("dataset %r shares its table with %s: the table is kept", id, sharing)
            dropping = False
        if dropping:
            try:
                self.instance(id).drop()  # type: ignore[attr-defined]
            except NotFoundError:
                pass
        super()._remove_instance(id, dropping)

    def register_output(self, id: str, type_name: str = "tabular", params: dict | None = None) -> None:
        """Record a table written by a procedure as a dataset entity (idempotent)."""
        self.check_id(id)
        if not self.exists(id):  # an existing id passed this check when it was first registered
            self.check_case_conflict(id)
            self.db.catalog.put_entity(self.kind, id, type_name, params or {})
        self._instances.pop(id, None)


class FunctionCollection(Collection):
    kind = "function"
    registry = FUNCTION_TYPES

    def check_id(self, id: str) -> None:
        """Also refuse the names DuckDB gives a meaning (see `sql.names`): a function is a macro called as `id(...)`;
        the parser reads a keyword as its own syntax (`left`, `row`) or rejects it (`select`), and a built-in's
        name (`lower`, `range`) would replace DuckDB's function in every query, visiondb's own included."""
        super().check_id(id)
        if reserved_by_visiondb(id):
            raise ConfigError(f"invalid function id {id!r}: visiondb uses that name for its own SQL functions; "
                              "choose another id", field="id")
        if id.lower() in sql_keywords():
            raise ConfigError(f"invalid function id {id!r}: it is a SQL keyword, which DuckDB cannot call as a "
                              "function; choose another id", field="id")
        if id.lower() in builtin_function_names():
            raise ConfigError(f"invalid function id {id!r}: DuckDB has a built-in function of that name, which the "
                              "function would replace in every query; choose another id", field="id")

    def activate(self, entity: Entity) -> None:
        assert isinstance(entity, Function)
        entity.register()

    def _remove_instance(self, id: str, dropping: bool = False) -> None:
        entity = self._instances.pop(id, None)
        if entity is not None:
            entity.unregister()  # type: ignore[attr-defined]

    def _restore(self, id: str, previous: Entity | None) -> None:
        """Re-register the function a failed replacement unregistered (rebuilt from the catalog if needed)."""
        try:
            if previous is None:
                found = self.db.catalog.get_entity(self.kind, id)
                if found is None:
                    return
                _, previous = self.build(id, {"type": found[0], "params": found[1]})
            self.activate(previous)
            self._instances[id] = previous
        except Exception:  # noqa: BLE001 - the replacement's own error is the one to report
            log.exception("function %r could not be restored after a failed replacement", id)

    def load_all(self) -> list[dict]:
        """Re-register every catalogued function on a newly opened connection; report failures."""
        problems = []
        for id, type_name, params in self.db.catalog.iter_entities(self.kind):
            try:
                _, entity = self.build(id, {"type": type_name, "params": params})
                self.activate(entity)
                self._instances[id] = entity
            except VisionDBError as exc:
                problems.append({"function": id, "error": exc.message})
        return problems

    def apply(self, id: str, input: Mapping[str, Any] | None = None) -> dict:
        if input is not None and not isinstance(input, Mapping):
            raise ConfigError("function input must be an object of named values", field="input")
        return self.instance(id).apply(dict(input or {}))  # type: ignore[attr-defined]


class ProcedureCollection(Collection):
    kind = "procedure"
    registry = PROCEDURE_TYPES
    id_pattern = ENTITY_ID

    def __init__(self, db: "VisionDB") -> None:
        super().__init__(db)
        self._live: dict[tuple[str, str], RunContext] = {}  # runs in progress, polled while they update

    def case_conflicts(self, id: str) -> list[str]:
        """Procedures map to no DuckDB object, so ids differing in case do not collide."""
        return []

    def put(self, id: str, config: Mapping[str, Any] | str, *, run: bool | None = None) -> dict:
        cfg = parse_config(config, self.kind)
        params = dict(cfg.params)
        run_on_creation = params.pop("runOnCreation", True)
        if not isinstance(run_on_creation, bool):
            raise ConfigError(
                f"params.runOnCreation must be a JSON boolean (true or false), got {run_on_creation!r}",
                field="params.runOnCreation",
            )
        record = super().put(id, {"type": cfg.type, "params": params})
        if run if run is not None else run_on_creation:
            first = self.run(id)
            record["status"] = {"firstRun": first}
        return record

    def build(self, id: str, config: Mapping[str, Any] | str) -> tuple[EntityConfig, Entity]:
        cfg = parse_config(config, self.kind)
        cfg.params.pop("runOnCreation", None)
        return super().build(id, cfg.model_dump(exclude_none=True))

    def _remove_instance(self, id: str, dropping: bool = False) -> None:
        super()._remove_instance(id, dropping)
        if dropping:
            self.db.catalog.delete_runs(id)

    def run(self, id: str, params: Mapping[str, Any] | None = None, *, raise_errors: bool = True) -> dict:
        """Run synchronously and return the run record; a failed run raises unless raise_errors=False."""
        record, ctx = self.start(id, params)
        return self.execute(ctx, raise_errors=raise_errors)

    def start(self, id: str, params: Mapping[str, Any] | None = None) -> tuple[dict, RunContext]:
        """Create a pending run (its parameters may override the procedure's own)."""
        procedure = self.instance(id)
        if params:
            found = self.db.catalog.get_entity(self.kind, id)
            assert found is not None
            merged = {**found[1], **dict(params)}
            _, procedure = self.build(id, {"type": found[0], "params": merged})
        run_id = f"{timestamp().replace(':', '').replace('-', '')[:15]}-{uuid.uuid4().hex[:8]}"
        record = new_run_record(id, run_id, dict(params or {}))
        ctx = RunContext(self.db, id, run_id, record)
        ctx.procedure = procedure  # type: ignore[attr-defined]
        self._live[(id, run_id)] = ctx
        self.db.catalog.save_run(record, new=True)
        return record, ctx

    def execute(self, ctx: RunContext, *, raise_errors: bool = True) -> dict:
        record = ctx.record
        procedure: Procedure = ctx.procedure  # type: ignore[attr-defined]
        record["state"] = "executing"
        record["runStarted"] = timestamp()
        failure: VisionDBError | None = None
        try:
            status = procedure.run(ctx)
            record["status"] = status
            record["state"] = "finished"
        except VisionDBError as exc:
            failure = exc
            record["state"] = "error"
            record["status"] = {"error": exc.message, "details": dict(exc.details)}
        except Exception as exc:  # keep the run record truthful, whatever broke
            failure = VisionDBError(f"procedure {ctx.procedure_id!r} failed: {type(exc).__name__}: {exc}")
            failure.http_code = 500
            record["state"] = "error"
            record["status"] = {"error": failure.message, "traceback": traceback.format_exc(limit=8)}
        finally:
            record["runFinished"] = timestamp()
            self.db.catalog.save_run(record)
            self._live.pop((ctx.procedure_id, ctx.run_id), None)
        if failure is not None and raise_errors:
            failure.details["run"] = record
            raise failure
        return record

    def runs(self, id: str) -> list[dict]:
        if not self.exists(id):
            raise NotFoundError(f"procedure {id!r} does not exist", kind="procedure", id=id)
        return self.db.catalog.load_runs(id)

    def get_run(self, id: str, run_id: str) -> dict:
        live = self._live.get((id, run_id))
        if live is not None:
            return live.snapshot()
        found = self.db.catalog.load_runs(id, run_id)
        if not found:
            raise NotFoundError(f"run {run_id!r} of procedure {id!r} does not exist", kind="run", id=run_id)
        return found[0]
