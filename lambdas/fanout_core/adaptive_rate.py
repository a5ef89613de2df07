"""Adaptive pacing: converge on the server's real rate limit from its 429s, and hold it.

The rate limit R in the settings is an upper bound the pacer never exceeds, not a promise
that Hermes allows it: a limit that is not told (``local`` says 100,000) or set too high
is found from the answers. The controller is CUBIC-like AIMD over one pacing rate:

- **discover**: while no 429 has been seen, the rate doubles every ``doubling_s`` the
  pacer is the bottleneck (callers wait on it), never beyond 2x the rate actually sent;
- **cut**: a 429 for a call sent after the last cut (when it is ours, below) remembers
  the rate at which 429s began (``w_max``: the pace times the share accepted; the rate
  sent while still discovering) and drops to ``beta * w_max``; 429s for calls already
  in flight at a cut change nothing;
- **recover and hold**: the rate climbs back along ``w_max * (1 + c * (t - K)^3)``, steep
  at first, flat around ``w_max`` at ``K = recover_s`` after the cut (it holds there for
  seconds), then convex: a probe above ``w_max`` that finds a higher limit accelerates.
  A 429 at the bound itself (R told right, a clump of calls) climbs back to R and stays.

**429s that are not ours.** A server may refuse a share of calls whatever the rate (a
per-endpoint limit, other tenants, a gateway shedding load). Cutting then lowers the rate,
not the share, and cut after cut took a crawl to ``min_rate``. The signal: a share that
does not fall when the rate is cut below what the server accepted. So

- every answer feeds the refused ``share`` (an average of the last ~64 answers);
- an informed cut takes the limit from the pace times the share of calls *accepted*
  (a lull in demand lowers the accepted rate, not the limit), so the pace then holds below
  what got through; the share still refused there, at a pace that is not too
  high, is the ``floor``: the median share of the last windows of answers to calls sent
  while the pace is at or below where 429s began (not while probing above it, except
  for the first ``evidence`` answers after the cut: at a few calls/s the probe begins
  before a window fills);
- the first 429 while discovering cuts blind, to the rate sent (the accepted share lags
  the doubling, and may hold the server's own refusals); the next cut, ``evidence``
  answers later, counts the share accepted since it;
- while the floor is known to be ~0, every 429 cuts, as above; else a 429 cuts only
  ``evidence`` answers after the last cut, and only if the share stands ``margin`` plus
  ``noise_z`` standard deviations of the share above the floor: a rate that causes 429s
  raises the share, a fixed refusal does not;
- once a floor was learned at a pace held below the uncorrected accepted rate, cuts divide
  the accepted share by ``1 - floor`` (the server's own refusals are no sign of the
  limit), so the crawl holds near the limit instead of ``1 - floor`` below it. (A floor
  learned later at a pace that overshot reads some excess as the server's own, and each
  cut sized on it overshoots again: at p = 0.2 the floor crept from 0.19 to 0.36 over two
  minutes on the fake clock, a third of the calls refused. No accepted call is lost at the
  server, but each 429 holds its caller for its Retry-After: ``fanout.at_work`` runs enough
  threads per place to absorb it.)

**Many calls in flight.** With many callers, the calls sent lag the pace by the slots
already handed out to callers queued on it, and the answers lag the sends by their latency:
a probe's first 429 comes back after the pace has climbed on, and the pace at a cut is not
what was sent. So each answer carries the pace its call's slot was given (``PACED``, an
average over the last ~64 answers, stands for the pace in the product above); a cut taken
while more than ``queued_s`` of slots are handed out is sized on no more than the accepted
calls/s of the last ``through_s``; and once a limit was met, a probe never paces above
``probe_ahead`` times what gets through (less the floor): a higher limit is still found, as
what gets through rises with the pace. Before, 64 callers kept a pace above the limit whose
429s were learned as the floor (28 % of calls refused on the fake clock).

**Outage.** ``evidence`` 429s in a row, or ``outage_calls`` over ``outage_s`` or more once
cuts took the pace below ``outage_pace`` of the rate known good (the cuts of an outage's
first 429s slow the calls down: with 16 places at work, 40 in a row never came, and the crawl
crept up from ``min_rate`` after the server's recovery), are a server refusing every call
(down, shedding all load): the pace halves at each 429 of a call sent after the last halving, down to
``min_rate``, and the rate known good before it (the limit at the last cut after which
calls got through) is kept; the first success of a call sent after the last halving
restores it, so the crawl is back at speed within a round trip of the server's recovery.

A Retry-After above ``hold_above_s`` holds every caller until it passes (a quota window,
an overloaded server); one of at most a second (delay-seconds are whole: "1" is the
rounding of any short wait) delays only the rejected call, which the client already
does, so a probe does not cost a second of the whole budget.

The state is a flat vector of doubles so that the same code runs over a Python list (one
process, a thread lock) and over shared memory (``fanout.shared_pacing``: every process
of a local run adapts as one budget). Callers hold their lock around every function here.
"""

