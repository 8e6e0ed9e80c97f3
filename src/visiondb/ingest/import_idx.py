"""`import.idx`: MNIST-style IDX image + label files (gz or plain, local or http) → a dataset of small PNG images.

Each image becomes a greyscale PNG stored inline in `vdb.blobs` (batched), so 70,000 Fashion-MNIST rows are cheap.
"""
from __future__ import annotations

from ..core.config import Params
from ..core.outputs import OutputDataset
from ..core.registry import PROCEDURE_TYPES
from ..core.runs import RunContext
from ..core.entities import Procedure
from ..errors import ConfigError, VisionDBError

CHUNK_ROWS = 5_000


class ImportIDXParams(Params):
    imagesUrl: str
    labelsUrl: str | None = None
    outputDataset: OutputDataset
    labelNames: list[str] | None = None
    limit: int | None = None
    offset: int = 0  # added to the row number in `_rowName` (e.g. 60000 for the test split after the train split)


@PROCEDURE_TYPES.register("import.idx")
class ImportIDX(Procedure):
    """Writes `_rowName` (row number), `image` (PNG image value) and `label` (int, or its name from `labelNames`)."""

    Params = ImportIDXParams
    params: ImportIDXParams

    def run(self, ctx: RunContext) -> dict:
        import pyarrow as pa

        from .idx import idx_images_to_png, read_idx
        from ..storage.images import store_images
        from .writes import IMAGE_ARROW, write_chunk

        p, db = self.params, self.db
        out = p.outputDataset.id
        db.datasets.check_id(out)
        if p.limit is not None and p.limit < 0:
            raise ConfigError(f"limit must be >= 0, got {p.limit}", field="params.limit")
        ctx.set_progress(0, None, phase="reading " + p.imagesUrl)
        images = self._read(read_idx, p.imagesUrl, "imagesUrl")
        if images.ndim != 3:
            raise ConfigError(f"{p.imagesUrl}: expected an N×H×W image array, got shape {images.shape}",
                              field="params.imagesUrl")
        labels = None
        if p.labelsUrl:
            labels = self._read(read_idx, p.labelsUrl, "labelsUrl").reshape(-1)
            if len(labels) != len(images):
                raise ConfigError(f"{p.labelsUrl} has {len(labels)} labels but {p.imagesUrl} has {len(images)} images",
                                  field="params.labelsUrl")
        n = len(images) if p.limit is None else min(p.limit, len(images))
        names = p.labelNames
        if labels is not None and names is not None:
            top = int(labels[:n].max(initial=0))
            if top >= len(names) or int(labels[:n].min(initial=0)) < 0:
                raise ConfigError(f"label {top} in {p.labelsUrl} has no entry in labelNames ({len(names)} names)",
                                  field="params.labelNames")
        bar = ctx.bar(n, f"import.idx → {out}", unit="img")
        try:
            for start in range(0, max(n, 1), CHUNK_ROWS):
                stop = min(start + CHUNK_ROWS, n)
                pngs = idx_images_to_png(images[start:stop]) if stop > start else []
                rows = [str(p.offset + i) for i in range(start, stop)]
                values = store_images(db, [(f"idx:{p.imagesUrl}#{i}", b) for i, b in zip(range(start, stop), pngs)])
                for name, v in zip(rows, values):
                    if isinstance(v, VisionDBError):  # cannot happen for freshly encoded PNGs, but never silently
                        raise VisionDBError(f"import.idx: row {name}: {v.message}", row=name)
                cols: dict = {"_rowName": pa.array(rows, pa.string()), "image": pa.array(values, IMAGE_ARROW)}
                if labels is not None:
                    chunk = labels[start:stop]
                    cols["label"] = (pa.array([names[int(v)] for v in chunk], pa.string()) if names is not None
                                     else pa.array(chunk.astype("int64")))
                write_chunk(db, out, pa.table(cols), first=(start == 0))
                bar.update(stop - start)
        finally:
            bar.close()
        db.datasets.register_output(out, p.outputDataset.type, {"createdBy": self.id})
        return {"outputDataset": out, "rowCount": db.table_status(out)["rowCount"],
                "imageShape": list(images.shape[1:])}

    def _read(self, read_idx, uri: str, field: str):  # type: ignore[no-untyped-def]
        try:
            return read_idx(self.db.fetcher.read(uri, decompress=True))
        except VisionDBError as exc:
            raise type(exc)(f"import.idx {field} {uri}: {exc.message}", **{**exc.details, "field": f"params.{field}"}) from None

