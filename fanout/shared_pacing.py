"""One Hermes rate budget for a whole local run, shared by its worker processes.

On Lambda each instance can only pace itself to a fixed share of R. Locally every
stage lives on one machine, so one budget at R is exact and work-conserving: an
idle stage leaves its share to the busy one (fixed shares capped a local run at
the data_groups share, 0.66-0.68 R measured by bench/ratelimit.py).

The budget is GCRA (a token bucket as "theoretical arrival time") on two shared
doubles: the next free slot and the current rate, which a 429 halves and
successes restore. ``time.monotonic`` is CLOCK_MONOTONIC, the same clock in every
process. A worker killed while holding the lock cannot stall the others: a caller
that cannot get the lock within a second paces itself alone for that call.
"""

from __future__ import annotations

import multiprocessing
import time
from typing import Any


class SharedBudget:
    """The shared state; pass it to worker processes, then build ``pacer()`` there."""

    def __init__(self, rate: float, burst: float, mp: Any = None):
        if rate <= 0:
            raise ValueError("rate must be positive")
        ctx = mp or multiprocessing.get_context("spawn")
        self.target = float(rate)
        self.burst = max(1.0, float(burst))
        self.lock = ctx.Lock()
        self.next_slot = ctx.RawValue("d", 0.0)
        self.rate = ctx.RawValue("d", float(rate))

    def pacer(self) -> SharedPacer:
        return SharedPacer(self)


class SharedPacer:
    """The ``PacerLike`` interface the Hermes client takes, over a ``SharedBudget``."""

    LOCK_TIMEOUT_S = 1.0
    MIN_RATE_FRACTION = 0.05
    RECOVERY_PER_SUCCESS = 0.02

    def __init__(self, budget: SharedBudget):
        self.b = budget

    def acquire(self) -> float:
        """Reserve the next slot; sleep until it comes. Returns the seconds waited."""
        b = self.b
        if not b.lock.acquire(timeout=self.LOCK_TIMEOUT_S):
            wait = 1.0 / b.rate.value
        else:
            try:
                now = time.monotonic()
                interval = 1.0 / b.rate.value
                slot = max(b.next_slot.value, now - (b.burst - 1.0) * interval)
                wait = max(0.0, slot - now)
                b.next_slot.value = slot + interval
            finally:
                b.lock.release()
        if wait > 0:
            time.sleep(wait)
        return wait

    def on_throttled(self, retry_after: float | None) -> None:
        b = self.b
        if b.lock.acquire(timeout=self.LOCK_TIMEOUT_S):
            try:
                b.rate.value = max(b.target * self.MIN_RATE_FRACTION, b.rate.value / 2)
                if retry_after:
                    b.next_slot.value = max(b.next_slot.value, time.monotonic() + retry_after)
            finally:
                b.lock.release()

    def on_success(self) -> None:
        b = self.b
        if b.rate.value < b.target:  # unlocked read: a stale value only delays the climb
            b.rate.value = min(b.target, b.rate.value + b.target * self.RECOVERY_PER_SUCCESS)
