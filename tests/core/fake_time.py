"""The fake clock of the pacing tests: time moves only when slept on.

Like a real sleep, every sleep lets at least a nanosecond pass (the resolution of
``time.monotonic``): a bucket's float arithmetic can leave it 1e-16 short of a whole
token and ask for a sleep shorter than the clock can count.
"""

from __future__ import annotations


class FakeTime:
    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.slept.append(seconds)
        self.now += max(seconds, 1e-9)
