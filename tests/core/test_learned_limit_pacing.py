"""A run that starts from a limit an earlier run learned meets fewer 429s than one that
discovers it (fake clock, the server a token bucket the pacer is not told of)."""

from __future__ import annotations

from fanout_core.adaptive_rate import RATE, W_MAX, Tuning, known_limit_state
from fanout_core.pacing import AdaptivePacer

from .fake_time import FakeTime
from .test_adaptive_pacing import HiddenLimit, crawl

LIMIT = 40.0
START = 100.0
"""The local settings' ``hermes_rate_start``: a run that knows nothing starts there."""


def _first_ten_seconds(pacer: AdaptivePacer, t: FakeTime) -> list[tuple[float, bool]]:
    return crawl(pacer, t, HiddenLimit(t, LIMIT, LIMIT / 10), 10.0)


def test_starting_from_the_learned_limit_meets_fewer_429s_in_the_first_ten_seconds() -> None:
    t1 = FakeTime()
    first = _first_ten_seconds(AdaptivePacer(100_000.0, start=START, clock=t1.clock, sleep=t1.sleep), t1)
    held = sum(ok for _, ok in first) / 10.0  # what the server let through: the learned pace
    t2 = FakeTime()
    pacer = AdaptivePacer(100_000.0, start=START, clock=t2.clock, sleep=t2.sleep)
    pacer.state[:] = known_limit_state(held, t2.now, pacer.controller.t)
    second = _first_ten_seconds(pacer, t2)
    refused = [sum(not ok for _, ok in run) for run in (first, second)]
    assert refused[1] < refused[0], refused


def test_a_known_limit_state_paces_just_below_it_and_remembers_it() -> None:
    s = known_limit_state(40.0, 5.0, Tuning())
    assert s[W_MAX] == 40.0
    assert s[RATE] == Tuning().beta * 40.0
