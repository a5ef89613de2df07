"""Adaptive pacing on a fake clock: it finds a limit it is not told from 429s, holds it,
backs off on 429 and Retry-After, and never goes above the configured R."""

from __future__ import annotations

import dataclasses
import heapq
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from fanout.at_work import THREADS_PER_PLACE, AtWork
from fanout.shared_pacing import SharedBudget
from fanout_core.adaptive_rate import FLOOR, W_MAX, Tuning
from fanout_core.assembly import SHARED_TUNING, instance_pacer
from fanout_core.fleet_budget import BudgetItem, FleetPacer, MemoryBudgetStore
from fanout_core.hermes import PacerLike
from fanout_core.pacing import AdaptivePacer, Pacer
from fanout_core.settings import load_environment

from .fake_time import FakeTime
from .virtual_threads import VirtualThreads

CDK_JSON = Path(__file__).resolve().parents[2] / "cdk.json"


class HiddenLimit:
    """A server's token bucket on the fake clock: ``limit`` calls/s, ``burst`` at once."""

    def __init__(self, t: FakeTime, limit: float, burst: float) -> None:
        self.t, self.limit, self.burst = t, limit, burst
        self.tokens, self.last = burst, 0.0

    def take(self) -> bool:
        self.tokens = min(self.burst, self.tokens + (self.t.now - self.last) * self.limit)
        self.last = self.t.now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class Refusing:
    """``HiddenLimit`` behind a gateway that also refuses a share of the calls it lets
    through, whatever the rate (a seeded draw per call)."""

    def __init__(self, inner: HiddenLimit, share: float, seed: int = 1) -> None:
        self.inner, self.share, self.rng = inner, share, random.Random(seed)
        self.down: tuple[float, float] | None = None
        """A window (from, until) in which every call is refused (an outage)."""

    def take(self) -> bool:
        if self.down is not None and self.down[0] <= self.inner.t.now < self.down[1]:
            return False
        return self.inner.take() and self.rng.random() >= self.share


def make(
    bound: float, start: float | None = None, burst: float | None = None
) -> tuple[AdaptivePacer, FakeTime]:
    t = FakeTime()
    return AdaptivePacer(bound, start=start, burst=burst, clock=t.clock, sleep=t.sleep), t


def crawl(
    pacer: PacerLike, t: FakeTime, server: HiddenLimit | Refusing, seconds: float
) -> list[tuple[float, bool]]:
    """One caller as fast as the pacer lets it, each call answered at once; (time, accepted)."""
    answers = []
    while t.now < seconds:
        pacer.acquire()
        ok = server.take()
        if ok:
            pacer.on_success()
        else:
            pacer.on_throttled(1.0)
        answers.append((t.now, ok))
        t.now += 1e-4  # the round trip
    return answers


def accepted_rate(answers: list[tuple[float, bool]], since: float, until: float) -> float:
    return sum(1 for at, ok in answers if ok and since <= at < until) / (until - since)


@pytest.mark.parametrize(
    ("limit", "start"), [(150.0, 100.0), (150.0, 10.0), (1000.0, 100.0), (150.0, 100_000.0)]
)
def test_converges_on_a_limit_it_is_not_told_and_holds_it(limit: float, start: float) -> None:
    pacer, t = make(100_000.0, start=start)
    answers = crawl(pacer, t, HiddenLimit(t, limit, limit / 10), 40.0)
    held = accepted_rate(answers, 10.0, 40.0)
    assert 0.93 * limit <= held <= 1.01 * limit
    late = [ok for at, ok in answers if at >= 10.0]
    assert late.count(False) / len(late) < 0.01


def test_remembers_the_rate_at_which_429s_began() -> None:
    pacer, t = make(100_000.0, start=100.0)
    crawl(pacer, t, HiddenLimit(t, 300.0, 30.0), 20.0)
    assert 0.9 * 300 <= pacer.state[W_MAX] <= 1.15 * 300


def test_probes_above_a_held_limit_only_every_few_seconds() -> None:
    pacer, t = make(100_000.0, start=100.0)
    answers = crawl(pacer, t, HiddenLimit(t, 200.0, 20.0), 62.0)
    rejected = [at for at, ok in answers if not ok and at >= 2.0]
    episodes = [at for i, at in enumerate(rejected) if i == 0 or at - rejected[i - 1] > 0.5]
    assert 1 <= len(episodes) <= 60 / Tuning().hold_s


def test_finds_a_limit_that_rises() -> None:
    pacer, t = make(100_000.0, start=100.0)
    server = HiddenLimit(t, 150.0, 15.0)
    crawl(pacer, t, server, 15.0)
    server.limit = 600.0
    answers = crawl(pacer, t, server, 45.0)
    assert accepted_rate(answers, 35.0, 45.0) >= 0.9 * 600


