"""Client-side pacing: each instance keeps to its share of Hermes' rate limit.

S3 events cannot be rate-limited, so every concurrent instance paces itself.
``Pacer`` (static) keeps to a fixed ``R_stage / reserved_concurrency``: together the
instances never exceed R; a 429 halves the pace and it climbs back as calls succeed.
``AdaptivePacer`` starts from a rate and finds the server's real limit from its 429s
(``fanout_core.adaptive_rate``), never above its bound R: for a limit not told or told
too high, and for a fleet whose idle shares should flow to the busy stage.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator, MutableSequence
from contextlib import contextmanager

from fanout_core.adaptive_rate import RATE, Controller, Tuning, known_limit_state, new_state
from fanout_core.errors import PacerBeyondDeadline

RECHECKS = 8
"""How often one acquire may re-take its slot after cuts (each is a fresh, later slot)."""


def beyond_deadline(wait: float, max_wait: float) -> None:
    """Raise ``PacerBeyondDeadline`` if a wait of ``wait`` seconds passes ``max_wait`` (no
    wait never does: a call that may go now goes, its own deadline bounds it)."""
    if wait > max(0.0, max_wait):
        raise PacerBeyondDeadline(
            f"the next call's slot is {wait:.1f}s away, past the {max(0.0, max_wait):.1f}s "
            "the task may still wait: the task is given back to be retried",
            kind="paced_past_deadline",
        )


def default_burst(rate: float) -> float:
    """Calls a pacer lets through at once after an idle spell: 0.1 s of ``rate``, at most
    10, at least 1 (a server's bucket is rarely smaller)."""
    return max(1.0, min(rate * 0.1, 10.0))


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
        self.burst = max(1.0, burst) if burst is not None else default_burst(rate)
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

    def acquire(self, max_wait: float = math.inf) -> float:
        """Wait for one call's token; returns the seconds waited. Raises
        ``PacerBeyondDeadline``, taking no token, if the wait would pass ``max_wait``."""
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
            beyond_deadline(waited + delay, max_wait)
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


class ControlledPacer:
    """The ``PacerLike`` calls over a controller and a state vector; subclasses say where
    the state lives and what lock guards it."""

    def __init__(
        self,
        controller: Controller,
        state: MutableSequence[float],
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.controller = controller
        self.state = state
        self._clock = clock
        self._sleep = sleep
        self._mine = threading.local()

    @contextmanager
    def locked(self) -> Iterator[bool]:
        """Hold the state's lock; yields False if it could not be had (then act alone)."""
        raise NotImplementedError
        yield False  # pragma: no cover

    @property
    def rate(self) -> float:
        return self.state[RATE]

    def acquire(self, max_wait: float = math.inf) -> float:
        """Wait for this call's slot; a slot taken before a cut is re-taken at the new pace.
        Raises ``PacerBeyondDeadline``, taking no slot, if the wait would pass ``max_wait``."""
        # The clock is read once the lock is held: a caller late to it (queued behind other
        # threads and processes, or descheduled) would otherwise take a slot against a time
        # already past and wait again for what it lost on the way.
        with self.locked() as ok:
            now = self._clock()
            paced = self.state[RATE]
            if ok:
                wait = self.controller.reserve(self.state, now, max_wait=max_wait)
            else:
                wait = 1.0 / self.state[RATE]
        beyond_deadline(wait, max_wait)
        reserved, waited = now, 0.0
        for _ in range(RECHECKS):
            if wait <= 0:
                break
            self._sleep(wait)
            waited += wait
            left = max_wait - waited
            with self.locked() as ok:
                now = self._clock()
                again = self.state[RATE]
                wait = self.controller.recheck(self.state, now, reserved, max_wait=left) if ok else 0.0
            beyond_deadline(waited + wait, max_wait)
            if wait > 0:
                reserved, paced = now, again
        self._mine.reserved = reserved
        self._mine.paced = paced
        return waited

    def on_throttled(self, retry_after: float | None) -> None:
        with self.locked() as ok:
            if ok:
                sent_at = getattr(self._mine, "reserved", None)
                paced = getattr(self._mine, "paced", None)
                self.controller.throttled(self.state, self._clock(), sent_at, retry_after, paced)

    def on_success(self) -> None:
        with self.locked() as ok:
            if ok:
                sent_at = getattr(self._mine, "reserved", None)
                paced = getattr(self._mine, "paced", None)
                self.controller.succeeded(self.state, self._clock(), sent_at, paced)


class AdaptivePacer(ControlledPacer):
    """An adaptive pacer for the threads of one process (a Lambda instance, a bench)."""

    def __init__(
        self,
        bound: float,
        *,
        start: float | None = None,
        burst: float | None = None,
        tuning: Tuning | None = None,
        probe_from_start: bool = False,
        known: bool = False,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """With ``known``, ``start`` is a limit an earlier run learned (``fanout_core.learned_limit``):
        the pacer starts as right after a cut there, as a local run's shared budget does."""
        if bound <= 0:
            raise ValueError("rate must be positive")
        first = min(bound, start) if start else bound
        if first <= 0:
            raise ValueError("start rate must be positive")
        size = burst if burst is not None else min(first * 0.1, 10.0)
        controller = Controller(bound, size, tuning)
        if known:
            state = known_limit_state(first, clock(), controller.t)
        else:
            state = new_state(first, clock(), probe_from=controller.t if probe_from_start else None)
        super().__init__(controller, state, clock=clock, sleep=sleep)
        self._lock = threading.Lock()

    @contextmanager
    def locked(self) -> Iterator[bool]:
        with self._lock:
            yield True


class NoPacer:
    """Pacing switched off (the concurrency cap alone limits the rate)."""

    def acquire(self, max_wait: float = math.inf) -> float:
        return 0.0  # never waits, so never past a deadline

    def on_throttled(self, retry_after: float | None) -> None:
        pass

    def on_success(self) -> None:
        pass
