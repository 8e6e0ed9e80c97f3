"""Damaged inputs stay per-row errors: bad HTTP bodies and URLs, corrupt or truncated archives, slow servers,
decompression bombs, non-regular local files, CSV cells escaping an archive or over the csv field limit."""
from __future__ import annotations

import gzip
import io
import os
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

from tests.support.httpserver import make_jpeg
from visiondb.errors import ConfigError, FetchError
from visiondb.ingest import ArchiveReader, Fetcher, FetchPolicy, discover_images, parse_uri

JPEG = make_jpeg(40, 40)


def _results(f: Fetcher, uris: list[str]) -> dict[int, bytes | FetchError]:
    return dict(f.read_many(uris, concurrency=1))


def test_bad_content_encoding_and_invalid_url_are_row_errors(odd_server: str) -> None:
    uris = [odd_server + "/ok", odd_server + "/gzip-lie", "http://a\x01b/x.jpg", odd_server + "/ok"]
    with Fetcher(FetchPolicy(retries=0, timeout=5)) as f:
        got = _results(f, uris)
    assert got[0] == JPEG and got[3] == JPEG
    assert isinstance(got[1], FetchError) and "cannot decode the response body" in got[1].message
    assert got[1].uri == odd_server + "/gzip-lie"
    assert isinstance(got[2], FetchError) and "invalid URL" in got[2].message


def test_dripping_server_hits_the_whole_request_timeout(odd_server: str) -> None:
    start = time.monotonic()
    with Fetcher(FetchPolicy(retries=0, timeout=0.5)) as f, pytest.raises(FetchError, match="timed out after 0.5 s"):
        f.read(odd_server + "/drip")  # each byte comes well within the read timeout, the whole body does not
    assert time.monotonic() - start < 2.5


def _corrupt_zip(path: Path) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("cat/a.jpg", JPEG * 3)
        zf.writestr("cat/b.jpg", JPEG * 3)
    raw = bytearray(path.read_bytes())
    at = raw.find(b"cat/a.jpg") + len("cat/a.jpg") + 5  # inside a.jpg's compressed data
    raw[at:at + 20] = b"\0" * 20
    path.write_bytes(bytes(raw))


def test_corrupt_zip_member_is_a_row_error(tmp_path: Path) -> None:
    arc = tmp_path / "c.zip"
    _corrupt_zip(arc)
    (tmp_path / "ok.jpg").write_bytes(JPEG)
    with Fetcher() as f:
        got = _results(f, [f"archive+{arc}#cat/a.jpg", f"archive+{arc}#cat/b.jpg", str(tmp_path / "ok.jpg")])
    assert isinstance(got[0], FetchError) and "'cat/a.jpg'" in got[0].message and str(arc) in got[0].message
    assert got[1] == JPEG * 3 and got[2] == JPEG


def test_truncated_tar_keeps_earlier_members(tmp_path: Path) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tf:
        for name in ("cat/a.jpg", "cat/b.jpg"):
            info = tarfile.TarInfo(name)
            info.size = len(JPEG) * 4
            tf.addfile(info, io.BytesIO(JPEG * 4))
    data = raw.getvalue()
    cut = data.find(b"cat/b.jpg") + 512 + 100  # b.jpg's header and 100 bytes of its data
    (tmp_path / "t.tar").write_bytes(data[:cut])
    arc = tmp_path / "t.tar"
    with Fetcher() as f:
        assert f.archive_members(str(arc)) == ["cat/a.jpg", "cat/b.jpg"]
        got = _results(f, [f"archive+{arc}#cat/a.jpg", f"archive+{arc}#cat/b.jpg"])
    assert got[0] == JPEG * 4
    assert isinstance(got[1], FetchError) and "'cat/b.jpg'" in got[1].message and got[1].uri == f"{arc}#cat/b.jpg"