def test_a_429_cuts_the_rate() -> None:
    pacer, _ = make(1000.0)
    pacer.acquire()
    pacer.on_throttled(None)
    assert pacer.rate == pytest.approx(Tuning().beta * 1000.0)


def test_429s_of_calls_sent_before_a_cut_do_not_cut_again() -> None:
    pacer, t = make(1000.0)
    pacer.acquire()  # this thread's call, then the cut
    pacer.on_throttled(None)
    cut = pacer.rate
    t.now += 0.01
    pacer.on_throttled(None)  # the same call's 429, again: it left before the cut
    assert pacer.rate == cut


def test_a_429_of_a_call_sent_after_the_cut_cuts_again_once_the_cut_is_seen() -> None:
    pacer, t = make(1000.0)
    pacer.acquire()
    pacer.on_throttled(None)
    cut = pacer.rate
    for _ in range(int(Tuning().evidence)):  # what the cut did: answers at the new pace
        t.now += 0.001
        pacer.acquire()
        pacer.on_success()
    pacer.acquire()
    pacer.on_throttled(None)
    assert pacer.rate < cut


def test_a_429_before_the_cut_is_seen_does_not_cut_again() -> None:
    # One 429 in every few calls whatever the rate must not cut cut after cut: the
    # controller first sees what a cut did.
    pacer, t = make(1000.0)
    pacer.acquire()
    pacer.on_throttled(None)
    cut = pacer.rate
    t.now += 0.01
    pacer.acquire()
    pacer.on_throttled(None)
    assert pacer.rate == cut


def test_a_long_retry_after_holds_every_caller() -> None:
    pacer, t = make(1000.0, burst=10)
    t.now = 5.0
    pacer.acquire()
    pacer.on_throttled(3.0)
    pacer.acquire()
    assert t.now >= 8.0


def test_a_retry_after_of_one_second_holds_only_the_rejected_call() -> None:
    # delay-seconds are whole: "1" is any short wait rounded up; the client sleeps it for
    # the rejected call, the others go on at the cut pace.
    pacer, t = make(1000.0, burst=10)
    pacer.acquire()
    pacer.on_throttled(1.0)
    waited = pacer.acquire()
    assert waited < 0.01 and t.now < 0.01


@pytest.mark.parametrize("limit", [300.0, 1e9])
def test_never_exceeds_the_configured_rate(limit: float) -> None:
    pacer, t = make(200.0, burst=5)
    answers = crawl(pacer, t, HiddenLimit(t, limit, limit / 10), 30.0)
    assert pacer.rate <= 200.0
    sent = [at for at, _ in answers]
    for i in range(0, len(sent) - 400, 97):
        assert 200.0 * (sent[i + 400] - sent[i]) + 5 + 1e-6 >= 400


def test_with_the_configured_rate_right_it_paces_at_it_without_429s() -> None:
    pacer, t = make(200.0, burst=5)
    answers = crawl(pacer, t, HiddenLimit(t, 200.0, 20.0), 20.0)
    assert [ok for _, ok in answers].count(False) == 0
    assert accepted_rate(answers, 1.0, 20.0) >= 0.99 * 200


def test_a_start_above_the_bound_starts_at_the_bound() -> None:
    assert make(50.0, start=500.0)[0].rate == 50.0


@pytest.mark.parametrize("bound", [0, -1])
def test_a_bound_that_is_not_positive_is_refused(bound: float) -> None:
    with pytest.raises(ValueError, match="rate"):
        AdaptivePacer(bound)


def test_pacers_over_one_shared_budget_adapt_as_one() -> None:
    budget = SharedBudget(1000.0, 10.0)
    first, second = budget.pacer(), budget.pacer()
    first.acquire()
    first.on_throttled(None)
    assert second.rate == first.rate == pytest.approx(Tuning().beta * 1000.0)


def test_a_shared_budget_starts_at_its_start_rate_below_the_bound() -> None:
    assert SharedBudget(100_000.0, 5.0, start=100.0).pacer().rate == 100.0


@pytest.mark.parametrize(("pacing", "kind"), [("static", Pacer), ("adaptive", AdaptivePacer)])
def test_a_cold_start_builds_its_stage_pacer_at_the_instance_share(pacing: str, kind: type) -> None:
    env = dataclasses.replace(load_environment("prod", CDK_JSON), pacing=pacing)
    pacer = instance_pacer(env, "data_groups")
    assert isinstance(pacer, kind)
    # Its share of R (weights 1 : 2 : 50) over the stage's instances: its reservation
    # plus its retry consumer's.
    instances = env.stage("data_groups").reserved_concurrency + env.stage("data_groups").retry_concurrency
    assert pacer.rate == pytest.approx(env.hermes_rate_limit * 50 / 53 / instances)


