"""Image discovery from the shared hymenoptera folder, its labels.csv, CSVs over http and zip archives."""
from __future__ import annotations

import csv
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from tests.support.httpserver import TestHTTPServer, make_jpeg
from tests.support.paths import dataset
from visiondb.errors import ConfigError
from visiondb.ingest import Fetcher, FetchPolicy, discover_images

HYM = dataset("hymenoptera")
pytestmark = pytest.mark.skipif(not HYM.is_dir(), reason="shared hymenoptera dataset not present")


def _labels() -> list[dict[str, str]]:
    with open(HYM / "labels.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_folder_with_splits() -> None:
    with Fetcher() as f:
        recs = discover_images(str(HYM), f)
    rows = _labels()
    assert len(recs) == len(rows)
    assert Counter((r.split, r.label) for r in recs) == Counter((r["split"], r["label"]) for r in rows)
    assert [r.row for r in recs] == list(range(len(recs)))
    assert recs == sorted(recs, key=lambda r: Path(r.uri).relative_to(HYM.resolve()).parts)
    gif = [r for r in recs if r.uri.endswith("imageNotFound.gif")]
    assert len(gif) == 1 and (gif[0].split, gif[0].label) == ("train", "ants")


def test_folder_with_classes_only() -> None:
    with Fetcher() as f:
        recs = discover_images(str(HYM / "val"), f, limit=500)
    assert {r.split for r in recs} == {None}
    assert Counter(r.label for r in recs) == Counter(r["label"] for r in _labels() if r["split"] == "val")
    with Fetcher() as f:
        assert len(discover_images(str(HYM / "val"), f, limit=7)) == 7


def test_labels_csv_relative_paths() -> None:
    with Fetcher() as f:
        recs = discover_images(str(HYM / "labels.csv"), f, uri_column="path", label_column="label",
                               split_column="split", limit=20)
        assert len(recs) == 20
        first = _labels()[0]
        assert recs[0].label == first["label"] and recs[0].split == first["split"]
        assert recs[0].extra == {"md5": first["md5"]}
        assert Path(recs[0].uri) == HYM / first["path"]
        assert f.read_image(recs[0].uri)
        with pytest.raises(ConfigError, match="no column 'uri'"):
            discover_images(str(HYM / "labels.csv"), f)


def test_csv_over_http_resolves_against_its_url(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "img/a.jpg").write_bytes(make_jpeg())
    (tmp_path / "list.csv").write_text("uri,label\nimg/a.jpg,cat\nhttp://example.invalid/b.jpg,dog\n")
    with TestHTTPServer(tmp_path) as srv, Fetcher() as f:
        recs = discover_images(srv.url("list.csv"), f, label_column="label")
        assert [r.uri for r in recs] == [srv.url("img/a.jpg"), "http://example.invalid/b.jpg"]
        assert f.read_image(recs[0].uri) == (tmp_path / "img/a.jpg").read_bytes()


def test_zip_archive_local_and_http(tmp_path: Path) -> None:
    picks = sorted((HYM / "val/ants").iterdir())[:3] + sorted((HYM / "val/bees").iterdir())[:2]
    arc = tmp_path / "hym.zip"
    with zipfile.ZipFile(arc, "w") as zf:
        for p in picks:
            zf.write(p, f"hymenoptera/val/{p.parent.name}/{p.name}")
        zf.writestr("hymenoptera/val/ants/notes.txt", "not an image")
        zf.writestr("__MACOSX/hymenoptera/val/ants/._x.jpg", "junk")
    with TestHTTPServer(tmp_path) as srv, Fetcher(FetchPolicy(allow_fetch=["127.0.0.1"], block_private=True)) as f:
        for base in (str(arc), srv.url("hym.zip")):
            recs = discover_images(base, f)
            assert [(r.split, r.label) for r in recs] == [("val", "ants")] * 3 + [("val", "bees")] * 2
            assert recs[0].uri == f"archive+{base}#hymenoptera/val/ants/{picks[0].name}"
            assert f.read_image(recs[-1].uri) == picks[-1].read_bytes()
        assert srv.hits["/hym.zip"] == 1


def test_unknown_source_kind(tmp_path: Path) -> None:
    (tmp_path / "x.parquet").write_bytes(b"x")
    with Fetcher() as f, pytest.raises(ConfigError, match="x.parquet"):
        discover_images(str(tmp_path / "x.parquet"), f)
