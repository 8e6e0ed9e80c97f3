"""Imports every module that registers an entity type (the registries' single source of truth)."""
from __future__ import annotations

from .storage import datasets  # noqa: F401
from .sql import embedding, expression, transform  # noqa: F401
from .ingest import import_text  # noqa: F401
from .ingest import import_images  # noqa: F401
from .learn import procedures as learn_procedures, scorer  # noqa: F401
from .ingest import import_sql, import_idx, import_openimages  # noqa: F401