def test_an_adaptive_instance_pacer_is_bounded_by_r() -> None:
    env = dataclasses.replace(load_environment("prod", CDK_JSON), pacing="adaptive")
    pacer = instance_pacer(env, "warriors")
    assert isinstance(pacer, AdaptivePacer)
    assert pacer.controller.bound == env.hermes_rate_limit


def test_a_429_at_the_configured_rate_climbs_back_to_it() -> None:
    pacer, t = make(200.0, burst=5)
    pacer.acquire()
    pacer.on_throttled(1.0)  # a clump at the told R, not a lower limit
    crawl(pacer, t, HiddenLimit(t, 1e9, 1e8), Tuning().recover_s + 0.5)
    assert pacer.rate == pytest.approx(200.0)


def test_a_fleet_instance_probes_gently_from_its_share_instead_of_doubling() -> None:
    t = FakeTime()
    pacer = AdaptivePacer(1000.0, start=10.0, probe_from_start=True, clock=t.clock, sleep=t.sleep)
    server = HiddenLimit(t, 1e9, 1e8)
    crawl(pacer, t, server, 1.0)
    assert 10.0 <= pacer.rate < 15.0  # discovering would have doubled four times
    crawl(pacer, t, server, 6.0)
    assert pacer.rate > 20.0  # but it does climb to take an idle share


@pytest.mark.parametrize("share", [0.05, 0.2])
@pytest.mark.parametrize(("limit", "start"), [(150.0, 100.0), (1000.0, 100.0), (150.0, 100_000.0)])
def test_a_share_refused_whatever_the_rate_does_not_hold_the_crawl_back(
    limit: float, start: float, share: float
) -> None:
    # Before: each of those 429s cut the rate, down to 0.5 calls/s.
    pacer, t = make(100_000.0, start=start)
    answers = crawl(pacer, t, Refusing(HiddenLimit(t, limit, limit / 10), share), 40.0)
    assert accepted_rate(answers, 10.0, 40.0) >= 0.85 * (1 - share) * limit


def test_a_share_refused_whatever_the_rate_is_learned_as_the_floor() -> None:
    pacer, t = make(100_000.0, start=100.0)
    crawl(pacer, t, Refusing(HiddenLimit(t, 150.0, 15.0), 0.2), 20.0)
    assert 0.1 <= pacer.state[FLOOR] <= 0.3


def test_without_refusals_of_its_own_the_server_leaves_no_floor() -> None:
    pacer, t = make(100_000.0, start=100.0)
    crawl(pacer, t, HiddenLimit(t, 150.0, 15.0), 20.0)
    assert pacer.state[FLOOR] == 0.0


def test_an_outage_backs_off_and_the_first_success_after_it_restores_the_rate() -> None:
    pacer, t = make(100_000.0, start=100.0)
    server = Refusing(HiddenLimit(t, 150.0, 15.0), 0.0)
    server.down = (20.0, 80.0)  # a minute of 429s to every call
    answers = crawl(pacer, t, server, 90.0)
    sent_in_outage = [at for at, _ in answers if 25.0 <= at < 80.0]
    assert len(sent_in_outage) <= 55 * 1.0  # backed off to about min_rate (0.5/s), not 150/s
    assert accepted_rate(answers, 83.0, 90.0) >= 0.9 * 150.0  # within seconds of the recovery


def fleet_crawl(
    instances: int, limit: float, share: float, seconds: float, *, tuning: Tuning, seed: int = 7
) -> list[tuple[float, bool]]:
    """A fleet told ``limit`` against a server of that limit refusing ``share`` on top, its
    instances running at once on one fake clock as discrete events (one call in flight
    each, answered 30-80 ms after it is sent, the server judging sends in time order);
    (send time, accepted). One caller taking the instances in turn would serialise them:
    while one sleeps towards its leased slice, none of the others sends, so even a server
    refusing nothing got 64 of 150 calls/s through."""
    rng = random.Random(seed)
    t, store = FakeTime(1_000.0), MemoryBudgetStore()
    pacers = [
        FleetPacer(
            store,
            limit,
            fallback_rate=limit / instances,
            tuning=tuning,
            fleet_size=instances,
            clock=t.clock,
            sleep=t.sleep,
        )
        for _ in range(instances)
    ]
    server = Refusing(HiddenLimit(t, limit, limit / 10), share)
    READY, SEND, ANSWER = 0, 1, 2
    events = [(t.now + rng.uniform(0, 0.01), READY, i, False) for i in range(instances)]
    heapq.heapify(events)
    answers: list[tuple[float, bool]] = []
    while events:
        t.now, kind, i, ok = heapq.heappop(events)
        if kind == READY and t.now < 1_000.0 + seconds:
            pacers[i].acquire()  # sleeps this instance alone: only its own send moves
            heapq.heappush(events, (t.now, SEND, i, False))
        elif kind == SEND:
            ok = server.take()
            answers.append((t.now, ok))
            heapq.heappush(events, (t.now + rng.uniform(0.03, 0.08), ANSWER, i, ok))
        elif kind == ANSWER:
            (pacers[i].on_success() if ok else pacers[i].on_throttled(1.0))
            heapq.heappush(events, (t.now, READY, i, False))
    return answers


