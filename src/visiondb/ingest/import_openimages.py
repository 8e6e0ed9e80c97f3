"""`import.openimages`: Open Images box annotations → a dataset of object crops (one row per box).

Selects boxes with `ingest.openimages.select_boxes`, downloads each photo once (parallel, per-host rate limit),
crops every box, stores the crop via `db.store_image`. Re-runs with the same params skip the crops already stored.
"""
from __future__ import annotations

import dataclasses
import io
import json
from typing import Any, Literal

import pyarrow as pa

from ..core.config import Params
from ..core.entities import Procedure, quote_ident
from ..core.outputs import OutputDataset
from ..core.registry import PROCEDURE_TYPES
from ..core.runs import RunContext
from ..errors import ConfigError, VisionDBError
from .writes import ERROR_COLUMNS, IMAGE_ARROW, clear_errors, errors_table, registered, write_errors

CHUNK_IMAGES = 64
TABLE_COLUMNS = (
    "_rowName VARCHAR PRIMARY KEY, image image, label VARCHAR, label_name VARCHAR, source_image image, split VARCHAR,"
    " xmin DOUBLE, xmax DOUBLE, ymin DOUBLE, ymax DOUBLE,"
    " box_left INTEGER, box_top INTEGER, box_right INTEGER, box_bottom INTEGER"
)


class ImportOpenImagesParams(Params):
    classDescriptionsUrl: str
    boxesUrl: str
    imageIdsUrl: str
    classes: list[str]
    outputDataset: OutputDataset
    limitPerClass: int | None = None
    split: str | None = None
    concurrency: int | None = None
    ratePerHost: float | None = None
    format: Literal["jpeg", "png"] = "jpeg"
    keepSourceImages: bool = False  # store the full photos' bytes too (else source_image only references the URL)
    preferThumbnail: bool = False
    resume: bool = True