from __future__ import annotations

import math
from collections.abc import MutableSequence
from dataclasses import dataclass
from typing import Literal

# The state vector's slots.
NEXT, RATE, W_MAX, CUT_AT, GROWN_AT, SLOT_AT, SLOT_SENT, SLOT_OK, SENT, OK, MEASURED, HOLD = range(12)
SHARE, FLOOR, ANSWERS, ACCEPTED, GOOD, KNOWN, BLIND, RAW, TRUSTED, WIN_N, WIN_R, WINS, RUN = range(12, 25)
THROUGH, THROUGH_S, PACED, RUN_AT, SLOT_BUSY = 25, 26, 27, 28, 29
"""Accepted calls/s, averaged over about ``Tuning.through_s`` of the slots in which callers
waited on the pacer (what the server let through while the pace, not a lull in demand,
held the calls back), and those seconds (capped); the pace at which the calls
answered lately were sent (their slots' spacing), averaged over ~64 answers like ``SHARE``;
when the current run of 429s (``RUN``) began; whether a caller waited in this slot."""
WINDOWS = 4
"""Complete windows of answers whose median refused share is the floor."""
WIN_0 = 30
STATE_SIZE = WIN_0 + WINDOWS

Verdict = Literal["ignore", "cut", "back_off"]
"""What one 429 means: not ours (or already answered for), our rate is too high, or the
server refuses most calls whatever we send."""


@dataclass(frozen=True, kw_only=True)
class Tuning:
    """How the controller moves; the defaults are what bench/ratelimit.py and bench/fleet.py measured."""

    beta: float = 0.9
    """The rate kept after a cut, as a share of the rate at which 429s began."""
    hold: float = 0.97
    """The share of that rate the pacer climbs back to and holds."""
    recover_s: float = 1.0
    """Seconds from a cut back to the held rate (a concave climb)."""
    hold_s: float = 3.0
    """Seconds the held rate is kept before probing above it."""
    probe_s: float = 2.0
    """Seconds of probing (a convex climb) that take the rate 10 % above where 429s began."""
    doubling_s: float = 0.25
    """While no limit is known: seconds of being the bottleneck per doubling of the rate."""
    slot_s: float = 0.1
    """The measuring slot of the sent and accepted rates."""
    smoothing: float = 0.5
    """Weight of the newest slot in the sent and accepted rates."""
    through_s: float = 1.0
    """Seconds over which the accepted rate that sizes a cut is averaged."""
    queued_s: float = 0.05
    """Seconds of slots already handed out beyond which sends lag the pace: a cut is then
    sized on no more than the accepted rate."""
    probe_ahead: float = 1.5
    """Once a limit was met, the pace stays within this factor of the accepted rate (less
    the floor): a probe finds a higher limit as what gets through rises with it."""
    hold_above_s: float = 1.0
    """A Retry-After longer than this holds every caller."""
    min_rate: float = 0.5
    """Calls/s the rate never falls below (or the bound, if that is lower)."""
    share_weight: float = 1 / 64
    """Weight of each answer in the refused share (it averages ~64 answers)."""
    margin: float = 0.01
    """Refused share above the floor that is ours, on top of the share's noise."""
    noise_z: float = 4.0
    """Standard deviations of the share's noise that a 429 must stand above the floor."""
    window: float = 128.0
    """Answers per window of the floor (the median refused share of the last few windows)."""
    settle: float = 8.0
    """Answers after a cut that do not count in the floor (the server's bucket refills)."""
    evidence: float = 40.0
    """Answers after a cut before another one: what the cut did must be seen first."""
    outage_s: float = 1.0
    """Seconds of nothing but 429s (``outage_calls`` at least) that are an outage however
    few calls they are, once cuts took the pace below ``outage_pace`` of the rate known good:
    the cuts of an outage's first 429s slow the calls faster than ``evidence`` 429s arrive."""
    outage_calls: float = 4.0
    outage_pace: float = 0.25
    floor_max: float = 0.5
    """The floor never goes above this (a server refusing more is not one to keep pace with)."""


