"""Pacing ``shared``: one Hermes budget for a whole fleet of Lambda instances.

With ``static`` or ``adaptive`` pacing an instance knows only itself: it starts at its
share of R and idle shares flow to busy stages only as fast as instances dare to probe.
Here the fleet keeps one GCRA budget bounded by R, like a local run's shared memory
(``fanout.shared_pacing``), in one small item of a store (a DynamoDB table on AWS,
``fanout_aws.budget_table``):

- ``tat``, the budget's theoretical arrival time: before each call an instance
  **reserves** the next slot with one conditional update (``tat += 1 / rate``, or
  ``tat = now - credit + 1 / rate`` once the budget has been idle, a credit of 0.1 s of R
  as Hermes' bucket has), and a second one only when another instance moved the budget
  since this one last saw it. One slot per call: leasing several slots at once was
  measured in ``bench/fleet.py`` and lost a third of R, because an instance spends slots
  at its own pace (one call in flight per task) while the budget had placed them 1/R
  apart, so the fleet either voided late slots or sent them as bursts into Hermes'
  bucket. ``tat`` only moves forward, so no slot is handed out twice. A single item takes
  about 1,000 writes/s, which bounds R for this pacing (``settings.SHARED_MAX_RATE``).
- ``w_max``, ``cut_at``, ``hold_until``: what 429s taught (``fanout_core.adaptive_rate``).
  A 429 for a call sent after the last cut cuts the rate for everyone (a conditional
  update on ``cut_at``, so a clump of 429s cuts once) and pushes ``tat`` to one new
  interval after now or the Retry-After hold, so the fleet resumes one call at a time;
  slots handed out before the cut are still sent (at most one per waiting thread).
  Every instance derives the current rate from the item (``Controller.share_after``), so
  recovery costs no writes. A configured R stays the bound. ``w_max`` is the paced rate
  at the 429, not a measured one: a 429 at R (a clump) climbs straight back to R, so a
  real limit below a configured R is found by repeated cuts, not remembered.

The store's clock is the wall clock of every instance (Lambda hosts are NTP-synchronised
to milliseconds). If the store fails (throttled, unreachable), the instance paces alone at
its static share for ``FALLBACK_S`` and then tries the store again: a budget problem
never fails a task.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from fanout_core.adaptive_rate import (
    BLIND,
    CUT_AT,
    GOOD,
    RATE,
    RAW,
    TRUSTED,
    W_MAX,
    WIN_N,
    WIN_R,
    Controller,
    Tuning,
    new_state,
)
from fanout_core.pacing import Pacer, default_burst

log = logging.getLogger("fanout")

FALLBACK_S = 5.0
"""How long an instance paces alone after the store failed."""


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

        ``floor`` is now less the burst credit: an idle budget keeps a few slots in hand,
        as Hermes' own bucket does, so a moment without demand is not capacity lost. The
        max() takes two conditional writes (busy: ``tat >= floor``; idle: ``tat < floor``);
        the store tries first the one its last-seen ``tat`` predicts, which is right
        unless another instance moved the budget meanwhile (``tat`` never goes back)."""
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


def reserve_by_two_writes(
    *,
    busy: Callable[[], BudgetItem | None],
    idle: Callable[[], BudgetItem | None],
    busy_first: bool,
) -> BudgetItem:
    """``BudgetStore.reserve``'s max(tat, floor) as two conditional writes (None: its
    condition failed), the likely one first; another instance's write in between can make
    it the other one, so each is tried twice at most."""
    order = (busy, idle) if busy_first else (idle, busy)
    for write in order * 2:
        item = write()
        if item is not None:
            return item
    raise BudgetUnavailable("contended")