@pytest.mark.parametrize("share", [0.05, 0.2])
@pytest.mark.parametrize(("instances", "limit"), [(14, 50.0), (125, 500.0)])  # dev's and prod's
@pytest.mark.parametrize("tuning", [Tuning(), SHARED_TUNING], ids=["local", "shipped"])
def test_a_fleet_tells_a_refused_share_from_its_limit_too(
    instances: int, limit: float, share: float, tuning: Tuning
) -> None:
    # Before: an instance scaled its cut by the share accepted in its last tenth of a
    # second (one or two of its answers), 0.78 (1 - p) R for prod at 20 % (local tuning).
    answers = fleet_crawl(instances, limit, share, 40.0, tuning=tuning)
    assert accepted_rate(answers, 1_010.0, 1_040.0) >= 0.85 * (1 - share) * limit


def test_a_fleet_instances_cut_scales_its_pace_by_the_share_of_its_answers_since_the_last_cut() -> None:
    t, store = FakeTime(1_000.0), MemoryBudgetStore()
    pacer = FleetPacer(store, 100.0, fallback_rate=10.0, clock=t.clock, sleep=t.sleep)
    store.item = BudgetItem(tat=t.now, w_max=100.0, cut_at=t.now - 10.0)  # the fleet holds at R
    for i in range(120):  # a fifth refused whatever the rate: the floor
        pacer.acquire()
        t.now += 0.15
        (pacer.on_throttled(1.0) if i % 5 == 0 else pacer.on_success())
    cut_at = store.item.cut_at
    for _ in range(39):  # a clump of 429s (not 40: an outage), until one stands above the floor
        pacer.acquire()
        t.now += 0.15
        pacer.on_throttled(1.0)
        if store.item.cut_at != cut_at:
            break
    assert store.item.cut_at != cut_at
    # 96 of its ~150 answers since the last cut got through; its last slots held none
    # (before: the cut took the fleet to 0.5 calls/s).
    assert store.item.w_max >= 0.6 * 100.0


TASK_CALLS = 50
"""Calls per leaf task in ``crawl_local`` (the ``local`` settings' 50 data groups a task)."""


def crawl_local(
    places: int, server_of: Callable[[FakeTime], HiddenLimit | Refusing], seconds: float, *, seed: int = 3
) -> list[tuple[float, bool]]:
    """A local run's leaf stage on one budget (R not told, starting at the ``local``
    settings' 100 calls/s and burst): ``THREADS_PER_PLACE`` threads per place, at most
    ``places`` tasks at work (``fanout.at_work``), each call answered 5-50 ms after it is
    sent, and each 429 waiting out its Retry-After of 1 s, its place given up meanwhile, as
    the Hermes client does; (send time, accepted). Unlike ``crawl``, answers to calls sent
    before a cut arrive after it, and the calls queued on the pacer send at the pace they
    were given."""
    return _crawl_leaf(places, server_of, seed=seed, until=lambda t: t.now >= seconds)


@pytest.mark.parametrize("places", [16, 64])  # the local settings' and --concurrency 64
def test_many_calls_in_flight_hold_an_untold_limit_with_few_429s(places: int) -> None:
    # Before: a probe's first 429 came back after the pace had climbed on (sends lag it by
    # the calls queued on the pacer); the cut kept a pace above the limit and its 429s were
    # learned as the server's own: 28 % of calls refused with 64 callers.
    answers = crawl_local(places, lambda t: HiddenLimit(t, 150.0, 15.0), 40.0)
    assert accepted_rate(answers, 10.0, 40.0) >= 0.95 * 150.0
    late = [ok for at, ok in answers if at >= 10.0]
    assert late.count(False) / len(late) <= 0.01


