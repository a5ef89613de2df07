"""The server's counters and their consistent snapshot, :class:`SimStats`.

Why its own module: tests and benchmarks read these counters to check what a client did
(calls made, 429s provoked), so they are shared by the server and its request handler.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SimStats:
    """A consistent snapshot of the server's counters."""

    requests: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    rate_limited: int = 0
    """429s caused by the token bucket."""
    injected_429: int = 0
    refused_share: int = 0
    """429s of ``refuse_share`` (a share refused whatever the rate)."""
    outage: int = 0
    """429s of the outage window (``outage_at_s``)."""
    injected_5xx: int = 0
    garbage: int = 0
    hangs: int = 0
    pages_served: int = 0
    """Successful list responses (every 200 except health and garbage)."""
    recent_requests: tuple[str, ...] = ()
    """The raw request lines (``GET /v1/... HTTP/1.1``, path exactly as received) of the
    last ``SimConfig.request_log_size`` requests, oldest first."""


class _Counters:
    def __init__(self, log_size: int = 64) -> None:
        self._lock = threading.Lock()
        self._log_size = log_size
        self._reset()

    def _reset(self) -> None:
        self.requests = 0
        self.by_status: Counter[int] = Counter()
        self.kinds: Counter[str] = Counter()
        self.recent: deque[str] = deque(maxlen=self._log_size)

    def record(self, status: int, kind: str | None, line: str = "") -> None:
        with self._lock:
            self.recent.append(line)
            self.requests += 1
            self.by_status[status] += 1
            if kind:
                self.kinds[kind] += 1

    def hang(self) -> None:
        with self._lock:
            self.kinds["hangs"] += 1

    def snapshot(self) -> SimStats:
        with self._lock:
            k = self.kinds
            return SimStats(
                requests=self.requests,
                by_status=dict(sorted(self.by_status.items())),
                rate_limited=k["rate_limited"],
                injected_429=k["injected_429"],
                refused_share=k["refused_share"],
                outage=k["outage"],
                injected_5xx=k["injected_5xx"],
                garbage=k["garbage"],
                hangs=k["hangs"],
                pages_served=k["page"],
                recent_requests=tuple(self.recent),
            )

    def reset(self) -> None:
        with self._lock:
            self._reset()
