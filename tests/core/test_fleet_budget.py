"""Pacing ``shared`` on a fake clock: a fleet of instances leasing slices from one budget
keeps to its stated bound together, a 429 cuts the rate for everyone once, a failing
store never stops a call, no wait goes past the caller's deadline and an absurd item is
repaired."""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
import random

import pytest

from fanout_core.errors import PacerBeyondDeadline
from fanout_core.fleet_budget import (
    LATE_S,
    LEASE_S,
    BudgetItem,
    BudgetUnavailable,
    FleetPacer,
    MemoryBudgetStore,
)

from .fake_time import FakeTime

START = 1_000.0
"""Wall-clock-like: past the empty item's ``cut_at`` of 0, so a first 429 is a cut."""


def fleet(n: int, bound: float, store: MemoryBudgetStore, t: FakeTime) -> list[FleetPacer]:
    return [
        FleetPacer(store, bound, fallback_rate=bound / n, fleet_size=n, clock=t.clock, sleep=t.sleep)
        for _ in range(n)
    ]


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


def concurrent(
    instances: int,
    bound: float,
    calls: int,
    *,
    threads: int = 1,
    latency: tuple[float, float] = (0.03, 0.08),
    stall: tuple[float, float] | None = None,
) -> tuple[list[float], MemoryBudgetStore]:
    """A fleet whose instances (and their threads) run at once on one fake clock, as
    discrete events: each request starts when its thread's last call answered (after a
    seeded Hermes latency; a call sent during ``stall``, seconds after the start, is
    answered only after it), in time order, so the store sees its writes in time order.
    The sorted send times, and the store."""
    rng = random.Random(7)
    t, store = FakeTime(START), MemoryBudgetStore()
    pacers = fleet(instances, bound, store, t)
    ready = [(START + rng.uniform(0, 0.01), i, j) for i in range(instances) for j in range(threads)]
    heapq.heapify(ready)
    sent: list[float] = []
    while len(sent) < calls:
        at, i, j = heapq.heappop(ready)
        t.now = at
        pacers[i].acquire()  # sleeps this thread alone: only its own send moves
        sent.append(t.now)
        answered = t.now + rng.uniform(*latency)
        if stall and START + stall[0] <= t.now < START + stall[1]:
            answered += START + stall[1] - t.now
        heapq.heappush(ready, (answered, i, j))
    return sorted(sent), store


def most_in_a_window(sent: list[float], window_s: float) -> int:
    return max(bisect.bisect_right(sent, s + window_s) - i for i, s in enumerate(sent))


@pytest.mark.parametrize("window_s", [0.1, 1.0, 5.0])
@pytest.mark.parametrize(
    ("instances", "threads", "bound", "stall"),
    [
        (14, 1, 50.0, None),
        (8, 1, 100.0, None),
        (8, 2, 100.0, None),
        (56, 1, 200.0, None),
        (56, 1, 200.0, (5.0, 6.0)),
    ],
)
def test_a_fleet_leasing_slices_never_exceeds_r_times_the_window_plus_late_s_plus_one(
    instances: int, threads: int, bound: float, stall: tuple[float, float] | None, window_s: float
) -> None:
    """Also when Hermes stalls for a second mid-slice: the slots left behind are void, not
    sent late on top of the fresh ones."""
    sent, _ = concurrent(instances, bound, 4_000, threads=threads, stall=stall)
    assert most_in_a_window(sent, window_s) <= bound * (window_s + LATE_S) + 1


def test_a_busy_fleet_leasing_slices_keeps_r_at_0_2_writes_per_call() -> None:
    sent, store = concurrent(14, 50.0, 3_000)  # dev-shaped: 14 instances, one call in flight each
    assert (len(sent) - 1) / (sent[-1] - sent[0]) >= 0.95 * 50.0
    assert store.writes / len(sent) <= 0.2