@pytest.mark.parametrize("share", [0.05, 0.2])
@pytest.mark.parametrize("places", [16, 64])
def test_a_refused_share_with_many_calls_in_flight_does_not_hold_the_crawl_back(
    places: int, share: float
) -> None:
    # Before: a refused call held its thread for its Retry-After, so 16 places accepted
    # at most 64 calls/s at 20 % refused (0.46 (1 - p) R), and 429 clumps put every
    # thread to sleep at once (0.80 at 5 %).
    answers = crawl_local(places, lambda t: Refusing(HiddenLimit(t, 150.0, 15.0), share), 40.0)
    assert accepted_rate(answers, 10.0, 40.0) >= 0.85 * (1 - share) * 150.0


@pytest.mark.parametrize("outage_s", [10.0, 60.0])
@pytest.mark.parametrize("places", [16, 64])
def test_an_outage_with_many_calls_in_flight_backs_off_and_recovers_within_seconds(
    places: int, outage_s: float
) -> None:
    # Before: the cuts of the outage's first 429s slowed the calls to min_rate before 40
    # 429s in a row came, so no back-off remembered the rate before it, and after a 10 s
    # outage the crawl crept up from 0.5 calls/s (a call every 2-4 s for 15 s on).
    def server_of(t: FakeTime) -> Refusing:
        server = Refusing(HiddenLimit(t, 150.0, 15.0), 0.0)
        server.down = (15.0, 15.0 + outage_s)  # every call refused
        return server

    end = 15.0 + outage_s
    answers = crawl_local(places, server_of, end + 10.0)
    sent_in_outage = [at for at, _ in answers if 20.0 <= at < end]
    assert len(sent_in_outage) <= end - 20.0  # backed off to about min_rate (0.5/s), not 150/s
    assert accepted_rate(answers, end + 3.0, end + 10.0) >= 0.9 * 150.0  # within seconds


def crawl_local_tasks(
    places: int, server_of: Callable[[FakeTime], HiddenLimit | Refusing], tasks: int, *, seed: int = 3
) -> list[tuple[float, bool]]:
    """``crawl_local``'s leaf stage crawling a run of ``tasks`` tasks to its end, as
    bench/ratelimit.py measures it (its tail included); (send time, accepted)."""
    todo = list(range(tasks))

    def next_task(_t: FakeTime) -> bool:
        if not todo:
            return True
        todo.pop()
        return False

    return _crawl_leaf(places, server_of, seed=seed, until=next_task, stop_mid_task=False)


def _crawl_leaf(
    places: int,
    server_of: Callable[[FakeTime], HiddenLimit | Refusing],
    *,
    seed: int,
    until: Callable[[FakeTime], bool],
    stop_mid_task: bool = True,
) -> list[tuple[float, bool]]:
    """The leaf stage both crawls share: each worker takes tasks until ``until`` says the
    run is over (a time, or no task left); with ``stop_mid_task`` a task stops there too."""
    t = FakeTime()
    threads = VirtualThreads(t)
    pacer = AdaptivePacer(100_000.0, start=100.0, burst=5.0, clock=t.clock, sleep=threads.sleep)
    at_work = AtWork(places, sleep=threads.sleep, conditions=(threads.condition(), threads.condition()))
    server = server_of(t)
    rng = random.Random(seed)
    answers: list[tuple[float, bool]] = []

    def call() -> None:
        while True:
            pacer.acquire()
            sent, ok = t.now, server.take()
            threads.sleep(rng.uniform(0.005, 0.05))
            answers.append((sent, ok))
            if ok:
                pacer.on_success()
                return
            pacer.on_throttled(1.0)
            at_work.sleep(1.0)

    def worker() -> None:
        while not until(t):
            with at_work.working():
                for _ in range(TASK_CALLS):
                    call()
                    if stop_mid_task and until(t):
                        break

    threads.run([worker] * (places * THREADS_PER_PLACE))
    return answers


def test_a_run_with_a_fifth_of_its_calls_refused_is_not_held_back_by_the_threads_waiting_to_retry() -> None:
    # Before: 4 threads per place. Each refused call holds its thread for its Retry-After,
    # and a pace a little past the limit refuses a third of the calls, not a fifth: 64
    # threads then sent about 165 calls/s, so a run of 12,000 calls accepted 0.78 (1 - p) L.
    share, limit = 0.2, 150.0
    answers = crawl_local_tasks(16, lambda t: Refusing(HiddenLimit(t, limit, limit / 10), share), 240)
    accepted = sum(1 for _, ok in answers if ok)
    assert accepted == 240 * TASK_CALLS
    elapsed = max(at for at, _ in answers)
    assert accepted / elapsed >= 0.85 * (1 - share) * limit
