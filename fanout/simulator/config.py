"""What the simulator serves and how badly it behaves, as one frozen, validated value.

Why its own module: the universe, the server and the CLI all read the same config, and a
child process (``run_in_subprocess``) receives it as JSON, so it must stand alone.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any, Literal

SIZES = ("tiny", "demo", "full")
RetryAfterFormat = Literal["seconds", "http-date"]
CursorLoop = Literal["repeat", "cycle"]


@dataclass(frozen=True, kw_only=True)
class SimConfig:
    """Everything that decides what the simulator serves and how badly it behaves.

    Data knobs (``seed`` .. ``awkward_ids``) define the :class:`Universe`; the rest only
    shape the HTTP behaviour. Fault rates are shares of authenticated, non-health requests:
    one draw decides between injected 429, 5xx and garbage (so their sum must be <= 1);
    a separate draw decides whether to hang before answering.

    Hostile modes (all off by default; deterministic given ``seed`` and ``fault_seed``) make
    the server misbehave in ways the contract does not forbid, or does, so a crawler's
    defences can be tested. Each says what the truth is under it; in short, a test computes
    the truth with :meth:`Universe.expected_rows` (rows a correct crawler keeps),
    :meth:`Universe.expected_failures` (units a correct crawler must fail, and why) and,
    under ``changing_listings``, :meth:`Universe.expected_rows_for` (rows of the data
    groups the crawler actually recorded).
    """

    seed: int = 7
    warriors: int = 5
    troops_per_warrior: int = 4
    groups_per_troop: int = 5
    records_per_group: int = 20
    vary_records: bool = False
    """Each group gets a deterministic 0..2*records_per_group records instead of exactly n."""
    empty_group_every: int = 0
    heavy_first_warrior: int = 0
    """When k > 0, the first warrior lists k times ``troops_per_warrior`` troops (a skewed
    tree: 50 gives one warrior 50x the troops of the others). Hermes' universe only."""
    heavy_tailed_records: bool = False
    """Each group's record count is drawn (deterministically) from a Pareto distribution of
    shape 1.5 and mean about ``records_per_group``, capped at 100x it: most groups are small,
    a few take many pages. Hermes' universe only."""
    """When k > 0, every k-th data group (in crawl order, 1-based) has no records."""
    max_page_size: int = 1000
    default_page_size: int = 100
    awkward_ids: bool = False
    token: str = "sim-token"
    rate_limit: float | None = None
    """Requests per second per bearer token (token bucket); None means unlimited."""
    rate_burst: float | None = None
    """Bucket size; None means max(1, rate_limit / 10)."""
    retry_after_format: RetryAfterFormat = "seconds"
    error_rate_5xx: float = 0.0
    error_rate_429: float = 0.0
    garbage_rate: float = 0.0
    hang_rate: float = 0.0
    hang_s: float = 5.0
    latency_s: float = 0.0
    latency_jitter_s: float = 0.0
    """Each request waits ``latency_s`` plus a uniform draw from [0, latency_jitter_s)."""
    not_found_ids: frozenset[str] = frozenset()
    fault_seed: int | None = None
    refuse_share: float = 0.0
    """Share of the calls within the rate limit answered 429 with ``Retry-After: 1``
    whatever the rate (a per-endpoint limit, other tenants, a gateway shedding load):
    call n (counted from 1) is refused when ``floor(n * share)`` steps up, so every stretch
    of calls holds the share, exactly and reproducibly (0.2: every 5th call)."""
    outage_at_s: float | None = None
    """Seconds after the server started at which it answers 429 with ``Retry-After: 1`` to
    every API call (health still answers), for ``outage_s`` seconds; None: never."""
    outage_s: float = 60.0

    # ---- hostile modes ------------------------------------------------------------------
    duplicate_ids: bool = False
    """Every troop listing and data-group listing names one item twice, on two pages: the
    first page ends early, at ``m = min(page_size, len(list))`` items, and the next page
    starts with item ``m`` again (so a one-page list becomes two pages). The item's records
    exist once: ``expected_rows()`` holds each once; ``expected_calls()`` counts the extra
    pages."""
    changing_listings: bool = False
    """Each troop's data-group listing changes between successive fetches of its first page
    (counted per troop by the server, from 1): odd fetches end with one extra data group
    (``Universe.extra_data_group(w, t)``) that even fetches lack. Later pages follow the
    version their first page chose. The extra group's records are served whether or not it
    was listed. ``expected_rows()``/``expected_calls()`` describe the listings WITHOUT the
    extra group; for the truth as of the listing a crawler kept, use
    ``Universe.expected_rows_for(the (warrior, troop, data_group) ids it recorded)``."""
    cursor_loop: CursorLoop | None = None
    """The lists below the ids in ``cursor_loop_ids`` never end: their first page's
    next_page_token A leads to a page (the items after the first page, often none) whose
    next_page_token is A again ("repeat") or B, whose page leads back to A ("cycle"). Every
    token is validly signed. A correct crawler fails that unit: ``expected_failures()``
    names it, ``expected_rows()`` leaves out everything below it, ``expected_calls()``
    counts only that list's first page."""
    cursor_loop_ids: frozenset[str] = frozenset()
    """Parents whose child list loops (a warrior's troops, a troop's data groups, a data
    group's records). Empty means the records of the first data group in crawl order."""
    drip_bytes_per_s: float | None = None
    """Write each chosen answer (status line, headers, body) slowly: pieces of
    ``max(1, rate // 100)`` bytes, each followed by a pause, averaging this many bytes/s,
    so a client's per-read socket timeout never fires while the whole answer takes long.
    Health answers are never dripped. The truth is unchanged."""
    drip_share: float = 1.0
    """Share of API answers that drip (drawn reproducibly from ``fault_seed``)."""
    dot_ids: bool = False
    """Warriors 0 and 1 are named exactly "." and "..", and so are troops 0 and 1 of every
    warrior (valid per the contract). They are served when the segment arrives encoded as
    ``%2E`` / ``%2E%2E``; a raw path with a literal "." or ".." segment, or one normalised
    away (``/v1/warriors/../troops`` -> ``/v1/troops``), answers 404 like any unknown
    route. ``SimStats.recent_requests`` shows the raw request lines received. The truth
    is the ordinary one with these ids."""
    long_ids: bool = False
    """Every warrior, troop and data group id is 128 characters (the contract's longest) in
    a non-Latin script, so each percent-encodes to 380 bytes or more and a key naming all
    three would pass S3's 1,024-byte limit. (``dot_ids`` wins where both apply.) The truth
    is the ordinary one with these ids."""
    bad_records: bool = False
    """Four data groups (the first four non-empty reachable ones in crawl order) each get
    one altered record, its first: "huge_int_value" (``value`` is the JSON integer literal
    10**400, too large for a float: INVALID), "lowercase_ts" (``ts`` in lower-case RFC
    3339 form ``2026-11-27t08:00:00z``: VALID, must be kept), "missing_metric" (no
    ``metric``: INVALID), "nan_value" (``value`` is the non-JSON literal ``NaN``: INVALID).
    ``Universe.bad_record_groups()`` maps each group to its kind; a correct crawler rejects
    the three invalid groups whole: ``expected_failures()`` names them and
    ``expected_rows()`` leaves them out, but keeps the lower-case record (its ``ts`` as
    served)."""
    request_log_size: int = 64
    """How many raw request lines ``SimStats.recent_requests`` keeps (0: none)."""
    level_sizes: tuple[int, ...] = ()
    """A described API's tree (see :mod:`fanout.simulator.described`): how many items each
    level lists under each unit above it, top first, the last being the rows of one leaf
    list. Empty: from the Hermes counts for a 4-level API, else from ``LEVEL_SIZES``
    (``from_size(name, levels=n)`` fills it in). Hermes itself reads only its own counts."""

    def __post_init__(self) -> None:
        # Accept any iterable of ids (a CLI list, a set) but store a frozenset.
        if not isinstance(self.not_found_ids, frozenset):
            object.__setattr__(self, "not_found_ids", frozenset(self.not_found_ids))
        if not isinstance(self.cursor_loop_ids, frozenset):
            object.__setattr__(self, "cursor_loop_ids", frozenset(self.cursor_loop_ids))
        if self.cursor_loop not in (None, "repeat", "cycle"):
            raise ValueError("cursor_loop must be None, 'repeat' or 'cycle'")
        if self.drip_bytes_per_s is not None and self.drip_bytes_per_s <= 0:
            raise ValueError("drip_bytes_per_s must be > 0 (or None for no drip)")
        if not 0.0 <= self.drip_share <= 1.0:
            raise ValueError(f"drip_share must be in [0, 1], got {self.drip_share}")
        if self.request_log_size < 0:
            raise ValueError("request_log_size must be >= 0")
        for name in ("warriors", "troops_per_warrior", "groups_per_troop", "records_per_group"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.empty_group_every < 0:
            raise ValueError("empty_group_every must be >= 0")
        if self.heavy_first_warrior < 0:
            raise ValueError("heavy_first_warrior must be >= 0")
        if not 1 <= self.default_page_size <= self.max_page_size:
            raise ValueError(
                f"default_page_size must be in 1..max_page_size ({self.max_page_size}), "
                f"got {self.default_page_size}"
            )
        for name in ("error_rate_5xx", "error_rate_429", "garbage_rate", "hang_rate", "refuse_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.error_rate_429 + self.error_rate_5xx + self.garbage_rate > 1.0 + 1e-9:
            raise ValueError("error_rate_429 + error_rate_5xx + garbage_rate must be <= 1")
        if self.rate_limit is not None and not 0 < self.rate_limit < math.inf:
            raise ValueError("rate_limit must be > 0 (or None for unlimited)")
        if self.rate_burst is not None and self.rate_burst < 1:
            raise ValueError("rate_burst must be >= 1")
        if self.retry_after_format not in ("seconds", "http-date"):
            raise ValueError("retry_after_format must be 'seconds' or 'http-date'")
        if self.hang_s < 0 or self.latency_s < 0 or self.latency_jitter_s < 0:
            raise ValueError("hang_s, latency_s and latency_jitter_s must be >= 0")
        if self.outage_at_s is not None and not 0 <= self.outage_at_s < math.inf:
            raise ValueError("outage_at_s must be >= 0 (or None for no outage)")
        if not 0 < self.outage_s < math.inf:
            raise ValueError("outage_s must be > 0")
        if not self.token:
            raise ValueError("token must not be empty")
        if not isinstance(self.level_sizes, tuple):
            object.__setattr__(self, "level_sizes", tuple(self.level_sizes))
        if any(type(n) is not int or n < 0 for n in self.level_sizes):
            raise ValueError(f"level_sizes must be whole numbers >= 0, got {list(self.level_sizes)}")

    @property
    def burst(self) -> float:
        """The effective bucket size (only meaningful with a rate limit)."""
        if self.rate_burst is not None:
            return self.rate_burst
        return max(1.0, (self.rate_limit or 0.0) / 10)

    def sizes_for(self, levels: int) -> tuple[int, ...]:
        """Items per list at each level of a ``levels``-level tree, top first (see ``level_sizes``)."""
        if self.level_sizes:
            if len(self.level_sizes) != levels:
                raise ValueError(f"level_sizes names {len(self.level_sizes)} levels; this API has {levels}")
            return self.level_sizes
        if levels == 4:
            return (self.warriors, self.troops_per_warrior, self.groups_per_troop, self.records_per_group)
        return LEVEL_SIZES["default"][levels]

    @classmethod
    def from_size(cls, name: str, levels: int = 4, **overrides: Any) -> SimConfig:
        """A named preset, optionally with fields replaced.

        tiny: unit tests (49 calls, some groups empty or multi-record-varied);
        demo: a local demo run (2,511 calls); full: the talk's scale (51,051 calls).
        ``levels`` other than Hermes' 4 also sets ``level_sizes`` from ``LEVEL_SIZES``
        (a deeper tree is narrower: a 5-level demo makes a few hundred calls).
        """
        if levels != 4 and name in LEVEL_SIZES and "level_sizes" not in overrides:
            if levels not in LEVEL_SIZES[name]:
                raise ValueError(f"no {name} preset for {levels} levels")
            overrides = {**overrides, "level_sizes": LEVEL_SIZES[name][levels]}
        presets: dict[str, dict[str, Any]] = {
            "tiny": dict(
                warriors=3,
                troops_per_warrior=3,
                groups_per_troop=4,
                records_per_group=6,
                vary_records=True,
                empty_group_every=5,
            ),
            "demo": dict(warriors=10, troops_per_warrior=10, groups_per_troop=24, records_per_group=24),
            "full": dict(warriors=50, troops_per_warrior=20, groups_per_troop=50, records_per_group=24),
        }
        if name not in presets:
            raise ValueError(f"unknown size {name!r}; choose one of {', '.join(SIZES)}")
        return cls(**{**presets[name], **overrides})

    def to_json(self) -> str:
        """Serialise for a child process (see :func:`run_in_subprocess`)."""
        data = dataclasses.asdict(self)
        data["not_found_ids"] = sorted(self.not_found_ids)
        data["cursor_loop_ids"] = sorted(self.cursor_loop_ids)
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> SimConfig:
        data = json.loads(text)
        data["not_found_ids"] = frozenset(data.get("not_found_ids", ()))
        data["cursor_loop_ids"] = frozenset(data.get("cursor_loop_ids", ()))
        data["level_sizes"] = tuple(data.get("level_sizes", ()))
        return cls(**data)


LEVEL_SIZES: dict[str, dict[int, tuple[int, ...]]] = {
    "tiny": {2: (6, 6), 3: (3, 4, 6), 5: (2, 2, 2, 2, 6), 6: (2, 2, 2, 2, 2, 6)},
    "demo": {2: (120, 24), 3: (10, 24, 24), 5: (3, 3, 3, 4, 12), 6: (2, 3, 3, 3, 3, 12)},
    "full": {2: (1000, 24), 3: (50, 100, 24), 5: (10, 10, 10, 10, 24), 6: (6, 6, 6, 6, 6, 24)},
    "default": {2: (10, 20), 3: (5, 4, 20), 5: (3, 3, 3, 3, 10), 6: (2, 2, 2, 2, 2, 10)},
}
"""Described APIs' trees per preset and number of levels (4 levels: Hermes' own counts).
Each entry is items per list, top first, the last the rows of one leaf list; the tiny one
also varies its leaf lists (``vary_records``, ``empty_group_every``) as Hermes' tiny does."""
