"""Real threads on a fake clock, one running at a time, for pacing tests with many calls in flight.

A single caller answered at once cannot show what many workers do to a pacer: answers to
calls sent before a cut arrive after it, a refused call holds its worker for its
Retry-After, and the pacer's own sleeps interleave. Here every worker is a real thread
running the real pacer code (its locks, its sleep loop), but only one runs at a time: a
``sleep`` parks the thread until the clock reaches its wake time, and the scheduler wakes
threads strictly in time order, so a run is deterministic and exact.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Callable

from .fake_time import FakeTime

WAKE_S = 1e-6
"""Seconds from a notify to the woken thread running."""


class VirtualThreads:
    def __init__(self, t: FakeTime) -> None:
        self.t = t
        self._queue: list[tuple[float, int, threading.Event]] = []
        self._blocked: list[threading.Event] = []
        self._seq = 0
        self._turn = threading.local()
        self._yielded = threading.Event()
        self._error: BaseException | None = None

    def _park(self, wake: float) -> None:
        """Queue this thread to run at ``wake``, hand control back, and wait to be resumed."""
        resume: threading.Event = self._turn.event
        resume.clear()
        self._seq += 1
        heapq.heappush(self._queue, (wake, self._seq, resume))
        self._yielded.set()
        resume.wait()

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self._park(self.t.now + max(seconds, 1e-9))

    def condition(self) -> threading.Condition:
        """A condition variable for these threads: ``wait`` parks until ``notify_all``."""
        return _Condition(self)

    def _block(self) -> None:
        resume: threading.Event = self._turn.event
        resume.clear()
        self._blocked.append(resume)
        self._yielded.set()
        resume.wait()

    def _wake_blocked(self) -> None:
        # A woken thread runs a little later than the notify, as a real one does: what it
        # does then comes after what the notifying thread did (a cut, say), not at once.
        for resume in self._blocked:
            self._seq += 1
            heapq.heappush(self._queue, (self.t.now + WAKE_S, self._seq, resume))
        self._blocked.clear()

    def run(self, bodies: list[Callable[[], None]]) -> None:
        """Run ``bodies`` as threads from now until every one has returned."""
        threads = []
        for body in bodies:
            ready = threading.Event()

            def main(body: Callable[[], None] = body, ready: threading.Event = ready) -> None:
                self._turn.event = threading.Event()
                ready.set()
                self._park(self.t.now)
                try:
                    body()
                except BaseException as exc:  # reported by run(), not lost in a thread
                    self._error = self._error or exc
                finally:
                    self._yielded.set()

            thread = threading.Thread(target=main, daemon=True)
            self._yielded.clear()
            thread.start()
            ready.wait()
            self._yielded.wait()
            threads.append(thread)
        while self._queue:
            wake, _, resume = heapq.heappop(self._queue)
            self.t.now = max(self.t.now, wake)
            self._yielded.clear()
            resume.set()
            self._yielded.wait()
        if self._blocked:
            raise RuntimeError(f"{len(self._blocked)} threads wait on a condition nobody will notify")
        for thread in threads:
            thread.join(timeout=5)
        if self._error is not None:
            raise self._error


class _Condition(threading.Condition):
    """Only one virtual thread runs at a time, so the lock is never contended: entering
    holds nothing, and a wait hands control back until a notify re-queues the waiters."""

    def __init__(self, threads: VirtualThreads) -> None:
        super().__init__()
        self._threads = threads

    def __enter__(self) -> bool:
        return True

    def __exit__(self, *exc: object) -> None:
        return None

    def wait(self, timeout: float | None = None) -> bool:
        self._threads._block()
        return True

    def notify_all(self) -> None:
        self._threads._wake_blocked()

    def notify(self, n: int = 1) -> None:
        """Wakes every waiter: each re-checks what it waits for, as after ``notify_all``."""
        self._threads._wake_blocked()
