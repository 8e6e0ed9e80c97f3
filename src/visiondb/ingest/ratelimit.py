"""Per-host request pacing for polite crawling (a token bucket of capacity one, i.e. evenly spaced slots)."""
from __future__ import annotations

import threading
import time


class HostRateLimiter:
    """Blocks callers so that each host sees at most `rate` requests per second; thread-safe."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self._next: dict[str, float] = {}
        self._lock = threading.Lock()

    def acquire(self, host: str) -> None:
        """Reserve the next free slot for `host` and sleep until it comes."""
        if not self.rate:
            return
        interval = 1.0 / self.rate
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next.get(host, now))
            self._next[host] = slot + interval
        delay = slot - time.monotonic()
        if delay > 0:
            time.sleep(delay)