def test_unexpected_exception_becomes_the_rows_fetch_error(tmp_path: Path) -> None:
    """A zip member with a compression method zipfile does not know raises NotImplementedError: one row's error."""
    arc = tmp_path / "odd.zip"
    with zipfile.ZipFile(arc, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("a.jpg", JPEG)
        zf.writestr("b.jpg", JPEG)
    raw = bytearray(arc.read_bytes())
    local, central = raw.find(b"PK\x03\x04"), raw.find(b"PK\x01\x02")  # a.jpg's two headers come first
    raw[local + 8:local + 10] = raw[central + 10:central + 12] = (97).to_bytes(2, "little")
    arc.write_bytes(bytes(raw))
    with Fetcher() as f:
        got = _results(f, [f"archive+{arc}#a.jpg", f"archive+{arc}#b.jpg"])
    assert isinstance(got[0], FetchError) and "NotImplementedError" in got[0].message
    assert got[0].uri == f"archive+{arc}#a.jpg" and got[1] == JPEG


def _bomb(path: Path, zeros: int) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tf:
        for name, data in (("cat/a.jpg", JPEG), ("junk.bin", b"\0" * zeros)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    path.write_bytes(gzip.compress(raw.getvalue()))


def test_compressed_tar_spool_is_capped(tmp_path: Path) -> None:
    arc, spool = tmp_path / "bomb.tar.gz", tmp_path / "spool"
    spool.mkdir()
    _bomb(arc, 3 << 20)
    with pytest.raises(FetchError, match=f"archive {arc} decompresses to more than {1 << 20} bytes"):
        ArchiveReader(arc, spool_dir=str(spool), max_bytes=1 << 20)
    assert list(spool.iterdir()) == []  # the partial spool is deleted
    with Fetcher(FetchPolicy(max_archive_bytes=1 << 20)) as f, pytest.raises(FetchError, match="decompresses to"):
        f.archive_members(str(arc))
    with Fetcher(FetchPolicy(max_archive_bytes=8 << 20)) as f:
        assert f.archive_members(str(arc)) == ["cat/a.jpg", "junk.bin"]


def test_tar_ending_in_a_small_zip_member_is_read_as_a_tar(tmp_path: Path) -> None:
    """`zipfile.is_zipfile` accepts such a tar (it finds the member's end record): zips are known by their start."""
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as zf:
        zf.writestr("x.txt", "hello")
    arc = tmp_path / "t.tar"
    with tarfile.open(arc, mode="w") as tf:
        for name, data in (("cat/a.jpg", JPEG), ("notes.zip", inner.getvalue())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    with Fetcher() as f:
        assert "cat/a.jpg" in f.archive_members(str(arc))
        assert f.read(f"archive+{arc}#cat/a.jpg") == JPEG


def test_local_reads_refuse_non_regular_files_and_cap_reads(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with Fetcher() as f:
        with pytest.raises(FetchError, match="pipe is not a regular file"):
            f.read(str(fifo))  # refused without blocking on a writer
        with pytest.raises(FetchError, match="/dev/null is not a regular file"):
            f.read("/dev/null")
    status = Path("/proc/self/status")
    assert status.stat().st_size == 0 and len(status.read_bytes()) > 100  # st_size lies for /proc files
    with Fetcher(FetchPolicy(max_bytes=100)) as f, pytest.raises(FetchError, match="larger than 100 bytes"):
        f.read(str(status))


def test_archive_path_with_hash(tmp_path: Path) -> None:
    folder = tmp_path / "set#1"
    folder.mkdir()
    with zipfile.ZipFile(folder / "imgs.zip", "w") as zf:
        zf.writestr("cat/a.jpg", JPEG)
        zf.writestr("cat/b#2.jpg", JPEG)
    arc = str(folder / "imgs.zip")
    p = parse_uri(f"archive+{arc}#cat/b#2.jpg")
    assert (p.inner, p.member) == (arc, "cat/b#2.jpg")
    with Fetcher() as f:
        recs = discover_images(arc, f)
        assert [r.uri for r in recs] == [f"archive+{arc}#cat/a.jpg", f"archive+{arc}#cat/b#2.jpg"]
        assert [r.label for r in recs] == ["cat", "cat"]
        assert all(f.read(r.uri) == JPEG for r in recs)


def test_csv_in_archive_resolves_parent_paths_inside_it(tmp_path: Path) -> None:
    arc = tmp_path / "withcsv.zip"
    with zipfile.ZipFile(arc, "w") as zf:
        zf.writestr("img/a.jpg", JPEG)
        zf.writestr("meta/list.csv", "uri,label\n../img/a.jpg,cat\n./../img/./a.jpg,dog\n")
        zf.writestr("meta/evil.csv", "uri\n../../outside.jpg\n")
    with Fetcher() as f:
        recs = discover_images(f"archive+{arc}#meta/list.csv", f)
        assert [r.uri for r in recs] == [f"archive+{arc}#img/a.jpg"] * 2
        assert f.read(recs[0].uri) == JPEG
        with pytest.raises(ConfigError, match=r"evil.csv data row 1 \(line 2\): '../../outside.jpg' points outside"):
            discover_images(f"archive+{arc}#meta/evil.csv", f)


def test_csv_field_over_the_limit_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "big.csv").write_text("uri,notes\na.jpg,short\nb.jpg," + "n" * 200_000 + "\n")
    with Fetcher() as f, pytest.raises(ConfigError, match=r"big.csv line 3: field larger than field limit"):
        discover_images(str(tmp_path / "big.csv"), f)


def test_csv_header_names(tmp_path: Path) -> None:
    (tmp_path / "trailing.csv").write_text("uri,label,\na.jpg,cat,\n")
    (tmp_path / "dup.csv").write_text("uri,tag,TAG\na.jpg,x,y\n")
    with Fetcher() as f:
        recs = discover_images(str(tmp_path / "trailing.csv"), f)
        assert recs[0].extra == {"label": "cat", "column_3": ""}
        with pytest.raises(ConfigError, match=r"dup.csv: column 3 'TAG' has the same name as column 2 'tag'"):
            discover_images(str(tmp_path / "dup.csv"), f)