class MemoryBudgetStore:
    """The store in one process (tests, the fleet bench), with a modelled latency per
    write and the same conditional writes as the DynamoDB store, so its ``writes`` are
    what the table would bill."""

    def __init__(self, *, latency_s: float = 0.0, sleep: Callable[[float], None] = time.sleep) -> None:
        self.item = BudgetItem()
        self.writes = 0
        self._latency = latency_s
        self._sleep = sleep
        self._lock = threading.Lock()
        self._seen = threading.local()

    def _write(
        self, condition: Callable[[BudgetItem], bool], change: Callable[[BudgetItem], BudgetItem]
    ) -> BudgetItem | None:
        if self._latency:
            self._sleep(self._latency)
        with self._lock:
            self.writes += 1
            if not condition(self.item):
                return None
            self.item = change(self.item)
            return self.item

    def reserve(self, *, floor: float, increment: float) -> BudgetItem:
        item = reserve_by_two_writes(
            busy=lambda: self._write(
                lambda it: it.tat >= floor, lambda it: replace(it, tat=it.tat + increment)
            ),
            idle=lambda: self._write(
                lambda it: it.tat < floor, lambda it: replace(it, tat=floor + increment)
            ),
            busy_first=getattr(self._seen, "tat", 0.0) >= floor,
        )
        self._seen.tat = item.tat
        return item

    def cut(self, *, now: float, sent_at: float, w_max: float, hold_until: float) -> BudgetItem | None:
        return self._write(
            lambda it: it.cut_at < sent_at,
            lambda it: replace(it, w_max=w_max, cut_at=now, hold_until=hold_until or it.hold_until),
        )

    def push(self, *, tat: float) -> None:
        self._write(lambda it: it.tat < tat, lambda it: replace(it, tat=tat))


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
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if bound <= 0 or fallback_rate <= 0:
            raise ValueError("rate must be positive")
        self.store = store
        self.controller = Controller(bound, 1.0, tuning)
        self.bound = float(bound)
        self.burst = default_burst(bound) if burst is None else max(1.0, burst)
        """Slots an idle budget keeps in hand (the local pacer's default)."""
        self.fallback = Pacer(fallback_rate, clock=clock, sleep=sleep)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._item = BudgetItem()
        self._alone_until = 0.0
        self._sent = threading.local()
        self._signal = new_state(self.bound, clock())
        """This instance's view of the answers (the refused share, the floor): the same
        controller as a local run decides from it whether a 429 is ours; the item holds
        only what the fleet must agree on (``w_max``, ``cut_at``, ``hold_until``)."""

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

    # -- PacerLike ---------------------------------------------------------------------------
    def acquire(self, max_wait: float = math.inf) -> float:
        now = self._clock()
        if now < self._alone_until:
            return self.fallback.acquire()
        try:
            slot = self._next_slot(now)
        except BudgetUnavailable as exc:
            self._fall_back(exc)
            return self.fallback.acquire()
        wait = max(0.0, slot - now)
        if wait:
            self._sleep(wait)
        self._sent.at = self._clock()
        return wait

    def _next_slot(self, now: float) -> float:
        interval = 1.0 / self.rate_at(now)
        credit = (self.burst - 1.0) * interval
        item = self.store.reserve(floor=now - credit, increment=interval)
        self._item = item
        return max(item.tat - interval, item.hold_until)

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
            c.count_sent(sig, now)  # counted as answered: acquire stays the store's
            c.count_answer(sig, now, sent_at, refused=True)
            verdict = c.verdict(sig, now, sent_at)
            if verdict == "ignore" or now < self._alone_until:
                return
            # The instance sees only its own calls: the fleet's accepted rate is its pace
            # times the share of this instance's calls that got through.
            rate = sig[RATE]
            w_max = c.cut_to(sig, verdict, rate, rate, rate * c.accepted_share(sig, now))
            hold = now + retry_after if retry_after is not None and retry_after > t.hold_above_s else 0.0
            self._record_cut(now, sent_at, w_max, hold)

    def on_success(self) -> None:
        self.fallback.on_success()
        now = self._clock()
        sent_at = getattr(self._sent, "at", now)
        with self._lock:
            self._mirror(now)
            self.controller.count_sent(self._signal, now)
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
                # before it stay valid (tat only moves forward).
                self.store.push(tat=max(now, hold) + 1.0 / max(self.controller.min_rate, t.beta * w_max))
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
