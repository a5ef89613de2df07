"""The pacer, on a fake clock: a token bucket that never lets more than rate*t + burst calls
through in t seconds, halves its rate on a 429, holds for Retry-After, and climbs back."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from fanout_core.pacing import NoPacer, Pacer

from .fake_time import FakeTime

EPS = 1e-9


def make(rate: float, **options: float) -> tuple[Pacer, FakeTime]:
    t = FakeTime()
    return Pacer(rate, clock=t.clock, sleep=t.sleep, **options), t


def assert_within_rate(grants: list[float], rate: float, burst: float) -> None:
    """In every window [grants[i], grants[j]] at most rate * width + burst calls went through."""
    for i in range(len(grants)):
        for j in range(i, len(grants)):
            calls = j - i + 1
            assert calls <= rate * (grants[j] - grants[i]) + burst + EPS, (i, j, grants[i], grants[j])


# --- the bucket ------------------------------------------------------------------------------


@hyp_settings(deadline=None, max_examples=50)
@given(
    rate=st.floats(min_value=0.5, max_value=500),
    burst=st.floats(min_value=1, max_value=20),
    gaps=st.lists(st.floats(min_value=0, max_value=0.5), min_size=1, max_size=60),
)
def test_never_more_than_rate_times_t_plus_burst_calls(rate: float, burst: float, gaps: list[float]) -> None:
    pacer, t = make(rate, burst=burst)
    grants = []
    for gap in gaps:
        t.now += gap
        pacer.acquire()
        grants.append(t.now)
    assert_within_rate(grants, rate, burst)


events = st.one_of(
    st.tuples(st.just("call"), st.floats(min_value=0, max_value=0.3)),
    st.tuples(st.just("throttled"), st.one_of(st.none(), st.floats(min_value=0, max_value=2))),
    st.tuples(st.just("success"), st.none()),
)


@hyp_settings(deadline=None, max_examples=50)
@given(rate=st.floats(min_value=1, max_value=200), script=st.lists(events, min_size=1, max_size=80))
def test_throttling_and_recovery_never_exceed_the_target_rate(
    rate: float, script: list[tuple[str, float | None]]
) -> None:
    pacer, t = make(rate)
    grants = []
    for event, value in script:
        if event == "call":
            t.now += value or 0.0
            pacer.acquire()
            grants.append(t.now)
        elif event == "throttled":
            pacer.on_throttled(value)
        else:
            pacer.on_success()
        assert pacer.rate <= rate
    assert_within_rate(grants, rate, pacer.burst)


def test_a_full_bucket_lets_burst_calls_through_at_once() -> None:
    pacer, t = make(10, burst=5)
    waited = [pacer.acquire() for _ in range(5)]
    assert waited == [0.0] * 5 and t.now == 0.0


def test_the_call_after_the_burst_waits_one_interval() -> None:
    pacer, t = make(10, burst=5)
    for _ in range(5):
        pacer.acquire()
    assert pacer.acquire() == pytest.approx(0.1)
    assert t.now == pytest.approx(0.1)


def test_acquire_returns_the_seconds_it_slept() -> None:
    pacer, t = make(4, burst=1)
    total = sum(pacer.acquire() for _ in range(9))
    assert total == pytest.approx(sum(t.slept)) == pytest.approx(2.0)


def test_a_long_run_keeps_to_the_rate() -> None:
    pacer, t = make(100, burst=10)
    for _ in range(1010):
        pacer.acquire()
    assert t.now == pytest.approx(10.0)


def test_idle_time_refills_the_bucket_up_to_burst_only() -> None:
    pacer, t = make(10, burst=3)
    for _ in range(3):
        pacer.acquire()
    t.now += 60.0
    assert [pacer.acquire() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert pacer.acquire() == pytest.approx(0.1)


@pytest.mark.parametrize(("rate", "burst"), [(5, 1.0), (50, 5.0), (100, 10.0), (10_000, 10.0)])
def test_default_burst_is_a_tenth_of_the_rate_between_1_and_10(rate: float, burst: float) -> None:
    assert make(rate)[0].burst == burst


@pytest.mark.parametrize("rate", [0, -1])
def test_a_rate_that_is_not_positive_is_refused(rate: float) -> None:
    with pytest.raises(ValueError, match="rate"):
        Pacer(rate)


# --- throttling and recovery -----------------------------------------------------------------


def test_on_throttled_halves_the_rate() -> None:
    pacer, _ = make(100)
    pacer.on_throttled(None)
    assert pacer.rate == 50
    pacer.on_throttled(None)
    assert pacer.rate == 25


def test_on_throttled_never_goes_below_the_minimum_rate() -> None:
    pacer, _ = make(100, min_rate_fraction=0.05)
    for _ in range(20):
        pacer.on_throttled(None)
    assert pacer.rate == pytest.approx(5.0)


def test_on_throttled_holds_every_caller_for_retry_after() -> None:
    pacer, t = make(100, burst=10)
    t.now = 7.0
    pacer.on_throttled(2.0)
    pacer.acquire()
    assert t.now >= 9.0 - EPS


def test_on_throttled_keeps_the_longer_of_two_pauses() -> None:
    pacer, t = make(100, burst=10)
    pacer.on_throttled(3.0)
    pacer.on_throttled(1.0)
    pacer.acquire()
    assert t.now >= 3.0 - EPS


def test_on_throttled_empties_the_bucket() -> None:
    pacer, _ = make(10, burst=5)
    pacer.on_throttled(None)
    assert pacer.acquire() == pytest.approx(1 / 5)  # one interval at the halved rate


def test_on_throttled_empties_the_bucket_even_after_the_request_took_a_while() -> None:
    # acquire() runs before a request, the 429 arrives a response-time later: the tokens that
    # accrued meanwhile must not let the next call through unpaced.
    pacer, t = make(10, burst=5)
    for _ in range(5):
        pacer.acquire()
    t.now += 0.5  # the request that is answered 429
    pacer.on_throttled(None)
    assert pacer.acquire() == pytest.approx(1 / 5)


def test_on_success_climbs_back_to_the_target_and_never_above() -> None:
    pacer, _ = make(100, recovery_per_success=0.02)
    pacer.on_throttled(None)
    rates = []
    for _ in range(40):
        pacer.on_success()
        rates.append(pacer.rate)
    assert rates == sorted(rates)
    assert rates[0] == pytest.approx(52.0)
    assert rates[24] == pytest.approx(100.0)
    assert max(rates) == 100.0 and rates[-1] == 100.0


def test_on_success_at_the_target_changes_nothing() -> None:
    pacer, _ = make(100)
    pacer.on_success()
    assert pacer.rate == 100


def test_no_pacer_never_waits() -> None:
    pacer = NoPacer()
    pacer.on_throttled(5.0)
    pacer.on_success()
    assert pacer.acquire() == 0.0
