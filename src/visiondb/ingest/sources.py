"""Discover image records for `import.images` from a folder, a CSV of URIs, or a zip/tar archive."""
from __future__ import annotations

import csv
import io
import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urljoin, urlsplit

from visiondb.errors import ConfigError, FetchError
from visiondb.ingest.archives import is_archive_name, member_wanted
from visiondb.ingest.fetch import ARCHIVE_PREFIX, Fetcher, parse_uri

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"})
SPLIT_NAMES = frozenset({"train", "training", "val", "valid", "validation", "test", "testing"})
CSV_SUFFIXES = (".csv", ".tsv")


@dataclass
class ImageRecord:
    """One image to import: its 0-based record number, URI, label/split (if known) and other CSV columns; `error`
    is set (and `uri` may be empty) for a CSV row that names no image, which the import records as a row error."""

    row: int
    uri: str
    label: str | None
    split: str | None
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def is_image_name(name: str) -> bool:
    """True if the file name has an image extension (case-insensitive)."""
    return PurePosixPath(name).suffix.lower() in IMAGE_EXTENSIONS


def discover_images(
    data_file_url: str,
    fetcher: Fetcher,
    *,
    uri_column: str = "uri",
    label_column: str | None = None,
    split_column: str | None = None,
    limit: int | None = None,
) -> list[ImageRecord]:
    """List images from a local folder, a CSV (local/http/compressed) or a zip/tar archive, in deterministic order."""
    if limit is not None and limit < 0:
        raise ConfigError(f"limit must be >= 0, got {limit}", field="limit")
    p = parse_uri(data_file_url)
    if p.kind == "local" and p.path is not None:
        root = fetcher.policy.check_path(p.path, data_file_url)
        if root.is_dir():
            records = _from_layout(_walk_folder(root), lambda rel: str(root / rel))
            return records[:limit] if limit is not None else records
        if not root.exists():
            raise FetchError(f"no such file or folder: {data_file_url}", uri=data_file_url)
    name = (p.member if p.kind == "archive" else urlsplit(data_file_url).path if p.kind == "http" else str(p.path)) or ""
    lower = name.lower()
    for comp in (".gz", ".bz2", ".xz", ".zst"):
        if lower.endswith(comp) and not is_archive_name(lower):
            lower = lower[: -len(comp)]
    if p.kind != "archive" and is_archive_name(name):
        members = [m for m in fetcher.archive_members(data_file_url) if is_image_name(m)]
        rels = [tuple(m.split("/")) for m in members]
        records = _from_layout(sorted(zip(rels, members)), lambda rel, _u=data_file_url: f"{ARCHIVE_PREFIX}{_u}#{rel}")
        return records[:limit] if limit is not None else records
    if lower.endswith(CSV_SUFFIXES):
        return _from_csv(data_file_url, fetcher, uri_column, label_column, split_column, limit, lower.endswith(".tsv"))
    raise ConfigError(
        f"cannot discover images in {data_file_url}: expected a folder, a .csv/.tsv file or a zip/tar archive",
        field="data_file_url",
    )


def _walk_folder(root: Path) -> list[tuple[tuple[str, ...], str]]:
    """(relative path parts, relative posix path) of every image file under root, sorted."""
    found: list[tuple[tuple[str, ...], str]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if member_wanted(d))
        rel_dir = Path(dirpath).relative_to(root)
        for fn in filenames:
            if member_wanted(fn) and is_image_name(fn):
                rel = (rel_dir / fn).as_posix()
                found.append((tuple(rel.split("/")), rel))
    found.sort()
    return found


def _from_layout(items: list[tuple[tuple[str, ...], str]], make_uri: Any) -> list[ImageRecord]:
    """Assign label/split from `<class>/<file>` or `<split>/<class>/<file>` (an extra common wrapper folder is skipped)."""
    parts_list = [parts for parts, _ in items]
    skip = 0
    if parts_list and all(len(p) >= 3 for p in parts_list) and len({p[0] for p in parts_list}) == 1 \
            and parts_list[0][0].lower() not in SPLIT_NAMES:
        skip = 1
    tops = {p[skip] for p in parts_list if len(p) > skip + 1}
    split_layout = bool(tops) and all(t.lower() in SPLIT_NAMES for t in tops) and all(
        len(p) >= skip + 3 for p in parts_list if p[skip] in tops
    )
    records: list[ImageRecord] = []
    for parts, rel in items:
        p = parts[skip:]
        split = label = None
        if split_layout and len(p) >= 3:
            split, label = p[0], p[1]
        elif len(p) >= 2:
            label = p[0]
        records.append(ImageRecord(len(records), make_uri(rel), label, split, {}))
    return records


