"""One decode path, any runtime: ONNX and PyTorch agree in SQL, and EXIF-rotated photos come out upright."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

import visiondb

from .conftest import write_uri_csv

_ORIENTATION = 0x0112
# EXIF orientation -> how the camera stored the upright picture (the inverse of the transpose that fixes it)
_STORED = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b))


def test_onnx_and_torch_agree_in_sql(tmp_path: Path, photos: list[Path], cache_dir: Path) -> None:
    db = visiondb.connect(tmp_path / "backends.duckdb", cache_dir=cache_dir)
    try:
        db.procedures.put("imp", {"type": "import.images", "params": {
            "dataFileUrl": str(write_uri_csv(tmp_path / "p.csv", [str(p) for p in photos[::3]])),
            "outputDataset": "photos"}})
        db.functions.put("e_onnx", {"type": "image.embedding", "params": {"backend": "onnx"}})
        db.functions.put("e_torch", {"type": "image.embedding", "params": {"backend": "torch", "useCache": False}})
        rows = db.sql("SELECT e_onnx(image), e_torch(image) FROM photos ORDER BY _rowName").fetchall()
        assert len(rows) == 4
        for onnx_vec, torch_vec in rows:
            np.testing.assert_allclose(onnx_vec, torch_vec, atol=2e-4, rtol=1e-3)
        assert db.functions.instance("e_torch").forward_rows == 4
    finally:
        db.close()


def test_exif_rotated_photos_come_out_upright(tmp_path: Path, photos: list[Path], cache_dir: Path) -> None:
    # a real photo, small enough (short side 280) that no DCT scaling happens, so pixels compare exactly
    upright = Image.open(photos[1]).convert("RGB").resize((373, 280), Image.Resampling.BICUBIC)
    files: dict[int, tuple[Path, Path]] = {}
    for orientation, stored_as in _STORED.items():
        exif = Image.Exif()
        exif[_ORIENTATION] = orientation
        rotated = tmp_path / f"rotated-{orientation}.jpg"
        upright.transpose(stored_as).save(rotated, "JPEG", quality=95, exif=exif.tobytes())
        # the reference: the same stored JPEG pixels, turned upright by hand, saved losslessly without EXIF
        stored = Image.open(rotated)
        stored.load()
        assert stored.getexif().get(_ORIENTATION) == orientation
        manual = tmp_path / f"manual-{orientation}.png"
        stored.convert("RGB").transpose(_fix(orientation)).save(manual, "PNG")
        files[orientation] = (rotated, manual)
    db = visiondb.connect(tmp_path / "exif.duckdb", cache_dir=cache_dir)
    try:
        uris = [str(p) for pair in files.values() for p in pair]
        db.procedures.put("imp", {"type": "import.images", "params": {
            "dataFileUrl": str(write_uri_csv(tmp_path / "exif.csv", uris)), "outputDataset": "exif"}})
        db.functions.put("emb", {"type": "image.embedding", "params": {}})
        db.procedures.put("feat", {"type": "transform", "params": {
            "inputData": "SELECT image.uri AS uri, image.width AS w, image.height AS h, emb(image) AS v FROM exif",
            "outputDataset": "exif_vecs"}})
        got = {uri: (w, h, np.asarray(v)) for uri, w, h, v in db.sql("SELECT uri, w, h, v FROM exif_vecs").fetchall()}
        sideways = db.functions.apply("emb", {"url": _plain_copy(tmp_path, files[6][0])})["embedding"]
        for orientation, (rotated, manual) in files.items():
            vec, ref = got[str(rotated)][2], got[str(manual)][2]
            np.testing.assert_allclose(vec, ref, atol=1e-4)
            assert _cosine(vec, ref) > 0.9999
        assert _cosine(got[str(files[6][0])][2], np.asarray(sideways)) < 0.99  # orientation really mattered
    finally:
        db.close()


def _fix(orientation: int) -> Image.Transpose:
    """The transpose that makes a stored image with this EXIF orientation upright."""
    return {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_270, 8: Image.Transpose.ROTATE_90}[orientation]


def _plain_copy(tmp_path: Path, jpeg: Path) -> str:
    """The stored (sideways) pixels of a JPEG without its EXIF, as a lossless PNG: what ignoring EXIF would see."""
    out = tmp_path / f"plain-{jpeg.stem}.png"
    Image.open(jpeg).convert("RGB").save(out, "PNG")
    return str(out)