def new_state(rate: float, now: float, *, probe_from: Tuning | None = None) -> list[float]:
    """A fresh state that paces at ``rate`` from ``now``: discovering (doubling until a 429),
    or, with ``probe_from``, taking ``rate`` as known to be safe and probing above it at once
    (a fleet instance's static share: many instances doubling at once would flood Hermes)."""
    s = [0.0] * STATE_SIZE
    s[RATE] = rate
    s[NEXT] = now
    s[GROWN_AT] = s[SLOT_AT] = now
    s[CUT_AT] = -1e18
    if probe_from is not None:
        s[W_MAX] = rate / probe_from.hold
        s[CUT_AT] = now - probe_from.recover_s - probe_from.hold_s
    return s


def known_limit_state(limit: float, now: float, tuning: Tuning) -> list[float]:
    """A fresh state as right after a cut at ``limit`` (a limit an earlier run learned): pacing
    at ``beta * limit`` and growing back towards it, then probing past it, as after any cut."""
    s = new_state(tuning.beta * limit, now)
    s[W_MAX] = limit
    s[CUT_AT] = s[GROWN_AT] = now
    return s


def reset(s: MutableSequence[float], rate: float, now: float) -> None:
    for i, value in enumerate(new_state(rate, now)):
        s[i] = value


