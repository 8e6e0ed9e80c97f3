"""Suite-wide test settings: quiet progress bars, and fixtures every folder may use."""
from __future__ import annotations

import os

os.environ.setdefault("VISIONDB_PROGRESS", "0")
os.environ.setdefault("VISIONDB_NO_MALLOC_TUNING", "1")
