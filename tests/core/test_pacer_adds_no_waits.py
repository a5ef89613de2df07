"""A pacer whose rate is far above what its callers send never makes them wait.

On a loaded machine a caller is often descheduled, or queued on the pacer's lock behind
other threads and processes, between reading the clock and taking its slot. Slots are
handed out against the clock read then: a caller that read it before others took slots
after it was told to wait for the time it had already lost (waits of up to 0.9 s at
1,400 calls/s against a crawl of 300 calls/s, with no 429 at all: issue 21's throughput).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

from fanout_core.pacing import AdaptivePacer

from .fake_time import FakeTime
from .virtual_threads import VirtualThreads


class DescheduledPacer(AdaptivePacer):
    """An adaptive pacer whose callers lose up to ``late_s`` on the way to its lock (another
    thread holds it, or the scheduler runs another process) while the other callers go on."""

    def __init__(self, threads: VirtualThreads, late_s: float, t: FakeTime) -> None:
        super().__init__(100_000.0, clock=t.clock, sleep=threads.sleep)
        self.threads, self.late_s, self.rng = threads, late_s, random.Random(5)

    @contextmanager
    def locked(self) -> Iterator[bool]:
        self.threads.sleep(self.rng.uniform(0.0, self.late_s))
        with super().locked() as ok:
            yield ok


def test_callers_far_below_the_rate_never_wait_on_the_pacer_however_late_they_reach_its_lock() -> None:
    t = FakeTime()
    threads = VirtualThreads(t)
    pacer = DescheduledPacer(threads, 0.02, t)
    waits: list[float] = []

    def worker() -> None:
        for _ in range(50):
            waits.append(pacer.acquire())
            threads.sleep(0.01)  # the call: 16 callers send under 1,600 calls/s, R is 100,000
            pacer.on_success()

    threads.run([worker] * 16)
    assert len(waits) == 800
    assert sum(waits) == 0.0
