"""A local leaf stage's concurrency counts the tasks at work, not those waiting out a retry.

A refused call waits its Retry-After (Hermes says 1 s) before it is sent again, and its
task's thread waits with it. With C threads, a server that refuses a share p of the calls
whatever the rate lets through at most C (1 - p) / p calls/s: 64/s for the ``local``
settings' 16 leaf workers (Hermes) at p = 20 %, under half of a 150 calls/s limit. So the
local runtime runs ``THREADS_PER_PLACE`` threads per place of the leaf stage's concurrency,
and at most C of them are at work: a task gives its place up while its Hermes client sleeps
before a retry, and takes one again, before any task not yet started, once the wait is
over. The Retry-After is honoured as before; the calls in flight and the tasks encoding
Parquet stay at most C. The bound becomes (THREADS_PER_PLACE - 1) C (1 - p) / p.
A worker process starts one thread per place and adds one (``on_sleep``) only when a task
gives its place up, so a crawl that meets no 429 runs no idle threads.

The share refused is not only the server's p: a pace a little past the limit adds its own
429s (a third of the calls refused at p = 20 % on the fake clock, not a fifth), and each
holds a thread for a second too. With 4 threads per place the threads, not the limit,
then held a 12,000-call run at p = 20 % to 0.78 (1 - p) L; with 8 it reaches 0.87.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

THREADS_PER_PLACE = 8
"""Leaf threads per place at work: the rest wait out retries (at most 448 calls/s accepted
for 16 places with 20 % of the calls refused, 224/s with a third refused)."""


class AtWork:
    """At most ``places`` tasks at work at once; a task asleep before a retry is not."""

    def __init__(
        self,
        places: int,
        *,
        sleep: Callable[[float], None] = time.sleep,
        conditions: tuple[threading.Condition, threading.Condition] | None = None,
        on_sleep: Callable[[], None] = lambda: None,
    ) -> None:
        """``conditions``: (resuming, starting) waiters' conditions over one lock (tests
        pass their own); ``on_sleep`` is told each time a task gives its place up to wait,
        so that the owner of the threads may start one more (``leaf_workers``)."""
        if places < 1:
            raise ValueError("places must be at least 1")
        self.places = places
        self._sleep = sleep
        if conditions is None:
            lock = threading.Lock()
            conditions = (threading.Condition(lock), threading.Condition(lock))
        # Two conditions, so a freed place wakes one thread that can take it, not all of
        # the 8 x places threads (waking them all cost ~10 % of a crawl's CPU).
        self._resume_cond, self._start_cond = conditions
        self._free = places
        self._resuming = 0
        self._mine = threading.local()
        self._on_sleep = on_sleep

    @contextmanager
    def working(self) -> Iterator[None]:
        """Hold a place for one task (waiting for one, after any task resuming)."""
        self._take(resuming=False)
        self._mine.held = True
        try:
            yield
        finally:
            self._mine.held = False
            self._give()

    def sleep(self, seconds: float) -> None:
        """A retry's wait: the place is given up for it (if this thread holds one)."""
        if not getattr(self._mine, "held", False):
            self._sleep(seconds)
            return
        self._mine.held = False
        self._give()
        self._on_sleep()
        try:
            self._sleep(seconds)
        finally:
            self._take(resuming=True)
            self._mine.held = True

    def _take(self, *, resuming: bool) -> None:
        with self._resume_cond:
            if resuming:
                self._resuming += 1
                try:
                    while self._free == 0:
                        self._resume_cond.wait()
                finally:
                    self._resuming -= 1
            else:
                while self._free == 0 or self._resuming:
                    self._start_cond.wait()
            self._free -= 1
            self._wake()

    def _give(self) -> None:
        with self._resume_cond:
            self._free += 1
            self._wake()

    def _wake(self) -> None:
        """As many waiters as there are free places, resuming ones first (lock held)."""
        if self._free:
            (self._resume_cond if self._resuming else self._start_cond).notify(self._free)
