"""Pacing ``shared``: one Hermes budget for a whole fleet of Lambda instances.

With ``static`` or ``adaptive`` pacing an instance knows only itself: it starts at its
share of R and idle shares flow to busy stages only as fast as instances dare to probe.
Here the fleet keeps one GCRA budget bounded by R, like a local run's shared memory
(``fanout.shared_pacing``), in one small item of a store (a DynamoDB table on AWS,
``fanout_aws.budget_table``):

- ``tat``, the budget's theoretical arrival time. An instance **leases a slice** of k
  slots with one conditional update (GCRA with a burst of k: ``tat += k / rate``, or
  ``tat = now - credit + k / rate`` once the budget has been idle, a credit of 0.1 s of R
  as Hermes' bucket has, at most 0.1 s at any rate; a second write only when the
  fleet's demand turned the budget busy or idle since this instance's last lease), then
  spends the slice locally, its threads sharing it. k is what the instance can send at
  its own pace (the measured gap from one of its sends to its next request: Hermes'
  latency over its calls in flight, and the gaps' spread) before its last slot is
  ``LATE_S`` late (see ``FleetPacer.slice_size``), at most ``LEASE_S`` of the rate and no
  more than fits before the caller's deadline; a fresh instance leases one slot. About
  0.11 writes per call at dev's R of 50, 0.15-0.16 at R 200-500 (the fake clock's
  fleets), instead of 1.9.

  An instance spends slots at its own pace, slower than the 1/rate the budget placed
  them at (an earlier attempt that insisted on the placement lost a third of R), so a
  slot is sent at or after its time and at most ``LATE_S`` after it; a later one is void
  (it expires harmlessly). ``tat`` only moves forward, so slots are 1/rate >= 1/R apart
  across the fleet, and **the bound** follows: over any window of W seconds the calls
  the fleet sends through the budget number at most ``R x (W + LATE_S) + 1`` (their
  slots lie in ``[t - LATE_S, t + W]``): 1.094 R over 5 s and 1.047 R over 10 s at
  R = 50, against ``R x W + burst`` when each call reserved its own slot. In a steady
  state the lateness is a shift, not a burst: the fleet sends at R. Instances falling
  back (below) and repairs are outside it. A slice the caller cannot use before its
  deadline is given back when nobody leased after it (one conditional write) and the
  call raises ``PacerBeyondDeadline``: a pacer never sleeps past ``max_wait``.
  A single item takes about 1,000 writes/s, which bounds R for this pacing
  (``settings.SHARED_MAX_RATE``).
- **Repair**: a ``tat`` further ahead than ``max(now, hold) + horizon`` (the queue the
  whole fleet can build: each instance's one slice, at most ``LEASE_S`` or one slot at
  the lowest rate, twice over) or a ``hold_until`` further ahead than the longest
  Retry-After honoured (``MAX_RETRY_AFTER_S``) plus the horizon is no budget but a
  corrupt write or an instance whose clock is ahead: the first instance to see it resets
  it to now with one conditional write (only if nobody moved it meanwhile), then leases;
  it is not obeyed. A repair can re-issue at most the slices leased before it.
- ``w_max``, ``cut_at``, ``hold_until``: what 429s taught (``fanout_core.adaptive_rate``).
  Whether a 429 is the fleet's own or a share the server refuses whatever the rate
  (the refused share against its floor) each instance judges from its own answers with
  the local pacers' controller; a cut scales the fleet's pace by the share of the
  instance's answers accepted since the last cut, not of its last tenths of a second as
  locally (an instance sends 1/n of the calls: a few answers there, and after a clump of
  429s none accepted, which once cut the fleet to 0.5 calls/s). Such a 429 for a call
  sent after the last cut cuts the rate for everyone (a conditional update on
  ``cut_at``, so a clump of 429s cuts once) and pushes ``tat`` to one new
  interval after now or the Retry-After hold, so the fleet resumes one call at a time;
  slots leased before the cut are still sent (the rest of each instance's slice; the
  instance that cut drops its own).
  Every instance derives the current rate from the item (``Controller.share_after``), so
  recovery costs no writes. A configured R stays the bound. The first cut's ``w_max`` is
  the paced rate at the 429 (a 429 at R, a clump, climbs straight back to R); a later
  one's is that pace times the share accepted (over 1 - floor once a floor is trusted),
  so a real limit below a configured R is found by repeated cuts.

The store's clock is the wall clock of every instance (Lambda hosts are NTP-synchronised
to milliseconds). If the store fails (throttled, unreachable), the instance paces alone at
its static share for ``FALLBACK_S`` and then tries the store again: a budget problem
never fails a task.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from fanout_core.adaptive_rate import (
    ACCEPTED,
    ANSWERS,
    BLIND,
    CUT_AT,
    GOOD,
    RATE,
    RAW,
    SHARE,
    TRUSTED,
    W_MAX,
    WIN_N,
    WIN_R,
    Controller,
    Tuning,
    new_state,
)
from fanout_core.errors import PacerBeyondDeadline
from fanout_core.hermes_http import MAX_RETRY_AFTER_S
from fanout_core.pacing import Pacer, default_burst

log = logging.getLogger("fanout")

FALLBACK_S = 5.0
"""How long an instance paces alone after the store failed."""
LEASE_S = 0.35
"""A slice spans at most this long of the rate (the horizon's unit). Leased on a budget
that was idle, its spending may make its last slot this much later than its first (the
idle credit takes the rest of ``LATE_S``); on a busy one, all of ``LATE_S``."""
LATE_S = 0.45
"""A slot is sent at most this long after its time, else void: ``LEASE_S`` of spending at
the instance's pace plus the idle budget's credit (0.1 s of R), so the fleet's bound is
``R x (W + LATE_S) + 1`` calls in any W seconds."""
PACE_ALPHA = 0.1
"""Weight of the newest gap in the instance's pace and its spread (EWMAs): a slice is
sized on their estimate, so a noisier one (0.3) voided more of its slots."""
SPREAD_Z = 2.5
"""Standard deviations of the slice's summed gaps kept in hand below its lateness budget:
on the fake clock's dev- and prod-shaped fleets, 0.3-0.7 % of the slots void (0-0.6 % when
slices were sized on ``LEASE_S`` at the pace alone), against 0.8-1.5 % at 1.5."""
TAT_EPS = 1e-6
SEED_AFTER_S = 600.0
"""A cold start with a learned limit (``fanout_core.learned_limit``) seeds the item with a cut
there only if the item saw no cut in this long: a new run's fleet (the item idle since the
last run, its old cut long past) starts at the learned rate, while a running fleet that
cut lately keeps what it found. Mid-run, a cold start after this long without a 429 seeds
again, once for the fleet (the cut's condition): the pace dips to the learned rate and
climbs back within seconds, at most once per this long."""
"""Two ``tat`` values closer than this are the same write (a lease moves it by at least
1/R >= 2 ms); the store's numbers have nanoseconds, floats of epoch seconds ~0.2 us."""


@dataclass(frozen=True)
class BudgetItem:
    """The shared budget as the store holds it (seconds are wall-clock epoch seconds)."""

    tat: float = 0.0
    w_max: float = 0.0
    """The rate at which 429s began (0: none seen)."""
    cut_at: float = 0.0
    hold_until: float = 0.0


class BudgetUnavailable(Exception):
    """The store could not be read or written (throttled, unreachable, denied)."""


class BudgetStore(Protocol):
    """The one item of a fleet's budget; each write is one atomic conditional update."""

    writes: int
    """Writes made, failed conditions included (DynamoDB bills those too)."""

    def reserve(self, *, floor: float, increment: float) -> BudgetItem:
        """Advance ``tat`` by ``increment`` from ``max(tat, floor)``; the item after it.

        A lease of k slots is ``increment = k / rate``. ``floor`` is now less the burst
        credit: an idle budget keeps a few slots in hand, as Hermes' own bucket does, so a
        moment without demand is not capacity lost. The max() takes two conditional
        writes (busy: ``tat >= floor``; idle: ``tat < floor``); the store tries first the
        one its last success or last-seen ``tat`` predicts, which is right unless the
        fleet's demand changed meanwhile (``tat`` never goes back)."""
        ...

    def cut(self, *, now: float, sent_at: float, w_max: float, hold_until: float) -> BudgetItem | None:
        """Record a cut at ``now`` (and ``hold_until`` if not 0) unless one was recorded at
        or after ``sent_at`` (then None: that 429 is already answered for); ``tat`` is not
        touched here (see ``push``)."""
        ...

    def push(self, *, tat: float) -> None:
        """Move ``tat`` forward to ``tat`` if it is behind, never back: slots already
        handed out stay the budget's, so none is handed out twice."""
        ...

    def give_back(self, *, end: float, amount: float) -> bool:
        """Move ``tat`` back by ``amount`` if it is still ``end`` (the end of this caller's
        slice: nobody leased after it, so the slots given back were handed out to no one);
        whether it did."""
        ...

    def repair(self, *, seen: float, tat: float, hold_until: float) -> BudgetItem | None:
        """Set ``tat`` and ``hold_until`` if ``tat`` is still ``seen`` (an absurd item, not yet
        repaired or moved by anyone else); the item after it, or None."""
        ...


def reserve_by_two_writes(
    *,
    busy: Callable[[], BudgetItem | None],
    idle: Callable[[], BudgetItem | None],
    busy_first: bool,
) -> tuple[BudgetItem, bool]:
    """``BudgetStore.reserve``'s max(tat, floor) as two conditional writes (None: its
    condition failed), the likely one first; another instance's write in between can make
    it the other one, so each is tried twice at most. The item, and whether the budget
    was busy (the store's next guess: a fleet that kept it busy keeps it busy, though this
    instance's own last ``tat``, a slice ago, may lie behind the floor by now)."""
    order = ((busy, True), (idle, False)) if busy_first else ((idle, False), (busy, True))
    for write, was_busy in order * 2:
        item = write()
        if item is not None:
            return item, was_busy
    raise BudgetUnavailable("contended")


class MemoryBudgetStore:
    """The store in one process (tests, the fleet bench), with a modelled latency per
    write and the same conditional writes as the DynamoDB store, so its ``writes`` are
    what the table would bill."""

    def __init__(self, *, latency_s: float = 0.0, sleep: Callable[[float], None] = time.sleep) -> None:
        self.item = BudgetItem()
        self.writes = 0
        self.by_kind: Counter[str] = Counter()
        """Writes per kind (``lease``, ``cut``, ``push``, ``give_back``, ``repair``; a
        condition that failed as ``<kind>_missed``): where the bill goes."""
        self._latency = latency_s
        self._sleep = sleep
        self._lock = threading.Lock()
        self._seen = threading.local()

    def _write(
        self, kind: str, condition: Callable[[BudgetItem], bool], change: Callable[[BudgetItem], BudgetItem]
    ) -> BudgetItem | None:
        if self._latency:
            self._sleep(self._latency)
        with self._lock:
            self.writes += 1
            if not condition(self.item):
                self.by_kind[kind + "_missed"] += 1
                return None
            self.by_kind[kind] += 1
            self.item = change(self.item)
            return self.item

    def reserve(self, *, floor: float, increment: float) -> BudgetItem:
        item, self._seen.busy = reserve_by_two_writes(
            busy=lambda: self._write(
                "lease", lambda it: it.tat >= floor, lambda it: replace(it, tat=it.tat + increment)
            ),
            idle=lambda: self._write(
                "lease", lambda it: it.tat < floor, lambda it: replace(it, tat=floor + increment)
            ),
            busy_first=getattr(self._seen, "busy", False) or getattr(self._seen, "tat", 0.0) >= floor,
        )
        self._seen.tat = item.tat
        return item

    def cut(self, *, now: float, sent_at: float, w_max: float, hold_until: float) -> BudgetItem | None:
        return self._write(
            "cut",
            lambda it: it.cut_at < sent_at,
            lambda it: replace(it, w_max=w_max, cut_at=now, hold_until=hold_until or it.hold_until),
        )

    def push(self, *, tat: float) -> None:
        self._write("push", lambda it: it.tat < tat, lambda it: replace(it, tat=tat))

    def give_back(self, *, end: float, amount: float) -> bool:
        return (
            self._write(
                "give_back",
                lambda it: abs(it.tat - end) <= TAT_EPS,
                lambda it: replace(it, tat=it.tat - amount),
            )
            is not None
        )

    def repair(self, *, seen: float, tat: float, hold_until: float) -> BudgetItem | None:
        item = self._write(
            "repair",
            lambda it: abs(it.tat - seen) <= TAT_EPS,
            lambda it: replace(it, tat=tat, hold_until=hold_until),
        )
        if item is not None:
            self._seen.tat = item.tat
        return item


class FleetPacer:
    """The ``PacerLike`` interface over a fleet's shared budget; one per instance."""

    def __init__(
        self,
        store: BudgetStore,
        bound: float,
        *,
        fallback_rate: float,
        tuning: Tuning | None = None,
        burst: float | None = None,
        fleet_size: int = 1,
        learned: float | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """``learned``: the rate an earlier run held (``fanout_core.learned_limit.start_rate``):
        the cold start seeds the item with a cut there (see ``SEED_AFTER_S``)."""
        if bound <= 0 or fallback_rate <= 0:
            raise ValueError("rate must be positive")
        self.store = store
        self.controller = Controller(bound, 1.0, tuning)
        self.bound = float(bound)
        self.burst = default_burst(bound) if burst is None else max(1.0, burst)
        """Slots an idle budget keeps in hand (the local pacer's default)."""
        self.horizon = 2 * max(1, fleet_size) * max(LEASE_S, 1.0 / self.controller.min_rate)
        """How far ahead of now (or of a hold) ``tat`` can honestly be: every instance of
        the fleet (``fleet_size``) holding one slice, twice over; further is repaired."""
        self.fallback = Pacer(fallback_rate, clock=clock, sleep=sleep)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._item = BudgetItem()
        self._alone_until = 0.0
        self._sent = threading.local()
        # The instance's slice, shared by its threads (under _slice_lock): slot times left,
        # where the slice ends in the budget, its interval, the cut it was leased under.
        self._slice_lock = threading.Lock()
        self._slots: deque[float] = deque()
        self._slice_end = 0.0
        self._slice_interval = 0.0
        self._slice_cut = 0.0
        self._cycle: float | None = None
        """Seconds from one of this instance's sends to its next request (EWMA)."""
        self._cycle_dev = 0.0
        """The mean absolute deviation of those gaps (EWMA): how far a slice's spending strays."""
        self._busy = False
        """Whether the last lease found the budget busy (its first slot not yet due): no idle
        credit made that slot late, so the slice's spending had all of ``LATE_S``."""
        self._last_send: float | None = None
        self._signal = new_state(self.bound, clock())
        """This instance's view of the answers (the refused share, the floor): the same
        controller as a local run decides from it whether a 429 is ours; the item holds
        only what the fleet must agree on (``w_max``, ``cut_at``, ``hold_until``)."""
        self._born = clock()
        self._seed = min(self.bound, learned) if learned else 0.0
        if self._seed:
            # A cut at the learned rate, unless the item saw one lately: one conditional
            # write per cold start (two for the one that seeds: the cut and its push).
            self._record_cut(self._born, self._born - SEED_AFTER_S, self._seed, 0.0)

    # -- the rate everyone derives from the item ---------------------------------------------
    def rate_at(self, now: float, item: BudgetItem | None = None) -> float:
        it = item or self._item
        if not it.w_max:
            return self.bound
        since = now - it.cut_at
        if it.w_max >= self.bound:
            share = self.controller.share_after(min(since, self.controller.t.recover_s), hold=1.0)
        else:
            share = self.controller.share_after(since)
        return min(self.bound, max(self.controller.min_rate, it.w_max * share))

    @property
    def rate(self) -> float:
        return self.rate_at(self._clock())

    def found(self) -> tuple[float, float] | None:
        """The fleet's rate at which 429s began and when (the item's last cut as this
        instance last saw it), if that cut came after this instance's cold start and is no
        seed of a learned limit (else a run would learn back what it was told)."""
        it = self._item
        if not it.w_max or it.cut_at < self._born or abs(it.w_max - self._seed) <= TAT_EPS:
            return None
        return it.w_max, it.cut_at

    # -- PacerLike ---------------------------------------------------------------------------
    def acquire(self, max_wait: float = math.inf) -> float:
        now = self._clock()
        if now < self._alone_until:
            return self.fallback.acquire(max_wait)
        with self._slice_lock:
            self._learn_pace(now)
            try:
                slot = self._take(now)
                for _ in range(2):  # a slice voided at once by a hold it revealed: lease again
                    if slot is None:
                        slot = self._next_slot(now, max_wait)
            except BudgetUnavailable as exc:
                self._fall_back(exc)
                slot = None
            if slot is not None and slot - now > max_wait:
                self._beyond_deadline(slot, now, max_wait)
        if slot is None:
            return self.fallback.acquire(max_wait)
        wait = max(0.0, slot - self._clock())  # from after the lease's write, not before it
        if wait:
            self._sleep(wait)
        self._sent.at = self._last_send = self._clock()
        return wait

    def _learn_pace(self, now: float) -> None:
        """The gap since this instance's last send: Hermes' latency over its calls in
        flight (a gap over a second is idleness, not pace)."""
        if self._last_send is None:
            return
        gap = now - self._last_send
        if 0.0 <= gap <= 1.0:
            gap = max(gap, 1e-3)
            if self._cycle is None:
                self._cycle, self._cycle_dev = gap, gap / 4
            else:
                self._cycle_dev += PACE_ALPHA * (abs(gap - self._cycle) - self._cycle_dev)
                self._cycle += PACE_ALPHA * (gap - self._cycle)

    def slice_size(self, rate: float, max_wait: float = math.inf) -> int:
        """Slots to lease: as many as this instance can send at its pace before the last
        one is ``LATE_S`` late (less the idle credit unless the budget was busy), at most
        ``LEASE_S`` of the rate and what fits before ``max_wait``; one until it has a pace.

        The slots lie 1/rate apart and the instance sends one a gap after the last, so its
        j-th slot after the first goes j x (gap - 1/rate) later than the first, give or take
        the gaps' spread over j (``SPREAD_Z`` deviations of their sum): sized on that drift,
        not on the gap alone, a dev-shaped fleet (R = 50, 1/R = 20 ms against gaps of
        30-80 ms) leases about 9 slots instead of 7."""
        if self._cycle is None:
            return 1
        interval = 1.0 / rate
        spend = LATE_S - (0.0 if self._busy else self._credit(interval))
        drift, spread = self._cycle - interval, SPREAD_Z * 1.25 * self._cycle_dev  # sd ~ 1.25 x mad
        cap = math.floor(rate * LEASE_S)
        if drift <= 0.0:  # a pace faster than the rate: the slots, not the pace, set the sends
            k = cap
        else:  # the largest j with j x drift + spread x sqrt(j) <= spend
            root = (math.sqrt(spread * spread + 4.0 * drift * spend) - spread) / (2.0 * drift)
            # Never fewer than the pace sends in LEASE_S (the rule before the drift): an
            # erratic pace (a loaded host, Hermes' long tail) would else lease a slot or two
            # a write (1.05 writes per call in the fleet bench at load 17).
            k = 1 + max(math.floor(root * root), math.floor(LEASE_S / self._cycle))
        if math.isfinite(max_wait):
            k = min(k, 1 + math.floor(max(0.0, max_wait) / self._cycle))
        return max(1, min(k, cap))

    def _credit(self, interval: float) -> float:
        """The idle budget's credit in seconds: at most what ``LATE_S`` leaves beyond ``LEASE_S``."""
        return min((self.burst - 1.0) * interval, LATE_S - LEASE_S)

    def _take(self, now: float) -> float | None:
        """The next usable slot of the slice (when to send), voiding those too late to send
        within ``LATE_S`` of their time and the whole slice after a cut this instance saw."""
        if self._slots and self._item.cut_at > self._slice_cut:
            self._slots.clear()
        while self._slots:
            slot = self._slots.popleft()
            send = max(slot, self._item.hold_until)
            if max(send, now) <= slot + LATE_S:
                return send
        return None

    def _next_slot(self, now: float, max_wait: float = math.inf) -> float | None:
        """Lease a slice (repairing an absurd item first) and take its first slot."""
        rate = self.rate_at(now)
        interval = 1.0 / rate
        k = self.slice_size(rate, max_wait)
        credit = self._credit(interval)
        floor = max(now, self._item.hold_until) - credit
        item = self.store.reserve(floor=floor, increment=k * interval)
        if self._absurd(item, now):
            self._repair(item, now)
            floor = max(now, self._item.hold_until) - credit
            item = self.store.reserve(floor=floor, increment=k * interval)
            if self._absurd(item, now):
                raise BudgetUnavailable("budget item still absurdly far ahead after a repair")
        self._item = item
        start = item.tat - k * interval
        self._busy = start >= now
        self._slots = deque(start + j * interval for j in range(k))
        self._slice_end, self._slice_interval, self._slice_cut = item.tat, interval, item.cut_at
        return self._take(now)

    def _absurd(self, item: BudgetItem, now: float) -> bool:
        """Further ahead than any honest write puts it (see the module's Repair)."""
        hold_absurd = item.hold_until > now + MAX_RETRY_AFTER_S + self.horizon
        hold = 0.0 if hold_absurd else item.hold_until
        return hold_absurd or item.tat > max(now, hold) + self.horizon

    def _repair(self, item: BudgetItem, now: float) -> None:
        """Reset an absurd item to now with one conditional write (only if nobody moved it
        since: one repair for many instances seeing it)."""
        hold_absurd = item.hold_until > now + MAX_RETRY_AFTER_S + self.horizon
        hold = 0.0 if hold_absurd else item.hold_until
        tat = max(now, hold) if item.tat > max(now, hold) + self.horizon else item.tat
        repaired = self.store.repair(seen=item.tat, tat=tat, hold_until=hold)
        self._item = repaired or replace(item, tat=tat, hold_until=hold)
        log.warning(
            "budget item absurdly far ahead: repaired, not obeyed",
            extra={
                "outcome": "budget_repaired" if repaired else "budget_repaired_by_another",
                "tat_ahead_s": round(item.tat - now, 3),
                "hold_ahead_s": round(item.hold_until - now, 3),
                "horizon_s": round(self.horizon, 3),
            },
        )

    def _beyond_deadline(self, slot: float, now: float, max_wait: float) -> None:
        """Give the slice back (its tail is this slot and the rest) and raise: the caller's
        task is retried later rather than sleeping towards a slot it could not use."""
        amount = (1 + len(self._slots)) * self._slice_interval
        self._slots.clear()
        with contextlib.suppress(BudgetUnavailable):  # else the slots expire harmlessly
            self.store.give_back(end=self._slice_end, amount=amount)
        log.warning(
            "pacer slot beyond the task's deadline: giving the task back",
            extra={
                "outcome": "pacer_beyond_deadline",
                "wait_s": round(slot - now, 3),
                "max_wait_s": max_wait,
            },
        )
        raise PacerBeyondDeadline(
            f"shared budget: the next slot is {slot - now:.1f} s away, past the task's {max_wait:.1f} s"
        )

    def _mirror(self, now: float) -> None:
        """Bring the signal up to the item: a cut by any instance starts a new count."""
        sig, it = self._signal, self._item
        if it.cut_at != sig[CUT_AT]:
            self.controller.mark_cut(sig, it.cut_at)
            if sig[W_MAX] and it.w_max and not sig[GOOD]:  # another instance's informed cut
                sig[BLIND], sig[RAW], sig[WIN_N], sig[WIN_R] = 0.0, 1.0 - sig[TRUSTED], 0.0, 0.0
        sig[W_MAX], sig[RATE] = it.w_max, self.rate_at(now, it)

    def on_throttled(self, retry_after: float | None) -> None:
        now = self._clock()
        self.fallback.on_throttled(retry_after)
        sent_at = getattr(self._sent, "at", now)
        c, t = self.controller, self.controller.t
        with self._lock:  # one cut per instance at a time; the store decides across instances
            sig = self._signal
            self._mirror(now)
            c.count_answer(sig, now, sent_at, refused=True)
            verdict = c.verdict(sig, now, sent_at)
            if verdict == "ignore" or now < self._alone_until:
                return
            # The instance sees only its own calls: the fleet's accepted rate is its pace
            # times the share of this instance's calls that got through.
            rate = sig[RATE]
            w_max = c.cut_to(sig, verdict, rate, rate, rate * self._accepted_share(now))
            hold = now + retry_after if retry_after is not None and retry_after > t.hold_above_s else 0.0
            self._record_cut(now, sent_at, w_max, hold)

    def _accepted_share(self, now: float) -> float:
        """The share of this instance's answers accepted since the last cut (at least
        ``evidence / 2`` of them; else over its last ~64 answers, as when every 429 cuts).
        Not the local pacer's smoothed 0.1 s slots of sent and accepted calls: an instance
        sends 1/n of the fleet's calls, a few per slot, so those hold its last one or two
        answers: a cut to 46 % of the rate where 76 % of its answers since the last cut got
        through, and to 0.5 calls/s after a clump of 429s (prod at 20 % refused kept
        0.78 (1 - p) R)."""
        sig, t = self._signal, self.controller.t
        if sig[BLIND]:
            return self.controller.accepted_share(sig, now)  # already counted in answers
        if sig[ANSWERS] >= t.evidence / 2:
            return sig[ACCEPTED] / sig[ANSWERS]
        return 1.0 - sig[SHARE]

    def on_success(self) -> None:
        self.fallback.on_success()
        now = self._clock()
        sent_at = getattr(self._sent, "at", now)
        with self._lock:
            self._mirror(now)
            self.controller.count_answer(self._signal, now, sent_at, refused=False)
            good = self.controller.recovered(self._signal, sent_at)
            if good and now >= self._alone_until:
                self._record_cut(now, sent_at, good, 0.0)  # the outage is over: back to the rate before it

    def _record_cut(self, now: float, sent_at: float, w_max: float, hold: float) -> None:
        """Cut the fleet's rate in the store (unless a cut since ``sent_at`` answered for it)."""
        t = self.controller.t
        try:
            item = self.store.cut(now=now, sent_at=sent_at, w_max=w_max, hold_until=hold)
            if item is not None:
                self._item = item
                self._mirror(now)
                # The next slot comes one new interval after the cut (or the hold), so the
                # fleet resumes one call at a time, not all at once; slots handed out
                # before it stay valid (tat only moves forward). The cut's answer holds
                # tat: a fleet whose slices reach past that already needs no push (a
                # write that would only fail its condition, billed all the same).
                tat = max(now, hold) + 1.0 / max(self.controller.min_rate, t.beta * w_max)
                if item.tat < tat:
                    self.store.push(tat=tat)
        except BudgetUnavailable as exc:
            self._fall_back(exc)

    def _fall_back(self, exc: BudgetUnavailable) -> None:
        """Pace alone for ``FALLBACK_S`` from now (after the failed write, which may have
        taken seconds). While it does, its static share is not in the budget, so the fleet
        can exceed R by the shares of the instances falling back."""
        self._alone_until = self._clock() + FALLBACK_S
        log.warning(
            "budget unavailable: pacing alone at the static share",
            extra={"outcome": "budget_fallback", "reason": str(exc)[:200], "seconds": FALLBACK_S},
        )
