"""The rate limit pacing found, kept in the bucket so the next run starts from it.

Why: a limit nobody told fanout costs 429s to find, and a run that forgets it pays again.
One record per API base URL, ``limits/<hash of the base URL>.json``: the rate at which
429s began (``limit``), a rate below it that the server let through (``held``) and the
UTC date; numbers and a date, never the token (the key hashes the base URL alone). A run
starts as right after a cut at ``held`` (pacing just below it, probing past it slowly)
instead of doubling from ``hermes_rate_start`` or starting at R. A configured R stays
the upper bound; ``remember_limit: false`` turns reading and writing off. Both runtimes
call this module through the core's ``Storage``:

- **local** (``fanout.start_run``): one shared budget; read before the run, written once
  after it when a 429 of the run cut the rate, ``held`` the calls/s that got through
  over the whole run.
- **AWS** (``fanout_core.assembly.instance_pacer`` at each Lambda cold start): read once
  per cold start (``load``: a missing, corrupt, oversized or unreadable record is ignored
  with one log line). ``adaptive``: the instance starts at its share of ``held`` (its
  share of R scaled by ``held / R``); ``shared``: the cold start seeds the budget item
  with a cut at ``held`` unless the item saw a cut in the last ``SEED_AFTER_S``
  (``fanout_core.fleet_budget``), so the fleet's one rate starts there. Written by
  ``LimitKeeper``: at most once per instance (cold start), by an instance whose pacing saw
  a cut since its cold start and then a whole window without another one (the pace
  climbed back and held ``recover_s + hold_s`` with no 429 of its own and no new cut);
  the record is the cut's fleet rate and the rate held after it (``hold`` of it), a
  function of the cut alone, so the instances that write after the same cut write the
  same bytes, and the last write of a replace wins harmlessly. At most one PUT per
  instance lifetime (tens per run) against tens of thousands of API calls and their
  budget writes: negligible in a request count.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from fanout_core.storage import NoSuchKey, Storage

if TYPE_CHECKING:
    from fanout_core.api_client import PacerLike
    from fanout_core.settings import EnvironmentSettings

log = logging.getLogger("fanout")

PREFIX = "limits/"
MAX_BYTES = 4096
"""A limit record is a few dozen bytes; a bigger object there is not one."""


def key_for(base_url: str) -> str:
    """``limits/<sha256 of the base URL, without a trailing slash>.json``."""
    digest = hashlib.sha256(base_url.rstrip("/").encode("utf-8")).hexdigest()[:32]
    return f"{PREFIX}{digest}.json"


LEARNING_PACINGS = ("adaptive", "shared")
"""The Lambda pacings that find a limit (``static`` keeps to its share and finds none)."""


def kept_on_aws(settings: EnvironmentSettings) -> bool:
    """Whether the Lambda fleet of ``settings`` reads and writes the record (and the stack
    grants its stage roles ``limits/*``): the setting is on and the pacing finds limits."""
    return settings.remember_limit and settings.pacing in LEARNING_PACINGS


@dataclass(frozen=True)
class LearnedLimit:
    limit: float
    """Calls/s at which the server's 429s began."""
    held: float
    """Calls/s the server let through below it (see the module's runtimes)."""
    learned_on: str
    """UTC date, YYYY-MM-DD."""

    def line(self) -> str:
        return f"limit learned {self.limit:.0f}/s on {self.learned_on}"

    def to_bytes(self) -> bytes:
        doc = {"limit": self.limit, "held": self.held, "learned_on": self.learned_on}
        return json.dumps(doc, sort_keys=True).encode()


def _rate(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and 0 < value <= 1e6 else None


def read(storage: Storage, base_url: str) -> LearnedLimit | None:
    """The limit kept for ``base_url``, or None (none kept, or not a limit record)."""
    return _parse(storage, key_for(base_url))[0]


def _parse(storage: Storage, key: str) -> tuple[LearnedLimit | None, str]:
    """The record at ``key``, or None and why not."""
    try:
        body = storage.get(key)
    except NoSuchKey:
        return None, "none kept"
    if len(body) > MAX_BYTES:
        return None, f"oversized ({len(body)} bytes)"
    try:
        doc = json.loads(body)
    except ValueError:
        return None, "not JSON"
    if not isinstance(doc, dict):
        return None, "not a limit record"
    limit, held, day = _rate(doc.get("limit")), _rate(doc.get("held")), doc.get("learned_on")
    if limit is None or held is None or not isinstance(day, str) or len(day) != 10:
        return None, "not a limit record"
    return LearnedLimit(limit, min(held, limit), day), "kept"


def load(storage: Storage, base_url: str) -> LearnedLimit | None:
    """``read`` for a Lambda cold start: whatever is wrong with the record (missing,
    corrupt, oversized, unreadable: denied, throttled) it is ignored with one log line,
    and the instance starts as if nothing was learned; a limit never fails a task."""
    key = key_for(base_url)
    try:
        found, why = _parse(storage, key)
    except Exception as exc:  # the bucket's own failure: start from R, not from nothing
        found, why = None, f"unreadable: {type(exc).__name__}"
    if found is not None:
        log.info(
            "starting from the learned limit",
            extra={"outcome": "limit_loaded", "key": key, "limit": found.limit, "held": found.held},
        )
    else:
        level = logging.INFO if why == "none kept" else logging.WARNING
        log.log(level, "no learned limit used", extra={"outcome": "limit_ignored", "key": key, "reason": why})
    return found


def kept(storage: Storage, most: int = 20) -> list[LearnedLimit]:
    """Every limit the bucket keeps (at most ``most``), for a page that knows no URL (report)."""
    out: list[LearnedLimit] = []
    for key in sorted(storage.list(PREFIX))[:most]:
        found = _parse(storage, key)[0]
        if found is not None:
            out.append(found)
    return out


def write(
    storage: Storage, base_url: str, limit: float, held: float, now: datetime | None = None
) -> LearnedLimit:
    """Keep what this run learned (the newest run's finding replaces the older one)."""
    day = (now or datetime.now(UTC)).strftime("%Y-%m-%d")
    learned = LearnedLimit(round(limit, 3), round(min(held, limit), 3), day)
    storage.put(key_for(base_url), learned.to_bytes())
    return learned


def start_rate(learned: LearnedLimit | None, bound: float) -> float | None:
    """The rate a run starts from (as a limit: pacing just below it, then probing past it):
    the pace the earlier run held, never above R; None: nothing learned."""
    if learned is None:
        return None
    return min(learned.held, bound)


# -- the Lambda side: who writes, and when -------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """What a pacer found, in the fleet's calls/s: the rate at which 429s began, the rate
    it holds after that cut, and when the cut was (on the pacer's clock)."""

    limit: float
    held: float
    cut_at: float


class LimitKeeper:
    """Writes one instance's finding once: the first time ``quiet_s`` passed after a cut
    without another cut or a 429 of this instance (the pace climbed back below the limit
    and held there 429-free). A write that fails is logged once and not tried again (the
    next cold start may)."""

    def __init__(
        self,
        storage: Storage,
        base_url: str,
        *,
        quiet_s: float,
        clock: Callable[[], float],
        today: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.storage, self.base_url, self.quiet_s = storage, base_url, quiet_s
        self._clock, self._today = clock, today
        self._lock = threading.Lock()
        self.written: LearnedLimit | None = None
        self.done = False
        self.refused_at = -math.inf
        """When this instance last met a 429 (its pacer's clock)."""

    def refused(self) -> None:
        self.refused_at = self._clock()

    def offer(self, finding: Finding | None) -> None:
        """Write ``finding`` if ``quiet_s`` passed since its cut and since this instance's last 429."""
        if self.done or finding is None:
            return
        if self._clock() - max(finding.cut_at, self.refused_at) < self.quiet_s:
            return
        with self._lock:
            if self.done:
                return
            self.done = True
        try:
            self.written = write(self.storage, self.base_url, finding.limit, finding.held, self._today())
        except Exception as exc:
            log.warning(
                "learned limit not kept",
                extra={"outcome": "limit_not_kept", "reason": f"{type(exc).__name__}: {exc}"[:200]},
            )
            return
        log.info(
            "learned limit kept",
            extra={"outcome": "limit_kept", "limit": self.written.limit, "held": self.written.held},
        )


class RememberingPacer:
    """A pacer that, after each accepted call, offers what it found to its keeper (one
    comparison once the record is written or while nothing is found)."""

    def __init__(self, inner: PacerLike, found: Callable[[], Finding | None], keeper: LimitKeeper) -> None:
        self.inner, self.found, self.keeper = inner, found, keeper

    def acquire(self, max_wait: float = math.inf) -> float:
        return self.inner.acquire(max_wait)

    def on_throttled(self, retry_after: float | None) -> None:
        self.inner.on_throttled(retry_after)
        self.keeper.refused()

    def on_success(self) -> None:
        self.inner.on_success()
        if not self.keeper.done:
            self.keeper.offer(self.found())
