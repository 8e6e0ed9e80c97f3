"""import.text and import.images on real files, local and over a real local HTTP server, with bad input."""
from __future__ import annotations

import csv
import gzip
import shutil


from tests.support.httpserver import TestHTTPServer
from tests.support.paths import dataset


def test_import_text_local_gz_and_http(db, tmp_path):
    rows = [("audi", "a.jpg"), ("bmw", "b.jpg"), ("tesla", "c.jpg"), ("bmw", "d.jpg")]
    plain = tmp_path / "cars.csv"
    with plain.open("w", newline="") as fh:
        csv.writer(fh).writerows([("brand", "url"), *rows])
    with plain.open("rb") as src, gzip.open(tmp_path / "cars.csv.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    db.procedures.put("t1", {"type": "import.text", "params": {"dataFileUrl": str(plain), "outputDataset": "cars"}})
    assert db.sql("SELECT brand, count(*) FROM cars GROUP BY brand ORDER BY brand").fetchall() == [
        ("audi", 1), ("bmw", 2), ("tesla", 1)]
    db.procedures.put("t2", {"type": "import.text", "params": {
        "dataFileUrl": str(tmp_path / "cars.csv.gz"), "outputDataset": "cars_gz", "where": "brand = 'bmw'",
        "select": "upper(brand) AS brand, url", "limit": 1}})
    assert db.sql("SELECT brand, url FROM cars_gz").fetchall() == [("BMW", "b.jpg")]
    with TestHTTPServer(tmp_path) as srv:
        db.procedures.put("t3", {"type": "import.text", "params": {
            "dataFileUrl": srv.url("cars.csv"), "outputDataset": "cars_http", "headers": ["b", "u"]}})
    assert db.sql("SELECT count(*) FROM cars_http").fetchone()[0] == 5  # the header line is a row when headers given


def test_import_images_csv_labels_and_splits(db, bees_csv):
    run = db.procedures.put("imp", {"type": "import.images", "params": {
        "dataFileUrl": str(bees_csv), "outputDataset": "bees", "labelColumn": "label", "splitColumn": "split"}})
    status = run["status"]["firstRun"]["status"]
    assert status["rowCount"] == 40 and status["errorCount"] == 0
    assert db.sql("SELECT split, label, count(*) FROM bees GROUP BY ALL ORDER BY ALL").fetchall() == [
        ("train", "ants", 12), ("train", "bees", 12), ("val", "ants", 8), ("val", "bees", 8)]
    img = db.sql("SELECT image FROM bees LIMIT 1").fetchone()[0]
    assert img["format"] == "JPEG" and img["width"] > 0 and len(img["sha256"]) == 64
    data = db.sql("SELECT fetch_bytes(image) FROM bees LIMIT 1").fetchone()[0]
    import hashlib

    assert hashlib.sha256(data).hexdigest() == img["sha256"]


def test_import_images_folder_layout(db):
    root = dataset("hymenoptera") / "val"
    db.procedures.put("imp", {"type": "import.images", "params": {
        "dataFileUrl": str(root), "outputDataset": "val", "limit": 10}})
    rows = db.sql("SELECT _rowName, label, split FROM val ORDER BY _rowName").fetchall()
    assert len(rows) == 10 and all(r[1] in ("ants", "bees") and r[2] is None for r in rows)
    assert rows[0][0].startswith(("ants/", "bees/"))


def test_bad_files_are_per_row_errors_and_odd_formats_import(db, odd_images, tmp_path):
    good_names = ["grey.png", "rgba.png", "deep16.png", "cmyk.jpg", "palette.gif", "gif_junk"]
    bad_names = ["corrupt.jpg", "truncated.jpg", "empty.jpg", "notes.jpg"]
    with TestHTTPServer(tmp_path) as srv:
        listing = tmp_path / "list.csv"
        with listing.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["uri", "label"])
            for name in good_names + bad_names:
                writer.writerow([str(odd_images[name]), name])
            writer.writerow([srv.url("missing.jpg"), "404"])
        run = db.procedures.put("imp", {"type": "import.images", "params": {
            "dataFileUrl": str(listing), "outputDataset": "odd", "labelColumn": "label"}})
    record = run["status"]["firstRun"]
    assert sorted(r[0] for r in db.sql("SELECT label FROM odd").fetchall()) == sorted(good_names)
    causes = {e["row"]: e["cause"] for e in record["errors"]}
    assert len(causes) == 5
    by_uri = {e["uri"]: e for e in record["errors"]}
    assert "404" in by_uri[srv.url("missing.jpg")]["cause"]
    assert "empty" in by_uri[str(odd_images["empty.jpg"])]["cause"]
    assert "not an image" in by_uri[str(odd_images["notes.jpg"])]["cause"]
    assert "truncated" in by_uri[str(odd_images["truncated.jpg"])]["cause"]
    assert by_uri[str(odd_images["corrupt.jpg"])]["cause"]
    assert db.sql("SELECT count(*) FROM odd_errors").fetchone()[0] == 5
    # every stored image decodes to RGB through the SQL path
    from visiondb.imaging.decode import decode_rgb

    for (data,) in db.sql("SELECT fetch_bytes(image) FROM odd").fetchall():
        assert decode_rgb(data).mode == "RGB"


def test_reimport_does_not_duplicate(db, bees_csv):
    cfg = {"type": "import.images", "params": {"dataFileUrl": str(bees_csv), "outputDataset": "bees", "limit": 6}}
    db.procedures.put("imp", cfg)
    db.procedures.run("imp")
    assert db.sql("SELECT count(*), count(DISTINCT _rowName) FROM bees").fetchone() == (6, 6)


def test_import_images_from_csv_of_http_urls(db, tmp_path, bees_csv):
    """A CSV of http URLs served by a real local HTTP server (as MLDB's car-brand notebook)."""
    rows = list(csv.DictReader(bees_csv.open()))[:6]
    root = dataset("hymenoptera").resolve()
    with TestHTTPServer(root) as srv:
        listing = tmp_path / "urls.csv"
        with listing.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["brand", "url"])
            for r in rows:
                rel = str(__import__("pathlib").Path(r["uri"]).resolve().relative_to(root))
                writer.writerow([r["label"], srv.url(rel)])
        db.procedures.put("imp", {"type": "import.images", "params": {
            "dataFileUrl": str(listing), "outputDataset": "web", "uriColumn": "url",
            "labelColumn": "brand"}})
        db.procedures.put("txt", {"type": "import.text", "params": {"dataFileUrl": str(listing), "outputDataset": "web_csv"}})
        db.functions.put("effnet", {"type": "image.embedding", "params": {}})
        db.procedures.put("feat", {"type": "transform", "params": {
            "inputData": "SELECT brand, effnet(url) AS features FROM web_csv", "outputDataset": "web_features"}})
        hits = sum(srv.hits.values())
    assert db.sql("SELECT count(*) FROM web WHERE image.uri LIKE 'http://127.0.0.1:%'").fetchone()[0] == 6
    assert db.sql("SELECT count(*) FROM web_features WHERE len(features) = 1280").fetchone()[0] == 6
    assert hits >= 12  # the import and the transform both fetched over HTTP
