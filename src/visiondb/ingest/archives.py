"""Zip and tar(.gz/.bz2/.xz/.zst) archives: ordered member walks and random member reads without extracting to disk."""
from __future__ import annotations

import lzma
import os
import tarfile
import tempfile
import threading
import zipfile
import zlib
from pathlib import Path
from typing import IO, Callable, Iterator

import zstandard

from visiondb.errors import FetchError
from visiondb.ingest.formats import _opener, compression_of, read_capped

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tbz", ".tar.xz", ".txz", ".tar.zst")
ARCHIVE_ERRORS = (OSError, EOFError, zipfile.BadZipFile, zlib.error, tarfile.TarError, lzma.LZMAError,
                  zstandard.ZstdError)
"""What corrupt or truncated archives raise while being listed or read (wrapped into FetchError)."""


def is_archive_name(name: str) -> bool:
    """True if the file name (or URL path) ends with a zip/tar suffix; only http(s) URLs lose `?query`/`#fragment`
    (a local path may contain `#` or `?`)."""
    lower = name.lower()
    if lower.startswith(("http://", "https://")):
        lower = lower.split("?", 1)[0].split("#", 1)[0]
    return lower.endswith(ARCHIVE_SUFFIXES)


def member_wanted(name: str) -> bool:
    """Skip macOS resource forks (`__MACOSX/`) and dotfiles/dot-folders anywhere in the member path."""
    parts = [p for p in name.replace("\\", "/").split("/") if p]
    return bool(parts) and not any(p == "__MACOSX" or p.startswith(".") for p in parts)


def iter_archive_members(path_or_fileobj: str | Path | IO[bytes]) -> Iterator[tuple[str, Callable[[], bytes]]]:
    """Yield `(member_name, load)` for each regular file of a zip or tar(.gz/.bz2/.xz), in archive order.

    `load()` reads one member into memory; calling it before advancing the iterator avoids re-reading
    compressed tar streams.
    """
    src = str(path_or_fileobj) if isinstance(path_or_fileobj, Path) else path_or_fileobj
    try:
        yield from _iter_members(src)
    except ARCHIVE_ERRORS as exc:
        raise FetchError(f"cannot read archive {_label(src)}: {exc}", uri=_label(src)) from exc


def _iter_members(src: str | IO[bytes]) -> Iterator[tuple[str, Callable[[], bytes]]]:
    if _is_zip(src):
        with zipfile.ZipFile(src) as zf:
            for info in zf.infolist():
                if not info.is_dir() and member_wanted(info.filename):
                    yield info.filename, (lambda info=info: _load(src, info.filename, lambda: zf.read(info)))
        return
    if not isinstance(src, str):
        src.seek(0)
    if _is_zstd(src):
        yield from _iter_zstd_tar(src)
        return
    try:
        tf = tarfile.open(src, mode="r:*") if isinstance(src, str) else tarfile.open(fileobj=src, mode="r:*")
    except (tarfile.TarError, OSError) as exc:
        raise FetchError(f"not a zip or tar archive: {_label(src)} ({exc})", uri=_label(src)) from exc
    with tf:
        for member in tf:
            if member.isfile() and member_wanted(member.name):
                yield member.name, (lambda m=member: _load(src, m.name, lambda: _read_tar_member(tf, m)))


def _load(src: str | IO[bytes], member: str, read: Callable[[], bytes]) -> bytes:
    """Run one member read, turning a corrupt or truncated member into a FetchError naming it."""
    try:
        return read()
    except ARCHIVE_ERRORS as exc:
        where = f"{_label(src)}#{member}"
        raise FetchError(f"cannot read archive member {member!r} of {_label(src)}: {exc}", uri=where) from exc


def _head(src: str | IO[bytes]) -> bytes:
    """The first 4 bytes of a file (a file object is rewound), for magic-number checks."""
    if isinstance(src, str):
        with open(src, "rb") as f:
            return f.read(4)
    head = src.read(4)
    src.seek(0)
    return head


def _is_zstd(src: str | IO[bytes]) -> bool:
    return compression_of("", _head(src)) == "zst"


def _iter_zstd_tar(src: str | IO[bytes]) -> Iterator[tuple[str, Callable[[], bytes]]]:
    """Stream a .tar.zst (tarfile cannot seek in it): each `load()` works only before the iterator advances."""
    raw = open(src, "rb") if isinstance(src, str) else src
    try:
        with _opener("zst")(raw) as stream, tarfile.open(fileobj=stream, mode="r|") as tf:
            for member in tf:
                if member.isfile() and member_wanted(member.name):
                    yield member.name, (lambda m=member: _load(src, m.name, lambda: _read_tar_member(tf, m)))
    finally:
        if isinstance(src, str):
            raw.close()


def _label(src: str | IO[bytes]) -> str:
    return src if isinstance(src, str) else str(getattr(src, "name", "<file object>"))


ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")
"""How a zip file starts (first local header, or the end record of an empty zip). `zipfile.is_zipfile` also
accepts a tar whose last member is a small zip (a .pth, a .docx): it finds that member's end record near the end."""


