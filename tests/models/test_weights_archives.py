"""default_opener on archive members: a tar ending in a small .pth is still a tar; `#` splits as ingest does."""
from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch

from tests.support.httpserver import TestHTTPServer
from visiondb.errors import FetchError
from visiondb.models.backbones import load_backbone
from visiondb.models.weights import default_opener


def small_pth() -> bytes:
    """A tiny real torch.save checkpoint (zip format, a few hundred bytes)."""
    buffer = io.BytesIO()
    torch.save({"w": torch.arange(4.0)}, buffer)
    return buffer.getvalue()


def write_tar(path: Path, members: dict[str, bytes], mode: str = "w") -> Path:
    with tarfile.open(path, mode) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def test_plain_tar_ending_in_a_small_pth_is_read_as_tar(tmp_path: Path) -> None:
    data = small_pth()
    archive = write_tar(tmp_path / "plain.tar", {"notes.txt": b"hello", "small.pth": data})
    assert zipfile.is_zipfile(archive)  # the trap: the member's zip end record is near the tar's end
    assert default_opener(f"archive+{archive}#small.pth") == data
    assert default_opener(f"archive+{archive}#notes.txt") == b"hello"
    with TestHTTPServer(tmp_path) as srv:
        assert default_opener(f"archive+{srv.url('plain.tar')}#small.pth") == data


def test_tar_member_loads_as_real_weights(tmp_path: Path) -> None:
    from visiondb.models.backbones import BACKBONES

    weights = BACKBONES["mobilenet_v2"].default_weights().read_bytes()
    archive = write_tar(tmp_path / "w.tar.gz", {"readme": b"x", "models/mnv2.pth": weights}, "w:gz")
    backbone = load_backbone(f"archive+{archive}#models/mnv2.pth", architecture="mobilenet_v2")
    assert backbone.name == "mobilenet_v2" and backbone.weights_sha256 == load_backbone("mobilenet_v2").weights_sha256


def test_zip_members_and_hash_signs_split_like_ingest(tmp_path: Path) -> None:
    folder = tmp_path / "run#1"
    folder.mkdir()
    with zipfile.ZipFile(folder / "w#2.zip", "w") as zf:
        zf.writestr("a#b.pth", b"zip member")
    write_tar(folder / "w.tar", {"c#d.pth": b"tar member"})
    assert default_opener(f"archive+{folder / 'w#2.zip'}#a#b.pth") == b"zip member"
    assert default_opener(f"archive+{(folder / 'w.tar').as_uri()}#c#d.pth") == b"tar member"


def test_archive_errors(tmp_path: Path) -> None:
    archive = write_tar(tmp_path / "w.tar", {"x.pth": small_pth()})
    with pytest.raises(FetchError, match="archive member not found: 'y.pth'"):
        default_opener(f"archive+{archive}#y.pth")
    (tmp_path / "junk.tar").write_bytes(b"not an archive at all" * 40)
    with pytest.raises(FetchError, match="not a zip or tar archive"):
        default_opener(f"archive+{tmp_path / 'junk.tar'}#x.pth")
    with pytest.raises(FetchError, match="archive\\+<uri>#<member>"):
        default_opener(f"archive+{archive}")