class Controller:
    """The functions over a state vector, for one bound and one burst."""

    def __init__(self, bound: float, burst: float, tuning: Tuning | None = None) -> None:
        if bound <= 0:
            raise ValueError("rate must be positive")
        self.bound = float(bound)
        self.burst = max(1.0, float(burst))
        self.t = tuning or Tuning()
        self.min_rate = min(self.bound, self.t.min_rate)

    # -- measuring -------------------------------------------------------------------------
    def _roll(self, s: MutableSequence[float], now: float) -> None:
        span = now - s[SLOT_AT]
        if span < self.t.slot_s:
            return
        sent, ok = s[SLOT_SENT] / span, s[SLOT_OK] / span
        if s[MEASURED]:
            a = self.t.smoothing
            s[SENT] = a * sent + (1 - a) * s[SENT]
            s[OK] = a * ok + (1 - a) * s[OK]
        else:
            s[SENT], s[OK], s[MEASURED] = sent, ok, 1.0
        if s[SLOT_BUSY]:  # the pace held callers back: what got through says what the limit let
            b = min(1.0, span / self.t.through_s)
            s[THROUGH] = b * ok + (1 - b) * s[THROUGH] if s[THROUGH_S] else ok
            s[THROUGH_S] = min(self.t.through_s, s[THROUGH_S] + span)
        s[SLOT_AT], s[SLOT_SENT], s[SLOT_OK], s[SLOT_BUSY] = now, 0.0, 0.0, 0.0

    def _rates(self, s: MutableSequence[float], now: float) -> tuple[float, float]:
        """(sent, accepted) calls/s lately; before a whole slot, from the part so far."""
        if s[MEASURED]:
            return s[SENT], s[OK]
        span = max(now - s[SLOT_AT], 1e-3)
        return s[SLOT_SENT] / span, s[SLOT_OK] / span

    # -- the three events ------------------------------------------------------------------
    def reserve(
        self, s: MutableSequence[float], now: float, *, again: bool = False, max_wait: float = math.inf
    ) -> float:
        """Take the next slot for one call (``again``: the same call, after a cut); the
        seconds the caller must wait for it. A slot more than ``max_wait`` away is not
        taken (the wait is returned, nothing changes): the caller gives up on it."""
        self._roll(s, now)
        interval = 1.0 / s[RATE]
        slot = max(s[NEXT], now - (self.burst - 1.0) * interval, s[HOLD])
        wait = slot - now
        if wait > max(0.0, max_wait):
            return wait
        if not again:
            s[SLOT_SENT] += 1
        s[NEXT] = slot + interval
        if wait > 0:
            s[SLOT_BUSY] = 1.0
            self._grow(s, now)
        return max(0.0, wait)

    def recheck(
        self, s: MutableSequence[float], now: float, reserved_at: float, *, max_wait: float = math.inf
    ) -> float:
        """After waiting for a slot reserved at ``reserved_at``: 0 to go now, or the seconds of
        a new slot if the pace was cut meanwhile (slots taken at the old pace are void)."""
        if s[CUT_AT] <= reserved_at and now >= s[HOLD]:
            return 0.0
        return self.reserve(s, now, again=True, max_wait=max_wait)

    def _grow(self, s: MutableSequence[float], now: float) -> None:
        dt = min(now - s[GROWN_AT], self.t.slot_s)
        s[GROWN_AT] = now
        if dt <= 0 or now < s[HOLD]:
            return
        rate = s[RATE]
        if not s[W_MAX]:
            target = rate * 2.0 ** (dt / self.t.doubling_s)
        else:
            since = now - s[CUT_AT]
            if s[W_MAX] >= self.bound:  # refused at the told R: a clump; climb back to R
                target = self.bound * self.share_after(min(since, self.t.recover_s), hold=1.0)
            else:
                target = s[W_MAX] * self.share_after(since)
        if s[MEASURED] and s[SENT] > 0:
            target = min(target, max(rate, 2.0 * s[SENT]))  # never far past what is sent
        if s[W_MAX] and s[THROUGH_S] >= self.t.through_s:
            # Never far past what gets through: sends lag the pace by the calls queued on
            # it and the answers by their latency, so a probe past the limit would climb on
            # for a second before its first 429 came back.
            through = s[THROUGH] / (1.0 - s[FLOOR])
            target = min(target, max(rate, self.t.probe_ahead * through))
        s[RATE] = min(self.bound, max(self.min_rate, target))

    def share_after(self, since: float, hold: float | None = None) -> float:
        """The rate, as a share of the rate at which 429s began, ``since`` seconds after a cut."""
        t = self.t
        top = t.hold if hold is None else hold
        if since < t.recover_s:
            return top - (top - t.beta) * (1.0 - since / t.recover_s) ** 3
        since -= t.recover_s + t.hold_s
        if since <= 0:
            return top
        return top + (1.1 - top) * (since / t.probe_s) ** 3

    # -- telling our 429s from the server's own ---------------------------------------------
    def answered(self, s: MutableSequence[float], sent_at: float | None, refused: bool) -> None:
        """Count one answer in the refused share and, for a call sent while the pace holds at
        or below where 429s began (``settle`` answers after an informed cut, not probing
        above it), in the floor's window."""
        t, x = self.t, 1.0 if refused else 0.0
        s[SHARE] += t.share_weight * (x - s[SHARE])
        s[RUN] = s[RUN] + 1 if refused else 0.0
        if sent_at is not None and sent_at <= s[CUT_AT]:
            return  # sent at the pace before the cut: says nothing of the pace since
        s[ANSWERS] += 1
        s[ACCEPTED] += 1.0 - x
        # Not probing above where 429s began, or within the first answers after the cut
        # (at a few calls/s the probe begins before a window fills).
        holding = s[W_MAX] and not (s[GOOD] or s[BLIND]) and (s[RATE] <= s[W_MAX] or s[ANSWERS] <= t.evidence)
        if not holding or s[ANSWERS] <= t.settle:
            return
        s[WIN_N] += 1
        s[WIN_R] += x
        if s[WIN_N] >= t.window:
            for i in range(WINDOWS - 1, 0, -1):
                s[WIN_0 + i] = s[WIN_0 + i - 1]
            s[WIN_0] = s[WIN_R] / s[WIN_N]
            s[WINS] = min(WINDOWS, s[WINS] + 1)
            s[WIN_N] = s[WIN_R] = 0.0
        shares = [s[WIN_0 + i] for i in range(int(s[WINS]))]
        if s[WIN_N] >= t.evidence - t.settle:
            shares.append(s[WIN_R] / s[WIN_N])
        if shares:
            s[FLOOR] = min(t.floor_max, sorted(shares)[(len(shares) - 1) // 2])
            s[TRUSTED] = max(s[TRUSTED], s[RAW])

    def verdict(self, s: MutableSequence[float], now: float, sent_at: float | None) -> Verdict:
        """What a 429 (already ``answered``) for a call sent at ``sent_at`` means."""
        if sent_at is not None and sent_at <= s[CUT_AT]:
            return "ignore"  # in flight when the pace was last cut: already answered for
        t, share, floor = self.t, s[SHARE], s[FLOOR]
        long_run = (
            s[RUN] >= t.outage_calls and now - s[RUN_AT] >= t.outage_s and s[RATE] < t.outage_pace * s[KNOWN]
        )
        if s[W_MAX] and (s[RUN] >= t.evidence or long_run):
            return "back_off"  # 429s in a row, many or for long: an outage, whatever the rate
        if not s[W_MAX]:
            return "cut"  # the first: blind (the rate doubled in the last round trips)
        known = s[WINS] or s[WIN_N] >= t.evidence - t.settle
        if known and floor <= t.margin:
            return "cut"  # every 429 is ours, as far as anyone can tell
        if s[ANSWERS] < t.evidence:
            return "ignore"  # too few answers since the last cut to see what it did
        if s[BLIND]:
            return "cut"  # the blind cut may have kept a rate still too high: cut once more
        noise = t.noise_z * math.sqrt(floor * (1.0 - floor) * t.share_weight / (2.0 - t.share_weight))
        return "cut" if share > floor + t.margin + noise else "ignore"

    def throttled(
        self,
        s: MutableSequence[float],
        now: float,
        sent_at: float | None,
        retry_after: float | None,
        paced: float | None = None,
    ) -> Verdict:
        """A 429 for a call sent at ``sent_at`` (None: unknown, taken as now) at the pace
        ``paced`` (its slot's spacing; None: unknown); what it meant."""
        if retry_after is not None and retry_after > self.t.hold_above_s:
            s[HOLD] = max(s[HOLD], now + retry_after)
        self.count_answer(s, now, sent_at, refused=True, paced=paced)
        verdict = self.verdict(s, now, sent_at)
        if verdict != "ignore":
            sent, ok = self._rates(s, now)
            if s[W_MAX]:
                # The pace times the share accepted: a lull in demand (callers asleep on
                # Retry-After, a stage's tail) lowers the accepted rate, not the limit. But
                # no more than got through: with many calls queued on the pacer or in
                # flight, sends and answers lag the pace, and a probe past the limit has
                # climbed on before its 429s come back.
                pace = min(s[RATE], s[PACED]) if s[PACED] else s[RATE]
                sent, ok = s[RATE], pace * self.accepted_share(s, now)
                if s[THROUGH_S] >= self.t.through_s and s[NEXT] - now >= self.t.queued_s:
                    ok = min(ok, s[THROUGH])
            self._cut(s, now, self.cut_to(s, verdict, s[RATE], sent, ok))
        return verdict

    def accepted_share(self, s: MutableSequence[float], now: float) -> float:
        """The share of calls accepted lately (since the last cut if it was blind, as the
        smoothed rates still hold the doubling): what the pace is scaled by at a cut."""
        if s[BLIND]:
            return s[ACCEPTED] / s[ANSWERS] if s[ACCEPTED] >= 4 else 0.0
        sent, ok = self._rates(s, now)
        return min(1.0, ok / sent) if sent > 0 else 1.0

    def cut_to(
        self, s: MutableSequence[float], verdict: Verdict, rate: float, sent: float, ok: float
    ) -> float:
        """The rate at which 429s began for a ``verdict`` that is not "ignore", from the pacing
        ``rate`` and the ``sent`` and accepted (``ok``) calls/s; it books the cut's kind."""
        t = self.t
        informed = False
        if s[W_MAX] and not s[BLIND] and s[ACCEPTED] >= t.evidence / 2:
            # Cut after calls got through: the rate before it is what an outage returns to
            # (the cuts of an outage's first 429s, before the run of them shows it, do not).
            s[KNOWN] = s[W_MAX]
        if verdict == "back_off":
            s[GOOD] = s[GOOD] or s[KNOWN]  # 0: no rate known good, nothing to restore
            w = rate / 2.0 / t.beta
        else:
            if s[TRUSTED]:
                ok /= 1.0 - s[FLOOR]  # what the limit let through, the server's own refusals aside
            if not s[W_MAX]:  # blind: the accepted rate lags the doubling, and a share
                # refused may be the server's own; the next cut, ``evidence`` answers on,
                # takes the share accepted since this one.
                w = min(rate, sent) if sent > 0 else rate
            else:
                # What got through is the limit: the pace then holds below it, so that a
                # share still refused there is the server's own (the floor), not ours.
                informed = ok > 0
                w = min(rate, ok) if informed else rate / 2.0  # none got through: halve
        # Blind: the cut did not learn the limit from an accepted rate (the first one, a
        # back-off, or none got through): the pace held after it teaches no floor, and the
        # next cut comes after ``evidence`` answers, floor or not.
        s[BLIND] = 0.0 if informed else 1.0
        # A pace held below the accepted rate uncorrected is below the limit: the share
        # refused there is the server's own, so the floor learned there can be trusted.
        s[RAW] = 1.0 if informed and not s[TRUSTED] else 0.0
        s[WIN_N] = s[WIN_R] = 0.0  # answers at a pace that was too high: not the floor
        return max(self.min_rate, w)

    def _cut(self, s: MutableSequence[float], now: float, w: float) -> None:
        self.mark_cut(s, now)
        s[W_MAX] = max(self.min_rate, w)
        s[RATE] = max(self.min_rate, self.t.beta * s[W_MAX])
        s[GROWN_AT] = now
        # No burst credit survives a 429, and the server's bucket is empty: the next call
        # waits one interval at the new pace. Slots taken before now are taken again.
        s[NEXT] = now + 1.0 / s[RATE]

    def mark_cut(self, s: MutableSequence[float], cut_at: float) -> None:
        """A cut at ``cut_at`` (here, or another fleet instance's): count answers anew."""
        s[CUT_AT] = cut_at
        s[ANSWERS] = s[ACCEPTED] = 0.0

    def recovered(self, s: MutableSequence[float], sent_at: float | None) -> float:
        """After a success: the rate to restore if it ends a back-off (else 0). The share
        is reset, since the outage's refusals no longer describe the server."""
        good = s[GOOD]
        if not good or (sent_at is not None and sent_at <= s[CUT_AT]):
            return 0.0
        s[GOOD] = 0.0
        s[SHARE] = 0.0
        return good

    def count_answer(
        self,
        s: MutableSequence[float],
        now: float,
        sent_at: float | None,
        refused: bool,
        paced: float | None = None,
    ) -> None:
        """One answer, in the accepted rate and in the refused share and floor; ``paced``,
        the pace its call was sent at, in the pace of the calls answered lately."""
        self._roll(s, now)
        if not refused:
            s[SLOT_OK] += 1
        if paced:
            s[PACED] = paced if not s[PACED] else s[PACED] + self.t.share_weight * (paced - s[PACED])
        if refused and not s[RUN]:
            s[RUN_AT] = now
        self.answered(s, sent_at, refused)

    def succeeded(
        self, s: MutableSequence[float], now: float, sent_at: float | None = None, paced: float | None = None
    ) -> None:
        self.count_answer(s, now, sent_at, refused=False, paced=paced)
        good = self.recovered(s, sent_at)
        if good:
            self._cut(s, now, good)
            s[NEXT] = min(s[NEXT], now)
