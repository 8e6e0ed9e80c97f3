"""The `visiondb` command line over a database file."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.support.paths import REPO_ROOT


def cli(db, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src"), "VISIONDB_PROGRESS": "0"}
    return subprocess.run([sys.executable, "-m", "visiondb.cli", "--db", str(db), *args],
                          capture_output=True, text=True, env=env, timeout=300)


def test_cli_put_run_sql_apply(tmp_path, bees_csv):
    db = tmp_path / "cli.duckdb"
    config = tmp_path / "imp.json"
    config.write_text(json.dumps({"type": "import.images", "params": {
        "dataFileUrl": str(bees_csv), "outputDataset": "bees", "limit": 4}}))
    out = cli(db, "put", "procedure", "imp", str(config))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["status"]["firstRun"]["state"] == "finished"
    out = cli(db, "put", "function", "w2", '{"type": "sql.expression", "params": {"expression": "image.width * 2"}}')
    assert out.returncode == 0, out.stderr
    out = cli(db, "sql", "SELECT label, count(*) AS n FROM bees GROUP BY label ORDER BY label")
    assert out.returncode == 0 and "ants" in out.stdout and "n" in out.stdout
    out = cli(db, "run", "imp")
    assert out.returncode == 0 and json.loads(out.stdout)["state"] == "finished"
    out = cli(db, "apply", "w2", '{"image": {"width": 21}}')
    assert out.returncode == 0 and json.loads(out.stdout)["output"] == {"output": 42}
    out = cli(db, "list")
    assert json.loads(out.stdout)["procedures"] == ["imp"]


def test_cli_errors_are_clear(tmp_path):
    out = cli(tmp_path / "e.duckdb", "put", "procedure", "p", '{"type": "transform", "params": {}}')
    assert out.returncode == 2 and "params.inputData" in out.stderr
    out = cli(tmp_path / "e.duckdb", "sql", "SELEC 1")
    assert out.returncode == 2 and "SQL error" in out.stderr
