"""The CLI in-process and as the console entry point: no re-exec of a caller, clear errors, no stray databases."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.paths import REPO_ROOT
from visiondb.cli import main
from visiondb.models import allocator

CONFIG = '{"type": "sql.expression", "params": {"expression": "1"}}'
READ_ONLY = [
    ["sql", "SELECT 1"], ["get", "function", "f"], ["list"], ["delete", "function", "f"], ["run", "p"],
    ["apply", "f", "{}"], ["model", "list"], ["model", "export", "m", "out.zip"], ["model", "retrain", "m"],
]


def untuned_env() -> dict[str, str]:
    """This environment without the malloc setting, its opt-out or the re-exec marker (so the CLI would re-exec)."""
    drop = ("GLIBC_TUNABLES", allocator.OPT_OUT_ENV, allocator.REEXEC_ENV)
    env = {k: v for k, v in os.environ.items() if k not in drop}
    return {**env, "PYTHONPATH": str(REPO_ROOT / "src"), "VISIONDB_PROGRESS": "0"}


def run_python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=untuned_env(),
                          timeout=300)


def test_main_with_argv_does_not_reexec_the_caller(tmp_path):
    code = ("import sys\nprint('start', flush=True)\nfrom visiondb.cli import main\n"
            "print('rc', main(['--db', sys.argv[1], 'put', 'function', 'w', "
            "'{\"type\": \"sql.expression\", \"params\": {\"expression\": \"1\"}}']))")
    out = run_python(code, str(tmp_path / "x.duckdb"))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines.count("start") == 1 and lines[-1] == "rc 0"


def test_entry_point_reexecs_once_keeping_argv_and_exit_code(tmp_path):
    code = "import sys\nprint('start', flush=True)\nfrom visiondb.cli import main\nsys.exit(main())"
    db = str(tmp_path / "x.duckdb")
    out = run_python(code, "--db", db, "put", "function", "w", CONFIG)
    assert out.returncode == 0 and out.stdout.splitlines().count("start") == 2, out.stderr
    out = run_python(code, "--db", db, "sql", "SELEC 1")
    assert out.returncode == 2 and out.stdout.splitlines().count("start") == 2 and "SQL error" in out.stderr


@pytest.mark.parametrize("args", READ_ONLY, ids=[" ".join(a[:2]) for a in READ_ONLY])
def test_read_only_commands_refuse_a_missing_database(tmp_path, capsys, args):
    db = tmp_path / "typo.duckdb"
    assert main(["--db", str(db), *args]) == 2
    assert f"error: database file not found: {db}" in capsys.readouterr().err
    assert not db.exists() and not (tmp_path / "typo.duckdb.media").exists()


def test_sql_that_writes_creates_the_database(tmp_path, capsys):
    db = tmp_path / "fresh.duckdb"
    assert main(["--db", str(db), "sql", "SELECT 1"]) == 2 and not db.exists()  # a read of a typo is refused
    assert main(["--db", str(db), "sql", "CREATE TABLE t AS SELECT 42 AS v"]) == 0 and db.exists()
    assert main(["--db", str(db), "sql", "SELECT v FROM t", "--format", "csv"]) == 0
    assert "42" in capsys.readouterr().out


def test_put_creates_the_database(tmp_path, capsys):
    db = tmp_path / "new.duckdb"
    assert main(["--db", str(db), "put", "function", "w", CONFIG]) == 0
    assert db.exists() and main(["--db", str(db), "list", "function"]) == 0
    assert '"w"' in capsys.readouterr().out


def test_unopenable_database_is_a_clear_error(tmp_path, capsys):
    db = tmp_path / "no-such-dir" / "x.duckdb"
    assert main(["--db", str(db), "put", "function", "w", '{"type": "sql.expression", "params": {}}']) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(db) in err and "Traceback" not in err
    assert main(["--db", str(tmp_path), "list"]) == 2  # a directory given as the database
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(tmp_path) in err


def test_unreadable_config_files_name_the_file(tmp_path, capsys):
    db = str(tmp_path / "x.duckdb")
    assert main(["--db", db, "put", "function", "w", str(tmp_path)]) == 2
    assert f"cannot read config file {tmp_path}" in capsys.readouterr().err
    binary = tmp_path / "bin.json"
    binary.write_bytes(b"\xff\xfe{}")
    assert main(["--db", db, "put", "function", "w", str(binary)]) == 2
    assert f"config file {binary} is not UTF-8 text" in capsys.readouterr().err


def test_model_import_of_a_directory_is_a_clear_error(tmp_path, capsys):
    assert main(["--db", str(tmp_path / "x.duckdb"), "model", "import", str(tmp_path)]) == 2
    assert f"model package {tmp_path} is a directory" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["serve", "demo"])
@pytest.mark.parametrize("port", ["99999", "-1", "http"])
def test_ports_are_validated(capsys, command, port):
    with pytest.raises(SystemExit) as exit_info:
        main(["--db", "x.duckdb", command, "--port", port])
    assert exit_info.value.code == 2 and "argument --port" in capsys.readouterr().err


def test_a_reader_that_stops_early_is_not_an_error(tmp_path):
    """`visiondb ... | head -1`: the closed pipe ends the command quietly with SIGPIPE's status, no error text."""
    db = tmp_path / "p.vdb"
    assert main(["--db", str(db), "sql", "CREATE TABLE t AS SELECT range AS i FROM range(50000)"]) == 0
    proc = subprocess.Popen([sys.executable, "-m", "visiondb.cli", "--db", str(db), "sql", "SELECT * FROM t"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=untuned_env())
    assert proc.stdout is not None and proc.stdout.readline()
    proc.stdout.close()  # what `head -1` does once it has its line
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 141 and b"error" not in err.lower(), err