def _resolve_relative(value: str, csv_uri: str) -> str:
    """Resolve a CSV cell against the CSV's own location (folder, URL or archive member directory)."""
    if "://" in value or value.startswith(ARCHIVE_PREFIX):
        return value
    p = parse_uri(csv_uri)
    if p.kind == "http":
        return urljoin(csv_uri, value)
    if p.kind == "archive":
        member = posixpath.normpath(posixpath.join(posixpath.dirname(p.member or ""), value))
        if member == ".." or member.startswith("../"):
            raise ConfigError(f"{value!r} points outside the archive {p.inner}", field="data_file_url")
        return f"{ARCHIVE_PREFIX}{p.inner}#{member}"
    if os.path.isabs(os.path.expanduser(value)):
        return os.path.expanduser(value)
    assert p.path is not None
    return str(p.path.parent / value)


def _from_csv(uri: str, fetcher: Fetcher, uri_column: str, label_column: str | None, split_column: str | None,
              limit: int | None, tsv: bool) -> list[ImageRecord]:
    data = fetcher.read(uri, decompress=True)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FetchError(f"CSV {uri} is not UTF-8: {exc}", uri=uri) from exc
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t" if tsv else ",")
    try:
        return _csv_records(reader, uri, uri_column, label_column, split_column, limit)
    except csv.Error as exc:  # e.g. a field over csv.field_size_limit(), or a bad quote
        raise ConfigError(f"CSV {uri} line {reader.reader.line_num}: {exc}", field="data_file_url") from None


def _csv_records(reader: csv.DictReader, uri: str, uri_column: str, label_column: str | None,
                 split_column: str | None, limit: int | None) -> list[ImageRecord]:
    columns = _csv_header(reader, uri)
    for role, col in (("uri_column", uri_column), ("label_column", label_column), ("split_column", split_column)):
        if col is not None and col not in columns:
            raise ConfigError(f"CSV {uri} has no column {col!r} ({role}); columns are {columns}", field=role)
    used = {uri_column, label_column, split_column}
    records: list[ImageRecord] = []
    for n, row in enumerate(reader):
        if limit is not None and len(records) >= limit:
            break
        where = f"CSV {uri} data row {n + 1} (line {reader.line_num})"
        value = (row.get(uri_column) or "").strip()
        resolved, error = "", f"{where}: empty URI (column {uri_column!r})"
        if value:
            error = None
            try:
                resolved = _resolve_relative(value, uri)
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc.message}", field=uri_column, row=n + 1) from None
        extra = {k: v for k, v in row.items() if k not in used and k is not None}
        records.append(ImageRecord(
            len(records),
            resolved,
            (row.get(label_column) or None) if label_column else None,
            (row.get(split_column) or None) if split_column else None,
            extra,
            error,
        ))
    return records


def _csv_header(reader: csv.DictReader, uri: str) -> list[str]:
    """The header with empty names replaced by `column_<position>` (a trailing comma); names must be unique
    case-insensitively, since they become dataset columns."""
    names: list[str] = []
    seen: dict[str, int] = {}
    raw = list(reader.fieldnames or [])
    taken = {n.lower() for n in raw}
    for i, name in enumerate(raw, start=1):
        if not name.strip():
            name = f"column_{i}"
            while name.lower() in taken:
                name += "_"
            taken.add(name.lower())
        if name.lower() in seen:
            first = seen[name.lower()]
            raise ConfigError(f"CSV {uri}: column {i} {name!r} has the same name as column {first} "
                              f"{names[first - 1]!r} (names are compared case-insensitively); rename one",
                              field="data_file_url")
        seen[name.lower()] = i
        names.append(name)
    if raw:
        reader.fieldnames = names
    return names
