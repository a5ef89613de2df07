"""Fault injection for the local runtime: storage that fails transiently, on purpose.

Used by the fault-injection suite and ``fanout local run --storage-fault-rate``; it
shows that a failed write or read is retried like any other transient error and
that nothing is lost or written twice because of it.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator

from fanout_core.errors import TransientError
from fanout_core.storage import Storage


class FlakyStorage:
    """Wraps a storage; each get/put fails with a TransientError at ``rate`` (seeded)."""

    def __init__(self, inner: Storage, rate: float, seed: int | None = None):
        if not 0 <= rate < 1:
            raise ValueError("rate must be in [0, 1)")
        self.inner = inner
        self.rate = rate
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.injected = 0

    def _maybe_fail(self, op: str, key: str) -> None:
        with self._lock:
            fail = self._rng.random() < self.rate
            if fail:
                self.injected += 1
        if fail:
            raise TransientError(f"injected storage fault: {op} {key} (SlowDown)", status=503, kind="storage")

    def get(self, key: str) -> bytes:
        self._maybe_fail("get", key)
        return self.inner.get(key)

    def put(self, key: str, body: bytes) -> None:
        self._maybe_fail("put", key)
        self.inner.put(key, body)

    def put_if_absent(self, key: str, body: bytes) -> bool:
        self._maybe_fail("put_if_absent", key)
        return self.inner.put_if_absent(key, body)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def last_modified(self, key: str) -> float | None:
        return self.inner.last_modified(key)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def list(self, prefix: str) -> Iterator[str]:
        return self.inner.list(prefix)