def _is_zip(src: str | IO[bytes]) -> bool:
    """A zip by its leading signature (see ZIP_SIGNATURES)."""
    try:
        return _head(src).startswith(ZIP_SIGNATURES)
    except OSError:
        return False


def _read_tar_member(tf: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    f = tf.extractfile(member)
    if f is None:
        raise FetchError(f"archive member {member.name} is not a regular file", uri=member.name)
    with f:
        return f.read()


def _tar_members(tf: tarfile.TarFile, path: Path) -> list[tarfile.TarInfo]:
    """All members; a tar cut short inside its last member's data keeps the members listed so far (reading the cut
    member then fails, naming it), any other damage raises."""
    try:
        return tf.getmembers()
    except tarfile.ReadError:
        listed = list(tf.members)
        if not listed or listed[-1].offset_data + listed[-1].size <= os.path.getsize(path):
            raise
        return listed


class ArchiveReader:
    """Random access to one local archive file; compressed tars are decompressed once into a temp spool file of at
    most `max_bytes` (None: unlimited)."""

    def __init__(self, path: Path, *, uri: str | None = None, spool_dir: str | None = None,
                 max_bytes: int | None = None) -> None:
        self.path = Path(path)
        self.uri = uri or str(path)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._spool: Path | None = None
        self._zip: zipfile.ZipFile | None = None
        self._tar: tarfile.TarFile | None = None
        self._members: dict[str, zipfile.ZipInfo | tarfile.TarInfo] = {}
        self._order: list[str] = []
        try:
            self._open(spool_dir)
        except FetchError:
            self.close()
            raise
        except ARCHIVE_ERRORS as exc:
            self.close()
            raise FetchError(f"cannot read archive {self.uri}: {exc}", uri=self.uri) from exc

    def _open(self, spool_dir: str | None) -> None:
        if _is_zip(str(self.path)):
            self._zip = zipfile.ZipFile(self.path)
            for info in self._zip.infolist():
                if not info.is_dir() and member_wanted(info.filename):
                    self._add(info.filename, info)
            return
        with open(self.path, "rb") as f:
            head = f.read(8)
        kind = compression_of("", head)
        tar_path = self.path
        if kind is not None:
            fd, name = tempfile.mkstemp(prefix="visiondb-tar-", suffix=".tar", dir=spool_dir)
            self._spool = Path(name)
            with open(self.path, "rb") as raw, _opener(kind)(raw) as stream, open(fd, "wb") as out:
                self._spool_copy(stream, out)
            tar_path = self._spool
        if not tarfile.is_tarfile(tar_path):
            raise FetchError(f"not a zip or tar archive: {self.uri}", uri=self.uri)
        self._tar = tarfile.open(tar_path, mode="r:")
        for member in _tar_members(self._tar, tar_path):
            if member.isfile() and member_wanted(member.name):
                self._add(member.name, member)

    def _spool_copy(self, stream: IO[bytes], out: IO[bytes]) -> None:
        """Decompress into the spool, refusing archives that expand past `max_bytes` (decompression bombs)."""
        total = 0
        while piece := stream.read(1 << 20):
            total += len(piece)
            if self.max_bytes is not None and total > self.max_bytes:
                raise FetchError(
                    f"archive {self.uri} decompresses to more than {self.max_bytes} bytes (the maximum archive size)",
                    uri=self.uri,
                )
            out.write(piece)

    def _add(self, name: str, info: zipfile.ZipInfo | tarfile.TarInfo) -> None:
        if name not in self._members:
            self._order.append(name)
        self._members[name] = info

    def names(self) -> list[str]:
        """Regular-file member names in archive order (no directories, `__MACOSX/` or dotfiles)."""
        return list(self._order)

    def read(self, member: str, *, max_bytes: int) -> bytes:
        """Read one member fully; raises FetchError naming the member when missing or over `max_bytes`."""
        info = self._members.get(member) or self._members.get(member.lstrip("/"))
        if info is None:
            raise FetchError(f"archive {self.uri} has no member {member!r}", uri=f"{self.uri}#{member}")
        size = info.file_size if isinstance(info, zipfile.ZipInfo) else info.size
        if size > max_bytes:
            raise FetchError(
                f"archive member {member!r} of {self.uri} is larger than {max_bytes} bytes ({size})",
                uri=f"{self.uri}#{member}",
            )
        with self._lock:
            return _load(self.uri, member, lambda: self._read_member(member, info, max_bytes))

    def _read_member(self, member: str, info: zipfile.ZipInfo | tarfile.TarInfo, max_bytes: int) -> bytes:
        """The member's bytes (at most `max_bytes` + 1 of a zip member), under the reader's lock."""
        if self._zip is not None:
            with self._zip.open(info) as f:  # type: ignore[arg-type]
                return read_capped(f, max_bytes + 1)
        if self._tar is None:
            raise FetchError(f"archive {self.uri} is closed", uri=f"{self.uri}#{member}")
        return _read_tar_member(self._tar, info)  # type: ignore[arg-type]

    def close(self) -> None:
        """Close the archive and delete any spool file."""
        for handle in (self._zip, self._tar):
            if handle is not None:
                handle.close()
        self._zip = self._tar = None
        if self._spool is not None:
            self._spool.unlink(missing_ok=True)
            self._spool = None
