"""import.images and import.openimages rows: duplicate URIs, CSV header names against the fixed columns, and
error rows of a resumed import that now succeeds."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

import visiondb
from tests.support.httpserver import TestHTTPServer, make_jpeg
from visiondb.errors import VisionDBError


def _images(folder: Path, *names: str) -> None:
    for i, name in enumerate(names):
        (folder / name).write_bytes(make_jpeg(40, 40, (40 * i, 0, 0)))


def _import(db, name: str, params: dict) -> dict:
    return db.procedures.put(name, {"type": "import.images", "params": params})["status"]["firstRun"]


def test_duplicate_uris_keep_the_first_row(tmp_path: Path) -> None:
    _images(tmp_path, "a.jpg", "b.jpg")
    (tmp_path / "list.csv").write_text(f"uri,label\na.jpg,cat\nb.jpg,cat\n{tmp_path}/a.jpg,dog\na.jpg,fish\n")
    db = visiondb.connect()
    run = _import(db, "imp", {"dataFileUrl": str(tmp_path / "list.csv"), "outputDataset": "pics"})
    assert run["status"]["rowCount"] == 2 and run["status"]["errorCount"] == 2 and run["status"]["discovered"] == 4
    a = str(tmp_path / "a.jpg")
    assert db.sql("SELECT _rowName, label FROM pics ORDER BY 1").fetchall() == [(a, "cat"), (str(tmp_path / "b.jpg"),
                                                                                            "cat")]
    errors = db.sql("SELECT _rowName, uri, cause FROM pics_errors ORDER BY cause").fetchall()
    assert [(e[0], e[1]) for e in errors] == [(a, a), (a, a)]
    assert errors[0][2].startswith("row 3 (") and "duplicate of row 1, same URI; skipped" in errors[0][2]
    assert errors[1][2].startswith("row 4 (")
    assert {e["row"] for e in run["errors"]} == {a}


def test_header_names_meet_the_fixed_columns_case_insensitively(tmp_path: Path) -> None:
    _images(tmp_path, "a.jpg")
    (tmp_path / "list.csv").write_text("uri,Label,SPLIT,Image,_ROWNAME,note,\na.jpg,cat,train,x,y,hello,\n")
    db = visiondb.connect()
    run = _import(db, "imp", {"dataFileUrl": str(tmp_path / "list.csv"), "outputDataset": "pics"})
    assert run["status"]["rowCount"] == 1
    cols = [r[0] for r in db.sql("SELECT column_name FROM (DESCRIBE pics)").fetchall()]
    assert cols == ["_rowName", "image", "label", "split", "column_7", "note"]
    assert db.sql("SELECT label, split, note, column_7 FROM pics").fetchall() == [("cat", "train", "hello", "")]
    (tmp_path / "clash.csv").write_text("uri,label,LABEL\na.jpg,cat,dog\n")
    with pytest.raises(VisionDBError, match=r"clash.csv: column 3 'LABEL' has the same name as column 2 'label'"):
        _import(db, "imp2", {"dataFileUrl": str(tmp_path / "clash.csv"), "outputDataset": "other"})


def test_resumed_import_clears_errors_of_rows_that_now_succeed(tmp_path: Path) -> None:
    _images(tmp_path, "a.jpg")
    (tmp_path / "list.csv").write_text("uri\na.jpg\nlater.jpg\nnever.jpg\n")
    db = visiondb.connect(str(tmp_path / "x.duckdb"))
    params = {"dataFileUrl": str(tmp_path / "list.csv"), "outputDataset": "pics"}
    first = _import(db, "imp", params)
    assert first["status"]["rowCount"] == 1 and first["status"]["errorCount"] == 2
    marker = db.catalog.get_marker("pics")
    db.catalog.set_marker("pics", "import.images", marker["signature"], complete=False)  # as if killed
    _images(tmp_path, "later.jpg")
    again = db.procedures.run("imp")
    assert again["status"]["alreadyPresent"] == 1 and again["status"]["imported"] == 1
    assert db.sql("SELECT count(*) FROM pics").fetchall() == [(2,)]
    errors = db.sql("SELECT _rowName, run_id FROM pics_errors").fetchall()
    assert errors == [(str(tmp_path / "never.jpg"), again["id"])]
    db.close()


def test_openimages_rerun_clears_errors_of_crops_that_now_succeed(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("oi_fixture", Path(__file__).parent / "fixtures/openimages/make.py")
    oi = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(oi)  # type: ignore[union-attr]
    with TestHTTPServer(tmp_path) as srv:
        oi.write_fixture(tmp_path / "oi", srv.url("oi").rstrip("/"))
        photo = tmp_path / "oi/images/000b2.png"
        kept = photo.read_bytes()
        photo.unlink()
        params = {
            "classDescriptionsUrl": srv.url("oi/class-descriptions-boxable.csv"),
            "boxesUrl": srv.url("oi/train-annotations-bbox.csv"),
            "imageIdsUrl": srv.url("oi/train-images-boxable-with-rotation.csv"),
            "classes": ["Cat"], "split": "train", "outputDataset": "crops", "format": "png",
        }
        db = visiondb.connect()
        run = db.procedures.put("oi", {"type": "import.openimages", "params": params})["status"]["firstRun"]
        assert run["status"]["rowCount"] == 1
        assert db.sql("SELECT _rowName, status FROM crops_errors").fetchall() == [("000b2_0", 404)]
        photo.write_bytes(kept)
        again = db.procedures.run("oi")
        assert again["status"]["imported"] == 1 and again["status"]["rowCount"] == 2
        assert db.sql("SELECT count(*) FROM crops_errors").fetchall() == [(0,)]


def test_csv_row_without_uri_is_a_row_error(tmp_path: Path) -> None:
    _images(tmp_path, "a.jpg", "b.jpg")
    (tmp_path / "list.csv").write_text("uri,label\na.jpg,cat\n,dog\n  ,fish\nb.jpg,cat\n")
    db = visiondb.connect()
    run = _import(db, "imp", {"dataFileUrl": str(tmp_path / "list.csv"), "outputDataset": "pics"})
    status = run["status"]
    assert status["rowCount"] == 2 and status["errorCount"] == 2 and status["discovered"] == 4
    errors = db.sql("SELECT _rowName, uri, status, cause FROM pics_errors ORDER BY 1").fetchall()
    assert [e[:3] for e in errors] == [("row 2", None, None), ("row 3", None, None)]
    assert "list.csv data row 2 (line 3): empty URI (column 'uri')" in errors[0][3]
    assert [(e["row"], "uri" in e) for e in run["errors"]] == [("row 2", False), ("row 3", False)]


def test_resume_after_the_csv_gained_columns(tmp_path: Path) -> None:
    """The interrupted run saw `uri,label`; the resume sees two more columns: they are added, and filled in for
    the rows the interrupted run had already imported."""
    _images(tmp_path, "a.jpg", "b.jpg")
    (tmp_path / "list.csv").write_text("uri,label\na.jpg,cat\n")
    db = visiondb.connect(str(tmp_path / "x.duckdb"))
    first = _import(db, "imp", {"dataFileUrl": str(tmp_path / "list.csv"), "outputDataset": "pics"})
    assert first["status"]["rowCount"] == 1
    marker = db.catalog.get_marker("pics")
    db.catalog.set_marker("pics", "import.images", marker["signature"], complete=False)  # as if killed
    (tmp_path / "list.csv").write_text("uri,label,note,Source\na.jpg,cat,old,web\nb.jpg,dog,new,\n")
    again = db.procedures.run("imp")
    assert again["state"] == "finished", again.get("error")
    assert again["status"]["alreadyPresent"] == 1 and again["status"]["imported"] == 1
    cols = [r[0] for r in db.sql("SELECT column_name FROM (DESCRIBE pics)").fetchall()]
    assert cols == ["_rowName", "image", "label", "split", "Source", "note"]  # as a fresh import orders them
    assert db.sql("SELECT label, note, Source FROM pics ORDER BY 1").fetchall() == [("cat", "old", "web"),
                                                                                   ("dog", "new", "")]
    db.close()
