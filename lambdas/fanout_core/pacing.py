"""Client-side pacing: each instance keeps to its share of Hermes' rate limit.

S3 events cannot be rate-limited, so every concurrent instance paces itself to
``R_stage / reserved_concurrency`` calls/s; together they never exceed R. A 429
halves the pace for a while; it climbs back as calls succeed (AIMD).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Pacer:
    """A token bucket that blocks callers until they may make their next call."""

    def __init__(
        self,
        rate: float,
        *,
        burst: float | None = None,
        min_rate_fraction: float = 0.05,
        recovery_per_success: float = 0.02,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.target_rate = rate
        self.rate = rate
        self.burst = max(1.0, burst if burst is not None else min(rate * 0.1, 10.0))
        self._min_rate = rate * min_rate_fraction
        self._recovery = recovery_per_success
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._last = clock()
        self._lock = threading.Lock()
        self._paused_until = 0.0

    def _refill(self, now: float) -> None:
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now

    def acquire(self) -> float:
        """Wait for one call's token; returns the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                self._refill(now)
                pause = self._paused_until - now
                if pause <= 0 and self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return waited
                delay = max(pause, (1.0 - self._tokens) / self.rate)
            self._sleep(delay)
            waited += delay

    def on_throttled(self, retry_after: float | None) -> None:
        """A 429: slow down, and hold every caller for Retry-After."""
        with self._lock:
            now = self._clock()
            # Bring the bucket up to now first, or the time since the last acquire (the
            # throttled request's own round trip) is credited after the drain below.
            self._refill(now)
            self.rate = max(self._min_rate, self.rate / 2)
            if retry_after:
                self._paused_until = max(self._paused_until, now + retry_after)
            self._tokens = min(self._tokens, 0.0)

    def on_success(self) -> None:
        if self.rate < self.target_rate:
            with self._lock:
                self.rate = min(self.target_rate, self.rate + self.target_rate * self._recovery)


class NoPacer:
    """Pacing switched off (the concurrency cap alone limits the rate)."""

    def acquire(self) -> float:
        return 0.0

    def on_throttled(self, retry_after: float | None) -> None:
        pass

    def on_success(self) -> None:
        pass
