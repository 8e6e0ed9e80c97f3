"""Local reads under allowed roots, transparent decompression, and zip/tar archive members (local and http)."""
from __future__ import annotations

import bz2
import gzip
import io
import lzma
import tarfile
import zipfile
from pathlib import Path

import pytest
import zstandard

from tests.support.httpserver import TestHTTPServer, make_jpeg
from visiondb.errors import AccessDeniedError, FetchError
from visiondb.ingest import Fetcher, FetchPolicy, iter_archive_members, looks_like_image

MEMBERS = {"pics/a.jpg": make_jpeg(16, 16, (255, 0, 0)), "pics/sub/b.jpg": make_jpeg(16, 16, (0, 0, 255))}
JUNK = {"__MACOSX/pics/._a.jpg": b"junk", "pics/.DS_Store": b"junk"}


def _write_archive(path: Path) -> Path:
    files = {**MEMBERS, **JUNK}
    if path.suffix == ".zip":
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("pics/", b"")
            for name, data in files.items():
                zf.writestr(name, data)
        return path
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tf:
        d = tarfile.TarInfo("pics")
        d.type = tarfile.DIRTYPE
        tf.addfile(d)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    comp = {".tar": lambda b: b, ".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress,
            ".zst": zstandard.ZstdCompressor().compress}[path.suffix]
    path.write_bytes(comp(raw.getvalue()))
    return path


ARCHIVES = ["a.zip", "a.tar", "a.tar.gz", "a.tar.bz2", "a.tar.xz", "a.tar.zst"]


@pytest.mark.parametrize("name", ARCHIVES)
def test_archive_members_local(tmp_path: Path, name: str) -> None:
    arc = _write_archive(tmp_path / name)
    with Fetcher() as f:
        assert f.archive_members(str(arc)) == list(MEMBERS)
        for member, data in MEMBERS.items():
            assert f.read(f"archive+{arc}#{member}") == data
        with pytest.raises(FetchError, match="no member 'pics/nope.jpg'"):
            f.read(f"archive+{arc}#pics/nope.jpg")
    walked = {n: load() for n, load in iter_archive_members(arc)}
    assert walked == MEMBERS


@pytest.mark.parametrize("name", ["a.zip", "a.tar", "a.tar.gz", "a.tar.bz2", "a.tar.xz"])
def test_archive_members_http(tmp_path: Path, name: str) -> None:
    _write_archive(tmp_path / name)
    with TestHTTPServer(tmp_path) as srv, Fetcher(FetchPolicy(allow_fetch=["127.0.0.1"], block_private=True)) as f:
        url = srv.url(name)
        for member, data in MEMBERS.items():
            assert f.read(f"archive+{url}#{member}") == data
        assert srv.hits["/" + name] == 1  # downloaded once, then served from the spool


def test_missing_local_file_and_directory(tmp_path: Path) -> None:
    with Fetcher() as f:
        with pytest.raises(FetchError, match="no such file: .*nope.jpg"):
            f.read(str(tmp_path / "nope.jpg"))
        with pytest.raises(FetchError, match="is a directory"):
            f.read(str(tmp_path))
        (tmp_path / "x.jpg").write_bytes(MEMBERS["pics/a.jpg"])
        assert f.read((tmp_path / "x.jpg").as_uri()) == MEMBERS["pics/a.jpg"]


@pytest.mark.parametrize("name", ["a\x00b.jpg", "a" * 300 + ".jpg", "d/" * 3000 + "x.jpg", "\ud800.jpg"])
def test_unusable_paths_are_fetch_errors(tmp_path: Path, name: str) -> None:
    """A NUL byte, an overlong name or path, a lone surrogate: a FetchError naming the path, not a ValueError."""
    for policy in (FetchPolicy(), FetchPolicy(allowed_roots=[tmp_path])):
        with Fetcher(policy) as f, pytest.raises(FetchError, match="not a usable file path"):
            f.read(f"{tmp_path}/{name}")


def test_allowed_roots_refuse_escapes(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir(), outside.mkdir()
    (outside / "secret.txt").write_bytes(b"secret")
    (root / "ok.txt").write_bytes(b"ok")
    (root / "link.txt").symlink_to(outside / "secret.txt")
    (root / "linkdir").symlink_to(outside, target_is_directory=True)
    with Fetcher(FetchPolicy(allowed_roots=[root])) as f:
        assert f.read(str(root / "ok.txt")) == b"ok"
        for bad in (f"{root}/../outside/secret.txt", str(root / "link.txt"), str(root / "linkdir/secret.txt"),
                    f"file://{root}/../outside/secret.txt", "/etc/passwd"):
            with pytest.raises(AccessDeniedError, match="outside the allowed roots"):
                f.read(bad)
    with Fetcher(FetchPolicy(allow_local=False)) as f, pytest.raises(AccessDeniedError, match="disabled"):
        f.read(str(root / "ok.txt"))


def test_local_size_limit(tmp_path: Path) -> None:
    (tmp_path / "big.bin").write_bytes(b"x" * 1000)
    with Fetcher(FetchPolicy(max_bytes=100)) as f, pytest.raises(FetchError, match="larger than 100 bytes"):
        f.read(str(tmp_path / "big.bin"))


@pytest.mark.parametrize("suffix,comp", [(".gz", gzip.compress), (".bz2", bz2.compress), (".xz", lzma.compress),
                                         (".zst", zstandard.ZstdCompressor().compress)])
def test_decompression_by_suffix_and_magic(tmp_path: Path, suffix: str, comp) -> None:
    payload = b"split,label,path\n" * 50
    (tmp_path / f"data.csv{suffix}").write_bytes(comp(payload))
    (tmp_path / "data.bin").write_bytes(comp(payload))  # no suffix: detected from magic bytes
    with Fetcher() as f:
        assert f.read(str(tmp_path / f"data.csv{suffix}"), decompress=True) == payload
        assert f.read(str(tmp_path / "data.bin"), decompress=True) == payload
        assert f.read(str(tmp_path / f"data.csv{suffix}")) == comp(payload)
    with TestHTTPServer(tmp_path) as srv, Fetcher() as f:
        assert f.read(srv.url(f"data.csv{suffix}"), decompress=True) == payload


def test_decompression_bomb_is_capped(tmp_path: Path) -> None:
    (tmp_path / "bomb.gz").write_bytes(gzip.compress(b"\0" * 10_000))
    with Fetcher(FetchPolicy(max_bytes=1000)) as f, pytest.raises(FetchError, match="larger than 1000 bytes"):
        f.read(str(tmp_path / "bomb.gz"), decompress=True)


def test_looks_like_image_magic() -> None:
    from PIL import Image

    for fmt in ("PNG", "GIF", "BMP", "WEBP", "TIFF", "JPEG"):
        buf = io.BytesIO()
        Image.new("RGB", (4, 4)).save(buf, format=fmt)
        assert looks_like_image(buf.getvalue(), None) == fmt
    assert looks_like_image(b"<html>", "image/jpeg") is None
    assert looks_like_image(b"", None) is None


def test_unsupported_scheme_and_bad_archive_uri() -> None:
    with Fetcher() as f:
        with pytest.raises(FetchError, match="unsupported URI scheme 'ftp'"):
            f.read("ftp://example.com/x.jpg")
        with pytest.raises(FetchError, match="archive\\+<uri>#<member>"):
            f.read("archive+/tmp/x.zip")
