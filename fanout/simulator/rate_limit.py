"""Token-bucket rate limiting per bearer token.

Why its own module: the limit is what a crawler's pacing is measured against, so it stays
small and obviously right.
"""

from __future__ import annotations

import threading
import time


class _TokenBuckets:
    """One token bucket per bearer token; answers how long to wait when empty."""

    def __init__(self, rate: float, burst: float) -> None:
        self._rate = rate
        self._burst = burst
        self._lock = threading.Lock()
        self._state: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> float:
        """0.0 if a request may go now (and it is counted), else seconds until it may."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._state.get(key, (self._burst, now))
            tokens = min(self._burst, tokens + (now - last) * self._rate)
            if tokens >= 1.0:
                self._state[key] = (tokens - 1.0, now)
                return 0.0
            self._state[key] = (tokens, now)
            return (1.0 - tokens) / self._rate
