"""The rate limit adaptive pacing found, kept in the bucket so the next run starts from it.

Why: a limit nobody told fanout costs 429s to find, and a run that forgets it pays again.
When a run's pacing cut its rate on a 429, the rate at which the 429s began (``limit``)
and the calls/s the server let through over the run (``held``, a rate below the limit) are
written to ``limits/<hash of the API base URL>.json`` with the UTC date; the next run
against the same base URL starts as right after a cut at ``held`` (pacing just below it,
probing past it slowly) instead of doubling from ``hermes_rate_start``. A configured R
stays the upper bound; ``remember_limit: false`` turns it off. The key is a hash of the
base URL alone and the object holds numbers and a date: never the token.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime

from fanout_core.storage import NoSuchKey, Storage

PREFIX = "limits/"
MAX_BYTES = 4096
"""A limit record is a few dozen bytes; a bigger object there is not one."""


def key_for(base_url: str) -> str:
    """``limits/<sha256 of the base URL, without a trailing slash>.json``."""
    digest = hashlib.sha256(base_url.rstrip("/").encode("utf-8")).hexdigest()[:32]
    return f"{PREFIX}{digest}.json"


@dataclass(frozen=True)
class LearnedLimit:
    limit: float
    """Calls/s at which the server's 429s began."""
    held: float
    """Calls/s the server let through, averaged over the run that learned it."""
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
    return _parse(storage, key_for(base_url))


def _parse(storage: Storage, key: str) -> LearnedLimit | None:
    try:
        body = storage.get(key)
    except NoSuchKey:
        return None
    if len(body) > MAX_BYTES:
        return None
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    limit, held, day = _rate(doc.get("limit")), _rate(doc.get("held")), doc.get("learned_on")
    if limit is None or held is None or not isinstance(day, str) or len(day) != 10:
        return None
    return LearnedLimit(limit, min(held, limit), day)


def kept(storage: Storage, most: int = 20) -> list[LearnedLimit]:
    """Every limit the bucket keeps (at most ``most``), for a page that knows no URL (report)."""
    out: list[LearnedLimit] = []
    for key in sorted(storage.list(PREFIX))[:most]:
        found = _parse(storage, key)
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