def test_a_busy_fleet_leasing_slices_sends_at_r_in_its_steady_state() -> None:
    sent, _ = concurrent(56, 200.0, 6_000)  # the late slots are a shift, not a loss
    middle = sent[len(sent) // 10 : 9 * len(sent) // 10]
    assert (len(middle) - 1) / (middle[-1] - middle[0]) >= 0.99 * 200.0


def test_threads_of_one_instance_share_its_slice() -> None:
    _, alone = concurrent(8, 100.0, 3_000)
    _, shared = concurrent(8, 100.0, 3_000, threads=2)
    assert shared.writes < 0.7 * alone.writes


def test_a_fresh_instance_leases_one_slot() -> None:
    t, store = FakeTime(START), MemoryBudgetStore()
    fleet(1, 100.0, store, t)[0].acquire()
    assert store.writes == 1 and store.item.tat == pytest.approx(START - 0.09 + 0.01)


def steady_pacer(gap_s: float, calls: int = 100) -> FleetPacer:
    """One instance at R = 100 sending a call every ``gap_s``: its budget idles between slices."""
    t, store = FakeTime(START), MemoryBudgetStore()
    pacer = fleet(1, 100.0, store, t)[0]
    for _ in range(calls):
        pacer.acquire()
        t.now += gap_s
    return pacer


def test_a_slice_holds_what_the_pace_sends_before_its_last_slot_is_late_s_less_the_credit_late() -> None:
    pacer = steady_pacer(0.05)  # each slot 50 - 10 ms later than the last: 0.35 s / 40 ms
    assert not pacer._busy
    assert pacer.slice_size(100.0) == 1 + 8


def test_a_slice_leased_on_a_busy_budget_may_spend_all_of_late_s() -> None:
    pacer = steady_pacer(0.05)
    pacer._busy = True  # its first slot was not due yet: no idle credit made it late
    assert pacer.slice_size(100.0) == 1 + 11  # 0.45 s / 40 ms


def test_an_erratic_pace_still_leases_what_it_sends_in_lease_s() -> None:
    t, store = FakeTime(START), MemoryBudgetStore()
    erratic = fleet(1, 100.0, store, t)[0]
    for i in range(100):
        erratic.acquire()
        t.now += (0.01, 0.19)[i % 2]  # a loaded host: its spread alone would leave one slot
    assert erratic._cycle is not None
    assert erratic.slice_size(100.0) == 1 + math.floor(LEASE_S / erratic._cycle) >= 4


def test_a_pace_that_strays_leases_fewer_slots_than_a_steady_one() -> None:
    steady = steady_pacer(0.05)
    t, store = FakeTime(START), MemoryBudgetStore()
    strays = fleet(1, 100.0, store, t)[0]
    for i in range(100):
        strays.acquire()
        t.now += (0.03, 0.07)[i % 2]  # the same 50 ms on average
    assert strays._cycle == pytest.approx(steady._cycle, abs=0.002)
    assert strays.slice_size(100.0) < steady.slice_size(100.0)


def test_a_slot_too_late_to_send_within_late_s_is_void_not_sent() -> None:
    t, store = FakeTime(START), MemoryBudgetStore()
    pacer = fleet(1, 100.0, store, t)[0]
    for _ in range(3):
        pacer.acquire()
        t.now += 0.02
    left = list(pacer._slots)
    assert left  # a slice with slots to spare
    t.now = left[-1] + LATE_S + 0.001  # the instance idled: its slots are stale
    writes = store.writes
    pacer.acquire()
    assert store.writes == writes + 1  # a fresh lease, not a stale slot
    assert not set(left) & set(pacer._slots)


def test_acquire_never_sleeps_past_max_wait_and_gives_the_slice_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    t, store = FakeTime(START), MemoryBudgetStore()
    pacer = fleet(10, 100.0, store, t)[0]
    store.item = BudgetItem(tat=START + 10.0)  # a deep queue of ten instances: within the horizon
    with pytest.raises(PacerBeyondDeadline, match="past the task"):
        pacer.acquire(max_wait=1.0)
    assert t.slept == [] and t.now == START
    assert store.item.tat == pytest.approx(START + 10.0)  # its slot given back
    assert [r.__dict__.get("outcome") for r in caplog.records] == ["pacer_beyond_deadline"]  # and why


def test_an_item_an_hour_ahead_is_repaired_not_obeyed() -> None:
    t, store = FakeTime(START), MemoryBudgetStore()
    pacer = fleet(1, 100.0, store, t)[0]
    store.item = BudgetItem(tat=START + 3_600.0)
    assert pacer.acquire(max_wait=60.0) <= 0.1
    assert store.item.tat <= START + 0.1
    # the lease that saw it (two tries: a fresh store predicts an idle budget), the
    # repair, the lease after it
    assert store.writes == 4


def test_a_hold_an_hour_ahead_is_repaired_not_obeyed() -> None:
    t, store = FakeTime(START), MemoryBudgetStore()
    pacer = fleet(1, 100.0, store, t)[0]
    store.item = BudgetItem(tat=START + 3_600.0, hold_until=START + 3_600.0, cut_at=START - 1, w_max=100.0)
    assert pacer.acquire(max_wait=60.0) <= 0.1
    assert store.item.hold_until == 0.0


def test_a_second_instance_finding_the_item_repaired_does_not_repair_it_again() -> None:
    t, store = FakeTime(START), MemoryBudgetStore()
    a, b = fleet(2, 100.0, store, t)
    store.item = BudgetItem(tat=START + 3_600.0)
    b._item = store.item  # b saw the absurd item before a repaired it
    a.acquire()
    repaired = store.item
    assert b.acquire(max_wait=60.0) <= 0.1
    assert store.item.tat == pytest.approx(repaired.tat + 0.01)  # just b's lease on top


def test_a_cut_the_instance_saw_drops_the_rest_of_its_slice() -> None:
    t, store = FakeTime(START), MemoryBudgetStore()
    pacer = fleet(1, 100.0, store, t)[0]
    for _ in range(3):
        pacer.acquire()
        t.now += 0.02
    assert pacer._slots
    pacer.on_throttled(None)
    writes = store.writes
    pacer.acquire()
    assert store.writes == writes + 1  # leased after the cut, not a slot of the old slice


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


def test_a_cut_on_a_budget_leased_past_its_resume_point_writes_no_push() -> None:
    t, store = FakeTime(START), MemoryBudgetStore()
    pacers = fleet(10, 100.0, store, t)
    for p in pacers:
        for _ in range(5):
            p._next_slot(t.now)  # 0.5 s of slices queued: beyond one new interval after now
    pacers[0]._sent.at = t.now
    t.now += 0.001
    writes = store.writes
    pacers[0].on_throttled(None)
    assert store.writes == writes + 1 and store.by_kind["cut"] == 1  # the cut alone


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


class SlowStore(MemoryBudgetStore):
    """Each write takes 0.2 s of the fake clock (a slow table)."""

    def __init__(self, t: FakeTime) -> None:
        super().__init__(latency_s=0.2, sleep=t.sleep)


def test_the_wait_for_a_slot_counts_from_after_the_leases_write() -> None:
    t = FakeTime(START)
    store = SlowStore(t)
    store.item = BudgetItem(tat=START + 1.0)  # the next free slot is 1 s away
    pacer = FleetPacer(store, 100.0, fallback_rate=10.0, fleet_size=10, clock=t.clock, sleep=t.sleep)
    store._seen.busy = True  # one write, as after a lease on a busy budget
    pacer.acquire(max_wait=5.0)
    assert t.now == pytest.approx(START + 1.0, abs=1e-6)  # sent at its slot, not 0.2 s after
