"""The `visiondb` command line: SQL, entities, runs, function application, models, the server and the demo."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

KINDS = {"dataset": "datasets", "function": "functions", "procedure": "procedures"}
ERROR_EXIT = 2
SIGPIPE_EXIT = 141  # 128 + SIGPIPE, what a shell reports for a writer whose reader closed the pipe


def main(argv: list[str] | None = None) -> int:
    """Run one command; argv None means this process's own command line (the console entry point)."""
    if argv is None:
        # only the entry point owns the process: a caller of main(argv) must not be re-executed
        from .models.allocator import ensure_tuned_malloc

        ensure_tuned_malloc(sys.argv)
    args = build_parser().parse_args(argv)
    import duckdb

    from .errors import VisionDBError
    from .sql.udf import statement_error

    args.open_dbs = []
    try:
        try:
            return int(args.handler(args) or 0)
        finally:
            for db in args.open_dbs:  # in-process callers may open the same file again
                db.close()
    except VisionDBError as exc:
        detail = {k: v for k, v in exc.details.items() if k != "run"}
        return fail(exc.message + (f"  {json.dumps(detail, default=str)}" if detail else ""))
    except BrokenPipeError:
        return closed_stdout()
    except OSError as exc:
        return fail(os_error_text(exc))
    except duckdb.Error as exc:
        return fail(statement_error(exc, str(exc)).message)  # a function's own error, or DuckDB's text
    except KeyboardInterrupt:
        return 130


def fail(message: str) -> int:
    """Print `error: message` on stderr and return the CLI's error exit code."""
    print(f"error: {message}", file=sys.stderr)
    return ERROR_EXIT


def closed_stdout() -> int:
    """The reader of our output went away (`visiondb ... | head`): stop quietly with SIGPIPE's shell status, and
    point stdout at /dev/null so the interpreter's final flush does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return SIGPIPE_EXIT


def os_error_text(exc: OSError) -> str:
    """'<reason>: <file>' for an OSError, naming the file when the error carries one."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    return f"{reason}: {exc.filename}" if exc.filename else reason