@PROCEDURE_TYPES.register("import.openimages")
class ImportOpenImages(Procedure):
    """Object crops with `label` (display name), `label_name` (/m/ id), normalised and pixel box coordinates."""

    Params = ImportOpenImagesParams
    params: ImportOpenImagesParams

    def run(self, ctx: RunContext) -> dict:
        from .fetch import Fetcher
        from .openimages import select_boxes

        p, db = self.params, self.db
        out = p.outputDataset.id
        db.datasets.check_id(out)
        ctx.set_progress(0, None, phase="reading annotation CSVs")
        csvs = [self._read(getattr(p, f), f) for f in ("classDescriptionsUrl", "boxesUrl", "imageIdsUrl")]
        boxes = select_boxes(*csvs, p.classes, p.limitPerClass, p.split, prefer_thumbnail=p.preferThumbnail)
        per_image: dict[str, list[tuple[str, Any]]] = {}
        for box in boxes:
            group = per_image.setdefault(box.image_id, [])
            group.append((f"{box.image_id}_{len(group)}", box))
        signature = json.dumps({"procedure": self.id, "params": p.model_dump(mode="json")}, sort_keys=True)
        done = self._prepare(out, signature)
        todo = [(iid, group) for iid, group in per_image.items() if any(name not in done for name, _ in group)]
        fetcher = db.fetcher
        own = p.ratePerHost is not None
        if own:
            fetcher = Fetcher(dataclasses.replace(db.fetcher.policy, rate_per_host=p.ratePerHost))
        crops = 0
        bar = ctx.bar(len(todo), f"import.openimages → {out}", unit="img")
        try:
            rows: list[dict] = []
            bad: list[dict] = []
            flushed = 0
            urls = [group[0][1].url for _, group in todo]
            for n, (index, got) in enumerate(fetcher.read_many(urls, concurrency=p.concurrency), start=1):
                image_id, group = todo[index]
                try:
                    if isinstance(got, Exception):
                        raise got
                    rows.extend(self._crops(got, [(name, b) for name, b in group if name not in done]))
                except VisionDBError as exc:
                    for name, box in group:
                        ctx.record_error(f"image {image_id}: {exc.message}", row=name, uri=box.url)
                        bad.append({"_rowName": name, "uri": box.url, "status": getattr(exc, "status", None),
                                    "cause": f"image {image_id}: {exc.message}"})
                if n % CHUNK_IMAGES == 0 or n == len(todo):
                    crops += self._flush(out, rows, bad, ctx.run_id)
                    bar.update(n - flushed)
                    rows, bad, flushed = [], [], n
        finally:
            bar.close()
            if own:
                fetcher.close()
        db.datasets.register_output(out, p.outputDataset.type, {"createdBy": self.id})
        db.datasets.register_output(out + "_errors", "tabular", {"createdBy": self.id})
        return {
            "outputDataset": out,
            "errorsDataset": out + "_errors",
            "rowCount": db.table_status(out)["rowCount"],
            "selectedBoxes": len(boxes),
            "imported": crops,
            "alreadyPresent": len(boxes) - sum(1 for _, g in todo for name, _ in g if name not in done),
            "imagesFetched": len(todo),
            "errorCount": ctx.record.get("errorCount", 0),
        }

    def _read(self, uri: str, field: str) -> bytes:
        try:
            return self.db.fetcher.read(uri, decompress=True)
        except VisionDBError as exc:
            raise ConfigError(f"import.openimages {field} {uri}: {exc.message}", field=f"params.{field}") from None

    def _prepare(self, out: str, signature: str) -> set[str]:
        """Keep the output when re-running the same import (returns its row names), else start afresh."""
        db, cur = self.db, self.db.cursor()
        # crops are independent rows: a re-run of the same import keeps them, finished or not, and adds what is missing
        same = db.catalog.get_marker(out).get("signature") == signature
        if not (self.params.resume and same and db.table_exists(out)):
            cur.execute(f"DROP TABLE IF EXISTS {quote_ident(out)}")
            cur.execute(f"DROP TABLE IF EXISTS {quote_ident(errors_table(out))}")
        cur.execute(f"CREATE TABLE IF NOT EXISTS {quote_ident(out)} ({TABLE_COLUMNS})")
        cur.execute(f"CREATE TABLE IF NOT EXISTS {quote_ident(errors_table(out))} ({ERROR_COLUMNS})")
        db.catalog.set_marker(out, self.type_name, signature, complete=False)
        return {r[0] for r in cur.execute(f"SELECT _rowName FROM {quote_ident(out)}").fetchall()}

    def _crops(self, data: bytes, group: list[tuple[str, Any]]) -> list[dict]:
        """Decode the photo once, crop and encode each box, store the crops; returns the rows."""
        from ..imaging.decode import decode_rgb
        from ..storage.images import image_value
        from ..storage.media import sha256_hex
        from .openimages import box_pixels

        db, p = self.db, self.params
        url = group[0][1].url
        img = decode_rgb(data)
        sha = sha256_hex(data)
        source = image_value(url, data, sha)
        if p.keepSourceImages:
            db.media.put(data, sha)
        rows = []
        for name, box in group:
            left, top, right, bottom = box_pixels(img.size, box)
            buf = io.BytesIO()
            crop = img.crop((left, top, right, bottom))
            if p.format == "jpeg":
                crop.save(buf, format="JPEG", quality=95)
            else:
                crop.save(buf, format="PNG")
            value = db.store_image(f"{url}#box={left},{top},{right},{bottom}", buf.getvalue())
            rows.append({
                "_rowName": name, "image": value, "label": box.class_name, "label_name": box.label_name,
                "source_image": source, "split": box.split,
                "xmin": box.xmin, "xmax": box.xmax, "ymin": box.ymin, "ymax": box.ymax,
                "box_left": left, "box_top": top, "box_right": right, "box_bottom": bottom,
            })
        return rows

    def _flush(self, out: str, rows: list[dict], bad: list[dict], run_id: str) -> int:
        """Insert one chunk and its errors atomically, skipping rows already present; rows that now succeed lose
        the error rows earlier runs left for them."""
        with self.db.transaction():
            count = self._insert(out, rows)
            clear_errors(self.db, out, [r["_rowName"] for r in rows], run_id)
            write_errors(self.db, out, bad, run_id)
        return count

    def _insert(self, out: str, rows: list[dict]) -> int:
        if not rows:
            return 0
        schema = pa.schema([
            ("_rowName", pa.string()), ("image", IMAGE_ARROW), ("label", pa.string()), ("label_name", pa.string()),
            ("source_image", IMAGE_ARROW), ("split", pa.string()),
            *[(c, pa.float64()) for c in ("xmin", "xmax", "ymin", "ymax")],
            *[(c, pa.int32()) for c in ("box_left", "box_top", "box_right", "box_bottom")],
        ])
        cur = self.db.cursor()
        with registered(cur, "_vdb_oi_chunk", pa.Table.from_pylist(rows, schema=schema)):
            cur.execute(
                f"INSERT INTO {quote_ident(out)} BY NAME SELECT * REPLACE (image::image AS image,"
                f" source_image::image AS source_image) FROM _vdb_oi_chunk"
                f" WHERE _rowName NOT IN (SELECT _rowName FROM {quote_ident(out)})"
            )
        return len(rows)
