"""One Hermes rate budget for a whole local run, shared by its worker processes.

On Lambda each instance can only pace itself. Locally every stage lives on one machine,
so one budget bounded by R is exact and work-conserving: an idle stage leaves its share
to the busy one (fixed shares capped a Hermes run at its leaf stage's share, 0.66-0.68 R
measured by bench/ratelimit.py).

The budget is GCRA with adaptive pacing (``fanout_core.adaptive_rate``): its whole state,
the next free slot, the rate and what the controller learned from 429s, is one vector of
doubles in shared memory, so the runtime and every worker process adapt as one budget.
``time.monotonic`` is CLOCK_MONOTONIC, the same clock in every process. A worker killed
while holding the lock cannot stall the others: a caller that cannot get the lock within
a second paces itself alone for that call.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fanout_core.adaptive_rate import (
    CUT_AT,
    STATE_SIZE,
    W_MAX,
    Controller,
    Tuning,
    known_limit_state,
    new_state,
)
from fanout_core.pacing import ControlledPacer


class SharedBudget:
    """The shared state; pass it to worker processes, then build ``pacer()`` there.

    ``rate`` is the bound R; ``start`` the rate to begin at (None: R). Adaptive pacing
    never goes above R; with R told exactly it paces at R and backs off only on a 429.
    With ``known``, ``start`` is a limit an earlier run learned: the budget starts as right
    after a cut there (just below it, probing past it slowly) instead of doubling until a 429.
    """

    def __init__(
        self,
        rate: float,
        burst: float,
        mp: Any = None,
        *,
        start: float | None = None,
        tuning: Tuning | None = None,
        known: bool = False,
    ):
        if rate <= 0:
            raise ValueError("rate must be positive")
        ctx = mp or multiprocessing.get_context("spawn")
        self.target = float(rate)
        self.burst = max(1.0, float(burst))
        self.tuning = tuning or Tuning()
        self.lock = ctx.Lock()
        self.state = ctx.RawArray("d", STATE_SIZE)
        first = min(self.target, start) if start else self.target
        now = time.monotonic()
        fresh = known_limit_state(first, now, self.tuning) if known else new_state(first, now)
        self.state[:] = fresh
        self._first_cut = fresh[CUT_AT]

    def learned(self) -> float | None:
        """The rate at which 429s began (the last cut's), once a 429 of this run cut the rate."""
        with self.lock:
            cut, limit = self.state[CUT_AT], self.state[W_MAX]
        return limit if cut != self._first_cut and limit > 0 else None

    def pacer(self) -> SharedPacer:
        return SharedPacer(self)


class SharedPacer(ControlledPacer):
    """The ``PacerLike`` interface the Hermes client takes, over a ``SharedBudget``."""

    LOCK_TIMEOUT_S = 1.0

    def __init__(self, budget: SharedBudget):
        super().__init__(Controller(budget.target, budget.burst, budget.tuning), budget.state)
        self.b = budget

    @contextmanager
    def locked(self) -> Iterator[bool]:
        if not self.b.lock.acquire(timeout=self.LOCK_TIMEOUT_S):
            yield False
            return
        try:
            yield True
        finally:
            self.b.lock.release()
