"""Pacing ``shared`` on a fake clock: a fleet of instances leasing from one budget keeps
to R together, a 429 cuts the rate for everyone once, and a failing store never stops a
call."""

from __future__ import annotations

import itertools

import pytest

from fanout_core.fleet_budget import (
    BudgetItem,
    BudgetUnavailable,
    FleetPacer,
    MemoryBudgetStore,
)

from .fake_time import FakeTime

START = 1_000.0
"""Wall-clock-like: past the empty item's ``cut_at`` of 0, so a first 429 is a cut."""


def fleet(n: int, bound: float, store: MemoryBudgetStore, t: FakeTime) -> list[FleetPacer]:
    return [FleetPacer(store, bound, fallback_rate=bound / n, clock=t.clock, sleep=t.sleep) for _ in range(n)]


def round_robin(pacers: list[FleetPacer], t: FakeTime, calls: int, latency_s: float) -> list[float]:
    """Instances taking turns, each call ``latency_s`` long; the send times."""
    sent = []
    for i in range(calls):
        pacers[i % len(pacers)].acquire()
        sent.append(t.now)
        t.now += latency_s / len(pacers)
    return sent


def test_a_fleet_sharing_one_budget_keeps_to_r_together() -> None:
    t, store = FakeTime(START), MemoryBudgetStore()
    sent = round_robin(fleet(20, 100.0, store, t), t, 3_000, latency_s=0.05)
    rate = (len(sent) - 1) / (sent[-1] - sent[0])
    # One fake clock serialises the instances (while one waits for its slot, none of the
    # others sends), so this under-reads the real fleet; the bound is the point.
    assert 90.0 <= rate <= 100.5


def test_every_call_reserves_exactly_one_slot() -> None:
    t, store = FakeTime(START), MemoryBudgetStore()
    round_robin(fleet(5, 100.0, store, t), t, 500, latency_s=0.05)
    assert store.writes == 500


def test_instances_sending_at_once_get_slots_one_interval_apart() -> None:
    t, store = FakeTime(START), MemoryBudgetStore()
    pacers = fleet(10, 100.0, store, t)
    slots = [p._next_slot(t.now) for p in pacers]  # ten instances asking in the same instant
    gaps = [b - a for a, b in itertools.pairwise(slots)]
    assert gaps == pytest.approx([0.01] * 9)


def test_a_429_cuts_the_rate_for_every_instance_once() -> None:
    t, store = FakeTime(START), MemoryBudgetStore()
    a, b = fleet(2, 100.0, store, t)
    a.acquire()
    b.acquire()
    t.now += 0.01
    a.on_throttled(None)
    cut = store.item
    b.on_throttled(None)  # sent before the cut: already answered for
    assert store.item == cut
    assert cut.w_max == pytest.approx(100.0)
    assert a.rate_at(t.now, cut) < 100.0


def test_a_429_at_the_told_rate_climbs_back_to_it() -> None:
    t, store = FakeTime(START), MemoryBudgetStore()
    pacer = fleet(1, 100.0, store, t)[0]
    pacer.acquire()
    pacer.on_throttled(None)
    assert pacer.rate_at(t.now + 5.0, store.item) == pytest.approx(100.0)


def test_the_rate_never_exceeds_the_configured_bound() -> None:
    t = FakeTime(START)
    pacer = FleetPacer(MemoryBudgetStore(), 50.0, fallback_rate=5.0, clock=t.clock, sleep=t.sleep)
    item = BudgetItem(tat=0.0, w_max=40.0, cut_at=t.now)
    assert max(pacer.rate_at(t.now + s, item) for s in range(0, 120)) <= 50.0


class BrokenStore:
    def reserve(self, **_: float) -> BudgetItem:
        raise BudgetUnavailable("throttled")

    def cut(self, **_: float) -> BudgetItem | None:
        raise BudgetUnavailable("throttled")

    def push(self, **_: float) -> None:
        raise BudgetUnavailable("throttled")


def test_a_failing_store_falls_back_to_the_static_share() -> None:
    t = FakeTime(START)
    pacer = FleetPacer(BrokenStore(), 100.0, fallback_rate=10.0, clock=t.clock, sleep=t.sleep)
    start = t.now
    for _ in range(51):
        pacer.acquire()
    assert 4.0 <= t.now - start <= 6.0  # 10 calls/s alone, after the first burst


def test_a_cut_never_hands_out_a_reserved_slot_again() -> None:
    t, store = FakeTime(START), MemoryBudgetStore()
    pacers = fleet(10, 100.0, store, t)
    slots = [p._next_slot(t.now) for p in pacers for _ in range(5)]  # 0.5 s queued
    pacers[0]._sent.at = t.now
    t.now += 0.001
    pacers[0].on_throttled(None)
    slots += [p._next_slot(t.now) for p in pacers]
    gaps = [b - a for a, b in itertools.pairwise(sorted(slots))]
    assert min(gaps) >= 0.01 - 1e-9


def test_slots_reserved_during_a_hold_queue_after_it_one_interval_apart() -> None:
    t, store = FakeTime(START), MemoryBudgetStore()
    pacers = fleet(10, 100.0, store, t)
    pacers[0].acquire()
    pacers[0].on_throttled(5.0)  # Retry-After: 5 s holds every caller
    slots = [p._next_slot(t.now) for p in pacers]
    assert min(slots) >= t.now + 5.0
    gaps = [b - a for a, b in itertools.pairwise(slots)]
    assert min(gaps) >= 0.01 - 1e-9


def test_below_r_a_reservation_costs_one_write() -> None:
    t, store = FakeTime(START), MemoryBudgetStore()
    round_robin(fleet(5, 100.0, store, t), t, 500, latency_s=1.0)  # 5 calls/s, the budget idles
    assert store.writes <= 505


class SlowBrokenStore(BrokenStore):
    def __init__(self, t: FakeTime) -> None:
        self.t, self.calls = t, 0

    def reserve(self, **_: float) -> BudgetItem:
        self.calls += 1
        self.t.now += 6.0  # timeouts and tries: longer than the fallback window
        raise BudgetUnavailable("unreachable")


def test_the_fallback_window_starts_after_the_failed_write() -> None:
    t = FakeTime(START)
    broken = SlowBrokenStore(t)
    pacer = FleetPacer(broken, 100.0, fallback_rate=100.0, clock=t.clock, sleep=t.sleep)
    for _ in range(50):  # 0.5 s of calls: all inside the window the first failure opened
        pacer.acquire()
    assert broken.calls == 1
