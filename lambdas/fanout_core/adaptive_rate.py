"""Adaptive pacing: converge on the server's real rate limit from its 429s, and hold it.

The rate limit R in the settings is an upper bound the pacer never exceeds, not a promise
that Hermes allows it: a limit that is not told (``local`` says 100,000) or set too high
is found from the answers. The controller is CUBIC-like AIMD over one pacing rate:

- **discover**: while no 429 has been seen, the rate doubles every ``doubling_s`` the
  pacer is the bottleneck (callers wait on it), never beyond 2x the rate actually sent;
- **cut**: a 429 for a call sent after the last cut remembers the rate at which 429s
  began (``w_max``: the pacing rate; the rate accepted if far fewer than were sent got
  through; the rate sent while still discovering) and drops to ``beta * w_max``; 429s
  for calls already in flight at a cut change nothing;
- **recover and hold**: the rate climbs back along ``w_max * (1 + c * (t - K)^3)``, steep
  at first, flat around ``w_max`` at ``K = recover_s`` after the cut (it holds there for
  seconds), then convex: a probe above ``w_max`` that finds a higher limit accelerates.
  A 429 at the bound itself (R told right, a clump of calls) climbs back to R and stays.

A Retry-After above ``hold_above_s`` holds every caller until it passes (a quota window,
an overloaded server); one of at most a second (delay-seconds are whole: "1" is the
rounding of any short wait) delays only the rejected call, which the client already
does, so a probe does not cost a second of the whole budget.

The state is a flat vector of doubles so that the same code runs over a Python list (one
process, a thread lock) and over shared memory (``fanout.shared_pacing``: every process
of a local run adapts as one budget). Callers hold their lock around every function here.
"""

from __future__ import annotations

from collections.abc import MutableSequence
from dataclasses import dataclass

# The state vector's slots.
NEXT, RATE, W_MAX, CUT_AT, GROWN_AT, SLOT_AT, SLOT_SENT, SLOT_OK, SENT, OK, MEASURED, HOLD = range(12)
STATE_SIZE = 12


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
    hold_above_s: float = 1.0
    """A Retry-After longer than this holds every caller."""
    min_rate: float = 0.5
    """Calls/s the rate never falls below (or the bound, if that is lower)."""


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
        s[SLOT_AT], s[SLOT_SENT], s[SLOT_OK] = now, 0.0, 0.0

    def _rates(self, s: MutableSequence[float], now: float) -> tuple[float, float]:
        """(sent, accepted) calls/s lately; before a whole slot, from the part so far."""
        if s[MEASURED]:
            return s[SENT], s[OK]
        span = max(now - s[SLOT_AT], 1e-3)
        return s[SLOT_SENT] / span, s[SLOT_OK] / span

    # -- the three events ------------------------------------------------------------------
    def reserve(self, s: MutableSequence[float], now: float, *, again: bool = False) -> float:
        """Take the next slot for one call (``again``: the same call, after a cut); the
        seconds the caller must wait for it."""
        self._roll(s, now)
        if not again:
            s[SLOT_SENT] += 1
        interval = 1.0 / s[RATE]
        slot = max(s[NEXT], now - (self.burst - 1.0) * interval, s[HOLD])
        wait = slot - now
        s[NEXT] = slot + interval
        if wait > 0:
            self._grow(s, now)
        return max(0.0, wait)

    def recheck(self, s: MutableSequence[float], now: float, reserved_at: float) -> float:
        """After waiting for a slot reserved at ``reserved_at``: 0 to go now, or the seconds of
        a new slot if the pace was cut meanwhile (slots taken at the old pace are void)."""
        if s[CUT_AT] <= reserved_at and now >= s[HOLD]:
            return 0.0
        return self.reserve(s, now, again=True)

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

    def throttled(
        self, s: MutableSequence[float], now: float, sent_at: float | None, retry_after: float | None
    ) -> None:
        """A 429 for a call sent at ``sent_at`` (None: unknown, taken as now)."""
        if retry_after is not None and retry_after > self.t.hold_above_s:
            s[HOLD] = max(s[HOLD], now + retry_after)
        if sent_at is not None and sent_at <= s[CUT_AT]:
            return  # in flight when the pace was last cut: already answered for
        self._roll(s, now)
        sent, ok = self._rates(s, now)
        rate = s[RATE]
        if 0 < ok < self.t.beta * sent:
            w = min(rate, ok)  # many were refused: what got through is the limit
        elif not s[W_MAX] and rate < self.bound and sent > 0:
            w = min(rate, sent)  # still discovering: the rate was never sent in full
        else:
            w = rate
        s[W_MAX] = max(self.min_rate, w)
        s[RATE] = max(self.min_rate, self.t.beta * s[W_MAX])
        s[CUT_AT] = s[GROWN_AT] = now
        # No burst credit survives a 429, and the server's bucket is empty: the next call
        # waits one interval at the new pace. Slots taken before now are taken again.
        s[NEXT] = now + 1.0 / s[RATE]

    def succeeded(self, s: MutableSequence[float], now: float) -> None:
        self._roll(s, now)
        s[SLOT_OK] += 1
