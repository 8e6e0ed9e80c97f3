"""Server settings: auth token, file/URL access rules, body limits, time limits and micro-batching knobs."""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..errors import ConfigError

MiB = 1024 * 1024


@dataclass
class ServerSettings:
    """Everything `create_app` needs besides the database; `from_env` fills the token from VISIONDB_TOKEN."""

    token: str | None = None
    protect_reads: bool = False
    allow_roots: Sequence[str | Path] = ()
    allow_fetch: Sequence[str] = ()
    max_body_bytes: int = 32 * MiB
    max_upload_bytes: int = 16 * MiB
    max_batch: int = 32
    max_wait_ms: float = 5.0
    apply_timeout_s: float = 600.0  # longest a function application may wait for its (batched) result
    query_timeout_s: float = 300.0  # longest a GET /v1/query statement may run before it is interrupted
    warm: Sequence[str] = ()
    install_fetch_policy: bool = True
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.token is None:
            self.token = os.environ.get("VISIONDB_TOKEN") or None
        self.allow_roots = tuple(str(Path(r).expanduser().resolve()) for r in self.allow_roots)
        self.allow_fetch = tuple(self.allow_fetch)
        self.warm = tuple(self.warm)
        if self.max_batch < 1:
            raise ConfigError(f"max_batch must be >= 1, got {self.max_batch}", field="max_batch")
        if not self.apply_timeout_s > 0:
            raise ConfigError(f"apply_timeout_s must be > 0, got {self.apply_timeout_s}", field="apply_timeout_s")
        if not 0 < self.query_timeout_s <= threading.TIMEOUT_MAX:  # a longer one cannot start its timer
            raise ConfigError(f"query_timeout_s must be > 0 and at most {threading.TIMEOUT_MAX:g}, got "
                              f"{self.query_timeout_s}", field="query_timeout_s")
        if self.max_wait_ms < 0:
            raise ConfigError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}", field="max_wait_ms")
