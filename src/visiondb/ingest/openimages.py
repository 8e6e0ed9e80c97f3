"""Open Images (V4+) box selection from the official CSVs, and box crops in pixel coordinates."""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Iterator

from PIL import Image

from visiondb.errors import ConfigError

BOX_COLUMNS = ("ImageID", "LabelName", "XMin", "XMax", "YMin", "YMax")


@dataclass(frozen=True)
class BoxRecord:
    """One bounding box of a selected class, with its image URL and normalised [0, 1] coordinates."""

    image_id: str
    url: str
    class_name: str
    label_name: str
    xmin: float
    xmax: float
    ymin: float
    ymax: float
    split: str | None


def _rows(data: bytes) -> Iterator[list[str]]:
    yield from csv.reader(io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig", newline=""))


def _dict_rows(data: bytes, name: str, required: tuple[str, ...]) -> Iterator[dict[str, str]]:
    reader = csv.DictReader(io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig", newline=""))
    missing = [c for c in required if c not in (reader.fieldnames or [])]
    if missing:
        raise ConfigError(f"{name} CSV lacks column(s) {missing}; header is {reader.fieldnames}", field=name)
    yield from reader


def _class_map(class_descriptions_csv: bytes, classes: list[str]) -> dict[str, str]:
    """Map LabelName (/m/...) -> display name for the requested classes (matched by display name or LabelName)."""
    by_display: dict[str, tuple[str, str]] = {}
    by_label: dict[str, str] = {}
    for row in _rows(class_descriptions_csv):
        if len(row) < 2 or row[0] == "LabelName":
            continue
        label, display = row[0].strip(), row[1].strip()
        by_label[label] = display
        by_display.setdefault(display.lower(), (label, display))
    wanted: dict[str, str] = {}
    for cls in classes:
        if cls in by_label:
            wanted[cls] = by_label[cls]
        elif cls.strip().lower() in by_display:
            label, display = by_display[cls.strip().lower()]
            wanted[label] = display
        else:
            raise ConfigError(f"Open Images class {cls!r} is not in the class descriptions CSV", field="classes")
    return wanted


def select_boxes(
    class_descriptions_csv: bytes,
    boxes_csv: bytes,
    image_ids_csv: bytes,
    classes: list[str],
    limit_per_class: int | None,
    split: str | None,
    *,
    prefer_thumbnail: bool = False,
) -> list[BoxRecord]:
    """Boxes of `classes` (display names or /m/ ids) whose image is in `split` (Subset), at most `limit_per_class` each.

    Order: classes as given, then ImageID, then the box's order in the boxes CSV.
    """
    if not classes:
        raise ConfigError("select_boxes needs at least one class", field="classes")
    if limit_per_class is not None and limit_per_class < 0:
        raise ConfigError(f"limit_per_class must be >= 0, got {limit_per_class}", field="limit_per_class")
    wanted = _class_map(class_descriptions_csv, classes)
    images: dict[str, tuple[str, str | None]] = {}
    for row in _dict_rows(image_ids_csv, "image_ids", ("ImageID",)):
        subset = row.get("Subset") or None
        if split is not None and subset != split:
            continue
        url = (row.get("Thumbnail300KURL") if prefer_thumbnail else None) or row.get("OriginalURL") or row.get("Thumbnail300KURL")
        if url:
            images[row["ImageID"]] = (url, subset)
    found: list[tuple[int, str, int, BoxRecord]] = []
    order = {label: i for i, label in enumerate(wanted)}
    for n, row in enumerate(_dict_rows(boxes_csv, "boxes", BOX_COLUMNS)):
        label = row["LabelName"]
        if label not in wanted or row["ImageID"] not in images:
            continue
        url, subset = images[row["ImageID"]]
        try:
            coords = [float(row[c]) for c in ("XMin", "XMax", "YMin", "YMax")]
        except ValueError as exc:
            raise ConfigError(f"boxes CSV data row {n + 1} (ImageID {row['ImageID']}): bad coordinate: {exc}",
                              field="boxes") from exc
        box = BoxRecord(row["ImageID"], url, wanted[label], label, *coords, split=subset)
        found.append((order[label], row["ImageID"], n, box))
    found.sort(key=lambda t: t[:3])
    out: list[BoxRecord] = []
    per_class: dict[str, int] = {}
    for _, _, _, box in found:
        if limit_per_class is not None and per_class.get(box.label_name, 0) >= limit_per_class:
            continue
        per_class[box.label_name] = per_class.get(box.label_name, 0) + 1
        out.append(box)
    return out


def box_pixels(size: tuple[int, int], box: BoxRecord) -> tuple[int, int, int, int]:
    """Pixel box (left, top, right, bottom) = round(coord × size), clamped to the image and at least 1 px."""
    w, h = size

    def span(lo: float, hi: float, n: int) -> tuple[int, int]:
        a = min(max(round(lo * n), 0), n - 1)
        b = min(max(round(hi * n), 0), n)
        return a, max(b, a + 1)

    left, right = span(box.xmin, box.xmax, w)
    top, bottom = span(box.ymin, box.ymax, h)
    return left, top, right, bottom


def crop_box(image: Image.Image, box: BoxRecord) -> Image.Image:
    """Crop `image` to the box's pixel rectangle (see box_pixels)."""
    return image.crop(box_pixels(image.size, box))
