"""Reading bytes from anywhere (local, http, archives) under a policy, and discovering images to import."""
from __future__ import annotations

from visiondb.ingest.archives import ArchiveReader, iter_archive_members
from visiondb.ingest.fetch import Fetcher, parse_uri
from visiondb.ingest.formats import looks_like_image, maybe_decompress
from visiondb.ingest.idx import idx_images_to_png, read_idx
from visiondb.ingest.openimages import BoxRecord, crop_box, select_boxes
from visiondb.ingest.policy import FetchPolicy
from visiondb.ingest.sources import ImageRecord, discover_images

__all__ = [
    "ArchiveReader", "BoxRecord", "FetchPolicy", "Fetcher", "ImageRecord", "crop_box", "discover_images",
    "idx_images_to_png", "iter_archive_members", "looks_like_image", "maybe_decompress", "parse_uri",
    "read_idx", "select_boxes",
]
