"""The demo's helpers on photos imported from an archive (the public-zip fallback), without running the whole demo."""
from __future__ import annotations

import subprocess
import sys
import zipfile

from tests.core.conftest import pick
from tests.support.httpserver import TestHTTPServer
from visiondb.demo import local_root, photo_name, pick_examples, serve_demo, wait_for_server


def archive_import(db, tmp_path, url_of=str):
    """Import 2 ants + 2 bees per split from a zip laid out <top>/<split>/<label>/<file>."""
    archive = tmp_path / "clothes.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for split in ("train", "val"):
            for label, path in pick("hymenoptera", split, 2):
                zf.write(path, f"small-master/{'test' if split == 'val' else split}/{label}/{path.name}")
    db.procedures.put("imp", {"type": "import.images", "params": {
        "dataFileUrl": url_of(archive), "outputDataset": "clothes"}})
    return archive


def test_examples_come_from_the_database_for_archive_imports(db, tmp_path):
    with TestHTTPServer(tmp_path) as srv:
        archive_import(db, tmp_path, lambda p: srv.url(p.name))
        srv.reset()
        examples = pick_examples(db, "clothes", 3)
        assert sum(srv.hits.values()) == 0  # bytes from the media store: the zip is not fetched again
    assert len(examples) == 3
    for uri, label, data in examples:
        assert uri.startswith("archive+http://") and label in ("ants", "bees") and data[:2] == b"\xff\xd8"
        assert photo_name(uri).endswith(".jpg") and "/" not in photo_name(uri)
        assert local_root(uri) is None


def test_local_root_of_a_local_photo(tmp_path):
    photo = tmp_path / "data" / "test" / "pants" / "a.jpg"
    assert local_root(str(photo)) == (tmp_path / "data").resolve()
    assert local_root(photo.as_uri()) == (tmp_path / "data").resolve()
    assert local_root("https://example.org/a.jpg") is None


def test_server_that_exits_early_is_reported(db, tmp_path, capsys):
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(3)"])
    assert not wait_for_server(proc, "http://127.0.0.1:9")
    assert proc.returncode == 3
    archive_import(db, tmp_path)
    uri, _, data = pick_examples(db, "clothes", 1)[0]
    db.close()
    assert serve_demo(str(tmp_path), uri, data, 0, forever=False) == 2  # a folder is no database: serve exits 2
    assert "the server exited early with code 2" in capsys.readouterr().out
    # a server that answers but cannot classify (no clothing_predictor here) is a failed self-check too
    assert serve_demo(str(tmp_path / "test.duckdb"), uri, data, 0, forever=False) == 1
