"""Fixtures for the core tests: small real image sets from ../shared/datasets and bad files made on the fly."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from PIL import Image

import visiondb
from tests.support.paths import dataset


@pytest.fixture
def db(tmp_path):
    database = visiondb.connect(tmp_path / "test.duckdb")
    yield database
    database.close()


def pick(name: str, split: str, per_class: int) -> list[tuple[str, Path]]:
    """The first `per_class` photos of each class of one split, as (label, path)."""
    root = dataset(name) / split
    out = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(f for f in class_dir.iterdir() if f.suffix.lower() in (".jpg", ".jpeg"))[:per_class]
        out += [(class_dir.name, f.resolve()) for f in files]
    return out


@pytest.fixture(scope="session")
def bees_csv(tmp_path_factory) -> Path:
    """A CSV (uri,label,split) of 12 ants + 12 bees from train and 8 + 8 from val."""
    path = tmp_path_factory.mktemp("bees") / "bees.csv"
    rows = [(str(p), label, "train") for label, p in pick("hymenoptera", "train", 12)]
    rows += [(str(p), label, "val") for label, p in pick("hymenoptera", "val", 8)]
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["uri", "label", "split"])
        writer.writerows(rows)
    return path


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="session")
def odd_images(tmp_path_factory) -> dict[str, Path]:
    """Good-but-unusual images (must import) and bad files (must become per-row errors)."""
    folder = tmp_path_factory.mktemp("odd")
    photo = sorted((dataset("clothing") / "test" / "hat").glob("*.jpg"))[0]
    raw = photo.read_bytes()
    rgb = Image.open(photo).convert("RGB")
    files = {
        "grey.png": encode(rgb.convert("L"), "PNG"),
        "rgba.png": encode(rgb.convert("RGBA"), "PNG"),
        "deep16.png": encode(rgb.convert("L").point(lambda v: v * 256, mode="I").convert("I;16"), "PNG"),
        "cmyk.jpg": encode(rgb.convert("CMYK"), "JPEG"),
        "palette.gif": encode(rgb.convert("P", palette=Image.Palette.ADAPTIVE), "GIF"),
        "corrupt.jpg": raw[:600] + bytes(range(256)) * 40 + raw[-2000:],
        "truncated.jpg": raw[: len(raw) // 2],
        "empty.jpg": b"",
        "notes.jpg": b"these are my shopping notes, not a picture\n",
    }
    paths = {}
    for name, data in files.items():
        (folder / name).write_bytes(data)
        paths[name] = folder / name
    paths["gif_junk"] = (dataset("hymenoptera") / "train" / "ants" / "imageNotFound.gif").resolve()
    return paths