def port_number(text: str) -> int:
    """argparse type: a TCP port 0..65535 (0: any free port)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is out of range 0..65535")
    return port


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="visiondb", description="A machine-learning database for images.")
    parser.add_argument("--db", default=None, help="database file (default: in-memory; the demo uses its own)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("sql", help="run a SQL statement and print the result")
    p.add_argument("query")
    p.add_argument("--format", choices=["table", "json", "csv"], default="table")
    p.set_defaults(handler=cmd_sql)

    p = sub.add_parser("put", help="create or replace an entity from a config file or inline JSON")
    p.add_argument("kind", choices=sorted(KINDS))
    p.add_argument("id")
    p.add_argument("config", help="CONFIG.json path or inline JSON {\"type\": ..., \"params\": {...}}")
    p.set_defaults(handler=cmd_put)

    p = sub.add_parser("get", help="show an entity")
    p.add_argument("kind", choices=sorted(KINDS))
    p.add_argument("id")
    p.set_defaults(handler=cmd_get)

    p = sub.add_parser("list", help="list entity ids")
    p.add_argument("kind", choices=sorted(KINDS), nargs="?")
    p.set_defaults(handler=cmd_list)

    p = sub.add_parser("delete", help="delete an entity")
    p.add_argument("kind", choices=sorted(KINDS))
    p.add_argument("id")
    p.set_defaults(handler=cmd_delete)

    p = sub.add_parser("run", help="run a procedure again and print its run record")
    p.add_argument("id")
    p.add_argument("--params", default=None, help="JSON object overriding the procedure's params for this run")
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("apply", help="apply a function to a JSON input object")
    p.add_argument("function")
    p.add_argument("input", help="JSON object, e.g. '{\"url\": \"photo.jpg\"}'")
    p.set_defaults(handler=cmd_apply)

    p = sub.add_parser("model", help="model registry: list, export, import, retrain")
    msub = p.add_subparsers(dest="model_command", required=True)
    m = msub.add_parser("list", help="list registered models (latest version of each)")
    m.set_defaults(handler=cmd_model_list)
    m = msub.add_parser("export", help="write NAME[:VERSION] as one portable .vdbm package file")
    m.add_argument("name", help="NAME[:VERSION], e.g. cls_scorer_0")
    m.add_argument("path", help=".vdbm file to write")
    m.set_defaults(handler=cmd_model_export)
    m = msub.add_parser("import", help="verify a .vdbm package, store it in the registry, register its SQL function")
    m.add_argument("path", help=".vdbm file written by `model export`")
    m.set_defaults(handler=cmd_model_import)
    m = msub.add_parser("retrain", help="re-create a model from its manifest (same rows, algorithm, seed) and compare")
    m.add_argument("name", help="NAME[:VERSION], e.g. cls_scorer_0")
    m.set_defaults(handler=cmd_model_retrain)

    p = sub.add_parser("serve", help="serve the MLDB-compatible REST API")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=port_number, default=8080, help="TCP port 0..65535 (0: any free port)")
    p.add_argument("--token", default=None, help="bearer token required for writes (or env VISIONDB_TOKEN)")
    p.add_argument("--allow-root", action="append", default=[], help="folder REST imports may read (repeatable)")
    p.add_argument("--allow-fetch", action="append", default=[], help="IP or CIDR a fetch may reach though private")
    p.add_argument("--protect-reads", action="store_true", help="require the token for reads too")
    p.add_argument("--warm", action="append", default=[], help="function to load at start-up (repeatable)")
    p.add_argument("--max-batch", type=int, default=32, help="most requests one micro-batch holds")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="longest a request waits for a batch to fill")
    p.add_argument("--query-timeout", type=float, default=300.0, metavar="SECONDS",
                   help="longest a GET /v1/query statement runs before it is interrupted (answered 504)")
    p.set_defaults(handler=cmd_serve)

    p = sub.add_parser("demo", help="the MLDB car-brand workflow on the CC0 clothing photos")
    p.add_argument("--data", default=None,
                   help="clothing photos: a folder, labels CSV or archive URI (default: $VISIONDB_DEMO_DATA, else "
                        "../shared/datasets/clothing if present, else the dataset's public zip on GitHub)")
    p.add_argument("--serve", choices=["auto", "yes", "no"], default="auto",
                   help="serve the demo DB at the end (auto: until Ctrl-C on a terminal, else a self-check only)")
    p.add_argument("--port", type=port_number, default=8080, help="port for --serve (taken: a free one is used)")
    p.set_defaults(handler=cmd_demo)
    return parser


def open_db(args: argparse.Namespace, create: bool = False) -> Any:
    """Connect to --db (in memory when absent); a missing file is created only when `create` is set."""
    import visiondb

    from .errors import NotFoundError

    if args.db and args.db != ":memory:" and not create and not Path(args.db).exists():
        raise NotFoundError(f"database file not found: {args.db}")
    db = visiondb.connect(args.db)
    vars(args).setdefault("open_dbs", []).append(db)
    return db


def load_json(text: str, what: str) -> Any:
    """A JSON object given inline or as a file path."""
    from .core.config import json_object
    from .errors import ConfigError

    path = Path(text)
    if not text.lstrip().startswith("{") and path.exists():
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read {what} file {path}: {exc.strerror or exc}", field=what) from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{what} file {path} is not UTF-8 text: {exc.reason} at byte {exc.start}",
                              field=what) from exc
    return json_object(text, what, what, "{...}")


def emit(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def writes(sql: str) -> bool:
    """Whether `sql` is more than one read statement (the server's rule for its token; it may then start a new
    database file)."""
    import duckdb

    from .errors import QueryError
    from .sql.statements import is_read_only

    try:
        return not is_read_only(duckdb.connect(), sql)
    except QueryError:
        return False  # the database reports the syntax error


def cmd_sql(args: argparse.Namespace) -> int:
    result = open_db(args, create=writes(args.query)).sql(args.query)
    if not result.columns:
        return 0
    df = result.df()
    if args.format == "json":
        print(df.to_json(orient="records", default_handler=str))
    elif args.format == "csv":
        print(df.to_csv(index=False), end="")
    else:
        import pandas as pd

        with pd.option_context("display.max_rows", 200, "display.max_columns", 50, "display.width", 160,
                               "display.max_colwidth", 60):
            print(df.to_string(index=False))
    return 0


def cmd_put(args: argparse.Namespace) -> int:
    db = open_db(args, create=True)
    emit(getattr(db, KINDS[args.kind]).put(args.id, load_json(args.config, "config")))
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    emit(getattr(open_db(args), KINDS[args.kind]).get(args.id))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    db = open_db(args)
    kinds = [args.kind] if args.kind else sorted(KINDS)
    emit({KINDS[k]: getattr(db, KINDS[k]).list() for k in kinds})
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    getattr(open_db(args), KINDS[args.kind]).delete(args.id)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    params = load_json(args.params, "params") if args.params else None
    emit(open_db(args).procedures.run(args.id, params))
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    emit({"output": open_db(args).functions.apply(args.function, load_json(args.input, "input"))})
    return 0


def cmd_model_list(args: argparse.Namespace) -> int:
    from .learn.model_store import list_models

    emit(list_models(open_db(args)))
    return 0


def cmd_model_export(args: argparse.Namespace) -> int:
    from .learn.packages import export_model

    print(export_model(open_db(args), args.name, args.path))
    return 0


def cmd_model_import(args: argparse.Namespace) -> int:
    from .errors import ConfigError
    from .learn.packages import import_package

    if Path(args.path).is_dir():
        raise ConfigError(f"model package {args.path} is a directory; expected a .vdbm file written by `model export`")
    name, version = import_package(open_db(args, create=True), args.path)
    print(f"imported {name}:{version}; SQL function {name}(...) is ready")
    return 0


def cmd_model_retrain(args: argparse.Namespace) -> int:
    from .learn.packages import retrain_model

    emit(retrain_model(open_db(args), args.name))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import os

    from .serve.server import serve

    if not args.db:
        return fail("serve needs --db FILE")
    serve(
        args.db, args.host, args.port, token=args.token or os.environ.get("VISIONDB_TOKEN"),
        allow_roots=args.allow_root, allow_fetch=args.allow_fetch, protect_reads=args.protect_reads,
        warm=args.warm, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, query_timeout_s=args.query_timeout,
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(db_path=args.db or "visiondb-demo.duckdb", data=args.data, serve=args.serve, port=args.port)


if __name__ == "__main__":
    sys.exit(main())
