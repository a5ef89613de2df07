"""The bundled Hermes simulator: deterministic data plus an HTTP server that keeps the contract.

Why it exists: the pipeline must be demonstrable and testable without the real Hermes. The
simulator serves exactly the routes, pagination and error shapes of
``shared/hermes-api.yaml`` and can misbehave on purpose (rate limits, 5xx, garbage bodies,
hangs, 404 ids, awkward identifiers) so a crawler's retry and encoding logic is exercised.

Two halves:

* :class:`Universe` is the truth, computed without HTTP: every warrior, troop, data group
  and record is a pure function of ``(seed, indices)``, so tests can compare a crawl's
  output with :meth:`Universe.expected_rows` and its call count with
  :meth:`Universe.expected_calls`. Each group's records are generated on demand from a
  stable hash (never Python's salted ``hash()``), so the 1.2M-record "full" preset costs
  nothing until asked.
* :class:`HermesSimulator` serves a universe over HTTP/1.1 keep-alive, one ``send`` per
  response (a split header/body write stalls every request ~40 ms on delayed ACK).

What a crawler author can rely on:

* Ids listed in ``SimConfig.not_found_ids`` still appear in their parent's list (so a crawl
  meets them), but any path naming them answers 404; :meth:`Universe.expected_calls` counts
  that 404 as one call and :meth:`Universe.expected_rows` leaves their records out.
* Path segments are split on "/" first, then percent-decoded: encode each id with
  ``quote(id, safe="")``. Awkward ids hold spaces, ``+ = ' % ~ ( ) , : @`` and other
  scripts, and literal ``%20`` / ``%2F`` / ``%25`` text, so double or missing encoding
  shows up as 404 or wrong rows.
* Page tokens are opaque, about 65 characters, start with ``hp1+`` and contain base64's
  ``+ / =``: send them as a query parameter (``params=``), never pasted into the URL.
  They are signed and bound to their list: tampered or foreign tokens answer 400. The same
  seed gives the same tokens, so a saved token still works after a restart.
* Faults (after auth, never on /v1/health) in this order: rate limit 429 (Retry-After =
  ceil of the wait, or an HTTP-date), injected 429 (Retry-After 0 or 1), 500/502/503/504,
  a 200 whose body is not JSON, a hang of ``hang_s`` before a normal answer.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import calendar
import contextlib
import dataclasses
import hashlib
import hmac
import json
import math
import os
import random
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, unquote

__all__ = [
    "SIZES",
    "HermesSimulator",
    "SimConfig",
    "SimStats",
    "Universe",
    "add_serve_arguments",
    "config_from_args",
    "main",
    "run_in_subprocess",
    "serve_from_args",
]

SIZES = ("tiny", "demo", "full")
RetryAfterFormat = Literal["seconds", "http-date"]


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SimConfig:
    """Everything that decides what the simulator serves and how badly it behaves.

    Data knobs (``seed`` .. ``awkward_ids``) define the :class:`Universe`; the rest only
    shape the HTTP behaviour. Fault rates are shares of authenticated, non-health requests:
    one draw decides between injected 429, 5xx and garbage (so their sum must be <= 1);
    a separate draw decides whether to hang before answering.
    """

    seed: int = 7
    warriors: int = 5
    troops_per_warrior: int = 4
    groups_per_troop: int = 5
    records_per_group: int = 20
    vary_records: bool = False
    """Each group gets a deterministic 0..2*records_per_group records instead of exactly n."""
    empty_group_every: int = 0
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
    not_found_ids: frozenset[str] = frozenset()
    fault_seed: int | None = None

    def __post_init__(self) -> None:
        # Accept any iterable of ids (a CLI list, a set) but store a frozenset.
        if not isinstance(self.not_found_ids, frozenset):
            object.__setattr__(self, "not_found_ids", frozenset(self.not_found_ids))
        for name in ("warriors", "troops_per_warrior", "groups_per_troop", "records_per_group"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.empty_group_every < 0:
            raise ValueError("empty_group_every must be >= 0")
        if not 1 <= self.default_page_size <= self.max_page_size:
            raise ValueError(
                f"default_page_size must be in 1..max_page_size ({self.max_page_size}), "
                f"got {self.default_page_size}"
            )
        for name in ("error_rate_5xx", "error_rate_429", "garbage_rate", "hang_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.error_rate_429 + self.error_rate_5xx + self.garbage_rate > 1.0 + 1e-9:
            raise ValueError("error_rate_429 + error_rate_5xx + garbage_rate must be <= 1")
        if self.rate_limit is not None and self.rate_limit <= 0:
            raise ValueError("rate_limit must be > 0 (or None for unlimited)")
        if self.rate_burst is not None and self.rate_burst < 1:
            raise ValueError("rate_burst must be >= 1")
        if self.retry_after_format not in ("seconds", "http-date"):
            raise ValueError("retry_after_format must be 'seconds' or 'http-date'")
        if self.hang_s < 0 or self.latency_s < 0:
            raise ValueError("hang_s and latency_s must be >= 0")
        if not self.token:
            raise ValueError("token must not be empty")

    @property
    def burst(self) -> float:
        """The effective bucket size (only meaningful with a rate limit)."""
        if self.rate_burst is not None:
            return self.rate_burst
        return max(1.0, (self.rate_limit or 0.0) / 10)

    @classmethod
    def from_size(cls, name: str, **overrides: Any) -> SimConfig:
        """A named preset, optionally with fields replaced.

        tiny: unit tests (49 calls, some groups empty or multi-record-varied);
        demo: a local demo run (2,511 calls); full: the talk's scale (51,051 calls).
        """
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
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> SimConfig:
        data = json.loads(text)
        data["not_found_ids"] = frozenset(data.get("not_found_ids", ()))
        return cls(**data)


# --------------------------------------------------------------------------------------------
# The universe (the truth)
# --------------------------------------------------------------------------------------------


def _stable_int(*parts: object) -> int:
    """A 64-bit hash of the parts that is the same in every process (unlike ``hash()``)."""
    text = "\x1f".join(str(p) for p in parts).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


_HEROES = (
    "Achilles", "Hector", "Ajax", "Diomedes", "Odysseus", "Penthesilea", "Aeneas",
    "Patroclus", "Hippolyta", "Leonidas", "Atalanta", "Memnon", "Sarpedon", "Nestor",
)  # fmt: skip
_SERVICES = (
    "auth", "billing", "catalog", "checkout", "inventory", "search", "shipping",
    "notifications", "ledger", "gateway", "profile", "recommendations", "pricing", "media",
)  # fmt: skip
_METRICS = (
    ("cpu_pct", "%"), ("mem_mb", "MiB"), ("latency_ms", "ms"), ("requests", "1/s"),
    ("errors", "1/s"), ("queue_depth", None), ("disk_used_gb", "GiB"),
)  # fmt: skip
_METRICS_JSON = tuple(
    (json.dumps(metric), "null" if unit is None else json.dumps(unit)) for metric, unit in _METRICS
)
_GROUP_KINDS = ("metrics", "latency", "errors", "capacity", "traffic", "saturation")

# Awkward id templates. Together they use every character the contract allows beyond
# [A-Za-z0-9] plus "%" and non-Latin scripts; the indices keep every id unique.
_AWKWARD_WARRIORS = (
    "Ωμέγα +{w}",
    "戦士 = {w}",
    "o'brien %20 {w}",
    "naïve+plus=eq {w}",
    "(sir) lancelot, {w}",
    "agent:{w}@hermes",
    "tilde~{w}_x.y-z",
    "Воин №{w}",
)
_AWKWARD_TROOPS = (
    "t+{w}.{t}",
    "трупа {w}-{t}",
    "svc=({w},{t})",
    "x~y:{w}@{t}",
    "it's {w} %2F {t}",
    "部隊 {w} {t}",
)
_AWKWARD_GROUPS = (
    "données {w}.{t}.{g}",
    "grp+{w}+{t}+{g}=",
    "(g) {w}, {t}, {g}",
    "ß@{w}:{t}:{g}",
    "~'{w}' {t} {g}%",
    "%25 {w} {t} {g}",
    "δεδομένα={w}={t}={g}",
)

_TS_BASE = calendar.timegm((2026, 11, 27, 8, 0, 0))
_TS_STEP_S = 300
_TS_SLOTS_PER_DAY = 24 * 3600 // _TS_STEP_S
_TS_CACHE: dict[int, str] = {}

_RawRecord = tuple[str, int, int | None, bool]


def _ts(slot: int) -> str:
    """RFC 3339 UTC text of the slot-th 5-minute step after the base time (memoised)."""
    text = _TS_CACHE.get(slot)
    if text is None:
        moment = time.gmtime(_TS_BASE + slot * _TS_STEP_S)
        text = _TS_CACHE[slot] = time.strftime("%Y-%m-%dT%H:%M:%SZ", moment)
    return text


def _thousandths(k: int) -> str:
    """JSON number text for k / 1000 (parses to exactly the float ``k / 1000``)."""
    whole, frac = divmod(abs(k), 1000)
    return f"{'-' if k < 0 else ''}{whole}.{frac:03d}"


def _records_json(raw: list[_RawRecord]) -> str:
    """JSON array text of raw records; json.loads gives exactly ``Universe.records()``."""
    parts = []
    for ts, m, k, has_unit in raw:
        metric, unit = _METRICS_JSON[m]
        value = "null" if k is None else _thousandths(k)
        parts.append(
            f'{{"ts":"{ts}","metric":{metric},"value":{value},"unit":{unit if has_unit else "null"}}}'
        )
    return "[" + ",".join(parts) + "]"


class Universe:
    """Every warrior, troop, data group and record a simulator with this config serves.

    Pure and deterministic: the same config gives the same data in every process. Lists
    are built lazily per parent and cached; records are generated per group on demand,
    in O(records of that group). Lookups by id raise ``KeyError`` for unknown ids.
    ``not_found_ids`` do not change the data: those items exist and are listed, only
    the server refuses paths that name them.
    """

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        c = self.config
        self._warriors = [
            {"warrior_id": self._warrior_id(w), "name": self._warrior_name(w)} for w in range(c.warriors)
        ]
        self._w_index = {item["warrior_id"]: w for w, item in enumerate(self._warriors)}
        self._troops: dict[int, tuple[list[dict[str, Any]], dict[str, int]]] = {}
        self._groups: dict[tuple[int, int], tuple[list[dict[str, Any]], dict[str, int]]] = {}

    # ---- ids and names -------------------------------------------------------------------

    def _warrior_id(self, w: int) -> str:
        if self.config.awkward_ids:
            return _AWKWARD_WARRIORS[w % len(_AWKWARD_WARRIORS)].format(w=w)
        return f"w-{w:04d}"

    def _troop_id(self, w: int, t: int) -> str:
        if self.config.awkward_ids:
            return _AWKWARD_TROOPS[(w + t) % len(_AWKWARD_TROOPS)].format(w=w, t=t)
        return f"t-{w:04d}-{t:02d}"

    def _group_id(self, w: int, t: int, g: int) -> str:
        if self.config.awkward_ids:
            return _AWKWARD_GROUPS[(w + t + g) % len(_AWKWARD_GROUPS)].format(w=w, t=t, g=g)
        return f"g-{w:04d}-{t:02d}-{g:03d}"

    def _warrior_name(self, w: int) -> str:
        h = _stable_int(self.config.seed, "warrior", w)
        return f"{_HEROES[h % len(_HEROES)]} {w}"

    # ---- lazy per-parent lists -----------------------------------------------------------

    def _troop_list(self, w: int) -> tuple[list[dict[str, Any]], dict[str, int]]:
        cached = self._troops.get(w)
        if cached is None:
            seed = self.config.seed
            items = [
                {
                    "troop_id": self._troop_id(w, t),
                    "service": _SERVICES[_stable_int(seed, "service", w, t) % len(_SERVICES)],
                }
                for t in range(self.config.troops_per_warrior)
            ]
            cached = (items, {item["troop_id"]: t for t, item in enumerate(items)})
            self._troops[w] = cached
        return cached

    def _group_list(self, w: int, t: int) -> tuple[list[dict[str, Any]], dict[str, int]]:
        cached = self._groups.get((w, t))
        if cached is None:
            seed = self.config.seed
            items = [
                {
                    "data_group_id": self._group_id(w, t, g),
                    "name": f"{_GROUP_KINDS[_stable_int(seed, 'kind', w, t, g) % 6]} {g}",
                }
                for g in range(self.config.groups_per_troop)
            ]
            cached = (items, {item["data_group_id"]: g for g, item in enumerate(items)})
            self._groups[(w, t)] = cached
        return cached

    def record_count(self, w: int, t: int, g: int) -> int:
        """How many records group (w, t, g) holds, without generating them."""
        c = self.config
        if c.empty_group_every:
            ordinal = (w * c.troops_per_warrior + t) * c.groups_per_troop + g
            if ordinal % c.empty_group_every == c.empty_group_every - 1:
                return 0
        if c.vary_records:
            return _stable_int(c.seed, "count", w, t, g) % (2 * c.records_per_group + 1)
        return c.records_per_group

    def _record_raw(self, w: int, t: int, g: int) -> list[_RawRecord]:
        """Group (w, t, g)'s records as (ts, metric index, value in thousandths, has unit).

        Values are whole thousandths so the server can render them as JSON text without
        float repr (the costliest part of a page) and still mean exactly ``k / 1000``.
        """
        n = self.record_count(w, t, g)
        rnd = random.Random(_stable_int(self.config.seed, "records", w, t, g)).random
        start = int(rnd() * _TS_SLOTS_PER_DAY)
        n_metrics = len(_METRICS)
        out: list[_RawRecord] = []
        for i in range(n):
            metric = int(rnd() * n_metrics)
            k = None if rnd() < 0.04 else int(rnd() * 1_005_000) - 5_000
            out.append((_ts(start + i), metric, k, rnd() >= 0.08))
        return out

    def _records(self, w: int, t: int, g: int) -> list[dict[str, Any]]:
        return [
            {
                "ts": ts,
                "metric": _METRICS[m][0],
                "value": None if k is None else k / 1000,
                "unit": _METRICS[m][1] if has_unit else None,
            }
            for ts, m, k, has_unit in self._record_raw(w, t, g)
        ]

    # ---- index resolution (used by the server) -------------------------------------------

    def resolve(
        self, warrior_id: str, troop_id: str | None = None, group_id: str | None = None
    ) -> tuple[int, ...]:
        """Indices of a path's ids; ``KeyError`` if any is unknown under its parent."""
        w = self._w_index[warrior_id]
        if troop_id is None:
            return (w,)
        t = self._troop_list(w)[1][troop_id]
        if group_id is None:
            return (w, t)
        return (w, t, self._group_list(w, t)[1][group_id])

    def list_items(self, indices: tuple[int, ...]) -> list[dict[str, Any]]:
        """The items of the list below ``indices`` (shared; callers must not mutate)."""
        if len(indices) == 0:
            return self._warriors
        if len(indices) == 1:
            return self._troop_list(indices[0])[0]
        if len(indices) == 2:
            return self._group_list(indices[0], indices[1])[0]
        w, t, g = indices
        return self._records(w, t, g)

    # ---- public truth --------------------------------------------------------------------

    def warriors(self) -> list[dict[str, Any]]:
        return [dict(x) for x in self._warriors]

    def troops(self, warrior_id: str) -> list[dict[str, Any]]:
        return [dict(x) for x in self.list_items(self.resolve(warrior_id))]

    def data_groups(self, warrior_id: str, troop_id: str) -> list[dict[str, Any]]:
        return [dict(x) for x in self.list_items(self.resolve(warrior_id, troop_id))]

    def records(self, warrior_id: str, troop_id: str, group_id: str) -> list[dict[str, Any]]:
        return self.list_items(self.resolve(warrior_id, troop_id, group_id))

    def iter_group_paths(self) -> Iterator[tuple[str, str, str]]:
        """Every (warrior_id, troop_id, data_group_id), in crawl order."""
        for w, warrior in enumerate(self._warriors):
            for t, troop in enumerate(self._troop_list(w)[0]):
                for group in self._group_list(w, t)[0]:
                    yield warrior["warrior_id"], troop["troop_id"], group["data_group_id"]

    def expected_calls(self, page_size: int | None = None) -> int:
        """List calls a complete crawl makes with this page size (the config default if None).

        A list costs ceil(items / page_size) calls, at least one even when empty. An item
        whose id is in ``not_found_ids`` costs one call for its child list (the 404) and
        nothing below it.
        """
        c = self.config
        ps = c.default_page_size if page_size is None else page_size
        if not 1 <= ps <= c.max_page_size:
            raise ValueError(f"page_size must be in 1..{c.max_page_size}, got {ps}")
        nf = c.not_found_ids

        def pages(n: int) -> int:
            return max(1, -(-n // ps))

        calls = pages(c.warriors)
        for w, warrior in enumerate(self._warriors):
            if warrior["warrior_id"] in nf:
                calls += 1
                continue
            troops = self._troop_list(w)[0]
            calls += pages(len(troops))
            for t, troop in enumerate(troops):
                if troop["troop_id"] in nf:
                    calls += 1
                    continue
                if not nf and not c.vary_records and not c.empty_group_every:
                    # Fast path for the big presets: every group has the same count.
                    calls += pages(c.groups_per_troop)
                    calls += c.groups_per_troop * pages(c.records_per_group)
                    continue
                groups = self._group_list(w, t)[0]
                calls += pages(len(groups))
                for g, group in enumerate(groups):
                    if group["data_group_id"] in nf:
                        calls += 1
                    else:
                        calls += pages(self.record_count(w, t, g))
        return calls

    def expected_rows(
        self, exclude_not_found: bool = True
    ) -> Iterator[tuple[str, str, str, str, str, str, float | None, str | None]]:
        """Every record as (warrior_id, troop_id, service, data_group_id, ts, metric, value,
        unit), in crawl order.

        With ``exclude_not_found`` (the default) records under any id in ``not_found_ids``
        are skipped, because a crawl cannot reach them; pass False for the whole universe.
        """
        nf = self.config.not_found_ids if exclude_not_found else frozenset()
        for w, warrior in enumerate(self._warriors):
            wid = warrior["warrior_id"]
            if wid in nf:
                continue
            for t, troop in enumerate(self._troop_list(w)[0]):
                tid, service = troop["troop_id"], troop["service"]
                if tid in nf:
                    continue
                for g, group in enumerate(self._group_list(w, t)[0]):
                    gid = group["data_group_id"]
                    if gid in nf:
                        continue
                    for r in self._records(w, t, g):
                        yield (wid, tid, service, gid, r["ts"], r["metric"], r["value"], r["unit"])


# --------------------------------------------------------------------------------------------
# Page tokens
# --------------------------------------------------------------------------------------------

_TOKEN_PREFIX = "hp1+"


class _PageTokens:
    """Opaque, signed, path-bound page tokens.

    Format: ``"hp1+" + standard-base64(json + 12-byte MAC)``, about 70-80 characters. The
    literal "+" (and base64's "/" and "=") mean a client that pastes the token into a URL
    without query-encoding it gets a 400, as it would from any server with opaque tokens.
    The key derives from the seed, so tokens survive a simulator restart with the same seed.
    """

    def __init__(self, seed: int) -> None:
        self._key = hashlib.blake2b(f"hermes-sim-page-token:{seed}".encode()).digest()[:32]

    def _mac(self, payload: bytes) -> bytes:
        return hashlib.blake2b(payload, key=self._key, digest_size=12).digest()

    @staticmethod
    def _path_hash(path_key: str) -> str:
        return hashlib.blake2b(path_key.encode("utf-8"), digest_size=6).hexdigest()

    def encode(self, path_key: str, offset: int) -> str:
        payload = json.dumps(
            {"v": 1, "o": offset, "p": self._path_hash(path_key)}, separators=(",", ":")
        ).encode()
        return _TOKEN_PREFIX + base64.b64encode(payload + self._mac(payload)).decode("ascii")

    def decode(self, path_key: str, token: str) -> int:
        """The offset a token points at; ``ValueError`` if it is malformed, tampered or foreign."""
        if not token.startswith(_TOKEN_PREFIX):
            raise ValueError("not a page token of this server")
        try:
            raw = base64.b64decode(token[len(_TOKEN_PREFIX) :], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("page token is not valid base64") from exc
        payload, mac = raw[:-12], raw[-12:]
        if len(raw) <= 12 or not hmac.compare_digest(mac, self._mac(payload)):
            raise ValueError("page token signature does not match")
        data = json.loads(payload)
        if data.get("p") != self._path_hash(path_key):
            raise ValueError("page token belongs to another list")
        offset = data.get("o")
        if not isinstance(offset, int) or offset <= 0:
            raise ValueError("page token offset is invalid")
        return offset


# --------------------------------------------------------------------------------------------
# Stats
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimStats:
    """A consistent snapshot of the server's counters."""

    requests: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    rate_limited: int = 0
    """429s caused by the token bucket."""
    injected_429: int = 0
    injected_5xx: int = 0
    garbage: int = 0
    hangs: int = 0
    pages_served: int = 0
    """Successful list responses (every 200 except health and garbage)."""


class _Counters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self.requests = 0
        self.by_status: Counter[int] = Counter()
        self.kinds: Counter[str] = Counter()

    def record(self, status: int, kind: str | None) -> None:
        with self._lock:
            self.requests += 1
            self.by_status[status] += 1
            if kind:
                self.kinds[kind] += 1

    def hang(self) -> None:
        with self._lock:
            self.kinds["hangs"] += 1

    def snapshot(self) -> SimStats:
        with self._lock:
            k = self.kinds
            return SimStats(
                requests=self.requests,
                by_status=dict(sorted(self.by_status.items())),
                rate_limited=k["rate_limited"],
                injected_429=k["injected_429"],
                injected_5xx=k["injected_5xx"],
                garbage=k["garbage"],
                hangs=k["hangs"],
                pages_served=k["page"],
            )

    def reset(self) -> None:
        with self._lock:
            self._reset()


# --------------------------------------------------------------------------------------------
# Rate limit and faults
# --------------------------------------------------------------------------------------------


class _TokenBuckets:
    """One token bucket per bearer token; answers how long to wait when empty."""

    def __init__(self, rate: float, burst: float) -> None:
        self._rate = rate
        self._burst = burst
        self._lock = threading.Lock()
        self._state: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> float:
        """0.0 if a request may go now (and it is counted), else seconds until it may."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._state.get(key, (self._burst, now))
            tokens = min(self._burst, tokens + (now - last) * self._rate)
            if tokens >= 1.0:
                self._state[key] = (tokens - 1.0, now)
                return 0.0
            self._state[key] = (tokens, now)
            return (1.0 - tokens) / self._rate


@dataclass(frozen=True)
class _Draw:
    fault: float
    hang: float
    pick: float


class _FaultDice:
    """A reproducible stream of draws: three per authenticated API request, in arrival order."""

    def __init__(self, fault_seed: int | None) -> None:
        self._rng = random.Random(fault_seed)
        self._lock = threading.Lock()

    def roll(self) -> _Draw:
        with self._lock:
            r = self._rng.random
            return _Draw(r(), r(), r())


# --------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------

_JSON = "application/json"
# 200 bodies that are not JSON: a truncated page and an HTML error page from a "proxy".
_GARBAGE = (b'{"items":[{"warrior_id":"w-00', b"<html><body>502 upstream hiccup</body></html>")


@dataclass(frozen=True)
class _Response:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    kind: str | None = None
    """What the stats count it as (see SimStats)."""


def _json_response(
    status: int, obj: object, headers: tuple[tuple[str, str], ...] = (), kind: str | None = None
) -> _Response:
    body = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return _Response(status, body, headers, kind)


def _error_response(
    status: int,
    error: str,
    message: str,
    headers: tuple[tuple[str, str], ...] = (),
    kind: str | None = None,
) -> _Response:
    return _json_response(status, {"error": error, "message": message}, headers, kind)


class _Reply(Exception):
    """Raised inside routing to answer with an error body."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512
    allow_reuse_address = True

    sim: HermesSimulator

    def __init__(self, address: tuple[str, int], sim: HermesSimulator) -> None:
        self.sim = sim
        self.stopping = threading.Event()
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, conn: socket.socket, add: bool) -> None:
        with self._conns_lock:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    def close_connections(self) -> None:
        """Unblock handler threads parked on idle keep-alive connections."""
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that time out or vanish mid-response are expected; stay quiet.
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            return
        super().handle_error(request, client_address)


_DATE_CACHE: tuple[int, str] = (0, "")


def _http_date() -> str:
    """The Date header, formatted once per second rather than once per response."""
    global _DATE_CACHE
    now = int(time.time())
    if _DATE_CACHE[0] != now:
        _DATE_CACHE = (now, formatdate(now, usegmt=True))
    return _DATE_CACHE[1]


_MAX_HEADERS = 100
_MAX_LINE = 65536


class _Headers(dict[str, str]):
    """Request headers keyed by lower-case name; ``get`` is case-insensitive like email's."""

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hermes-sim/1.0"
    sys_version = ""
    # Unbuffered writer: _send() builds status line, headers and body and writes them in
    # ONE sendall, so keep-alive clients never wait on a delayed ACK between two sends.
    wbufsize = 0
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection, True)

    def finish(self) -> None:
        self.server.track(self.connection, False)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: thousands of requests per second would flood the terminal."""

    def parse_request(self) -> bool:
        """http.server's request parsing without the email package.

        ``http.client.parse_headers`` costs more per request than everything the simulator
        does itself; a crawler benchmark must measure the crawler, not this parser. Only
        HTTP/1.0 and 1.1 are accepted; anything malformed gets the stdlib's error answers.
        """
        self.command = ""
        self.request_version = self.default_request_version
        self.close_connection = True
        raw: bytes = getattr(self, "raw_requestline", b"")  # set by handle_one_request
        self.requestline = str(raw, "iso-8859-1").rstrip("\r\n")
        words = self.requestline.split()
        if not words:
            return False
        if len(words) != 3 or words[2] not in ("HTTP/1.0", "HTTP/1.1"):
            self.send_error(HTTPStatus.BAD_REQUEST, f"Bad request ({self.requestline!r})")
            return False
        self.command, self.path, self.request_version = words
        headers = _Headers()
        for _ in range(_MAX_HEADERS + 1):
            line = self.rfile.readline(_MAX_LINE + 1)
            if len(line) > _MAX_LINE:
                self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Line too long")
                return False
            if line in (b"\r\n", b"\n", b""):
                break
            name, sep, value = str(line, "iso-8859-1").partition(":")
            if not sep:
                self.send_error(HTTPStatus.BAD_REQUEST, "Malformed header line")
                return False
            headers[name.strip().lower()] = value.strip()
        else:
            self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Too many headers")
            return False
        self.headers = headers  # type: ignore[assignment]
        connection = headers.get("connection", "").lower()
        if connection == "close":
            self.close_connection = True
        elif connection == "keep-alive" or self.request_version == "HTTP/1.1":
            self.close_connection = False
        return True

    def _send(self, resp: _Response) -> None:
        """Status line, headers and body in ONE write (see the class comment)."""
        lines = [
            f"HTTP/1.1 {resp.status} {HTTPStatus(resp.status).phrase}",
            f"Server: {self.server_version}",
            f"Date: {_http_date()}",
            f"Content-Type: {_JSON}",
            f"Content-Length: {len(resp.body)}",
        ]
        lines.extend(f"{k}: {v}" for k, v in resp.headers)
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(head + resp.body)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Protocol-level errors (bad request line, unsupported method) as JSON Error bodies."""
        self.close_connection = True
        status = HTTPStatus(code)
        error = status.phrase.lower().replace(" ", "_")
        resp = _error_response(status, error, message or status.description)
        self.server.sim._counters.record(resp.status, None)
        with contextlib.suppress(OSError):
            self._send(resp)

    def do_GET(self) -> None:
        sim = self.server.sim
        # A GET body is meaningless here, but read it so the connection stays in sync.
        length = int(self.headers.get("Content-Length") or 0)
        if length > 0:
            self.rfile.read(length)
        resp = sim._handle(self)
        # Count before sending, so a client that has its answer also sees it in the stats.
        sim._counters.record(resp.status, resp.kind)
        self._send(resp)


class HermesSimulator:
    """A Hermes server in a background thread of this process.

    ``start()`` returns the base URL (port 0 picks a free port); ``stop()`` shuts it down,
    including idle keep-alive connections and hanging requests. Also a context manager.
    """

    def __init__(self, config: SimConfig | None = None, host: str = "127.0.0.1", port: int = 0):
        self.config = config or SimConfig()
        self.universe = Universe(self.config)
        self._host = host
        self._port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._counters = _Counters()
        self._tokens = _PageTokens(self.config.seed)
        self._dice = _FaultDice(self.config.fault_seed)
        self._buckets = (
            _TokenBuckets(self.config.rate_limit, self.config.burst) if self.config.rate_limit else None
        )
        self._auth = f"bearer {self.config.token}"

    # ---- lifecycle -----------------------------------------------------------------------

    def start(self) -> str:
        if self._server is not None:
            return self.url
        self._server = _Server((self._host, self._port), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},  # stop() waits up to one interval
            name="hermes-simulator",
            daemon=True,
        )
        self._thread.start()
        return self.url

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.stopping.set()
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> HermesSimulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("simulator is not running; call start() first")
        address = self._server.server_address
        host, port = str(address[0]), int(address[1])
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}"

    @property
    def stats(self) -> SimStats:
        return self._counters.snapshot()

    def reset_stats(self) -> None:
        self._counters.reset()

    # ---- request handling ----------------------------------------------------------------

    def _retry_after(self, seconds: float) -> str:
        wait = max(0, math.ceil(seconds))
        if self.config.retry_after_format == "http-date":
            # HTTP-dates have whole seconds; round up so the client never comes back early.
            return formatdate(math.ceil(time.time()) + wait, usegmt=True)
        return str(wait)

    def _handle(self, h: _Handler) -> _Response:
        """The answer to one GET: health, auth, rate limit, injected faults, then the page."""
        c = self.config
        raw_path, _, query = h.path.partition("?")
        # Split BEFORE decoding: an id may hold "%2F", which must not become a separator.
        segments = [unquote(s) for s in raw_path.split("/")]
        stopping = h.server.stopping
        if c.latency_s:
            stopping.wait(c.latency_s)

        if segments == ["", "v1", "health"]:
            return _json_response(200, {"status": "ok"})

        auth = h.headers.get("Authorization", "")
        if auth[:7].lower() != "bearer " or not hmac.compare_digest(
            auth[7:].strip().encode(), c.token.encode()
        ):
            return _error_response(
                401,
                "unauthorized",
                "missing or wrong bearer token",
                (("WWW-Authenticate", 'Bearer realm="hermes"'),),
            )

        draw = self._dice.roll()
        if self._buckets is not None:
            wait = self._buckets.take(c.token)
            if wait > 0:
                return _error_response(
                    429,
                    "rate_limited",
                    f"more than {c.rate_limit:g} requests/s for this token",
                    (("Retry-After", self._retry_after(wait)),),
                    kind="rate_limited",
                )
        cut_429 = c.error_rate_429
        cut_5xx = cut_429 + c.error_rate_5xx
        cut_garbage = cut_5xx + c.garbage_rate
        if draw.fault < cut_429:
            retry = self._retry_after(int(draw.pick * 2))
            return _error_response(
                429, "too_many_requests", "injected 429", (("Retry-After", retry),), "injected_429"
            )
        if draw.fault < cut_5xx:
            status = (500, 502, 503, 504)[int(draw.pick * 4)]
            return _error_response(status, "unavailable", f"injected {status}", (), "injected_5xx")
        if draw.fault < cut_garbage:
            body = _GARBAGE[0] if draw.pick < 0.5 else _GARBAGE[1]
            return _Response(200, body, kind="garbage")
        if draw.hang < c.hang_rate:
            self._counters.hang()
            stopping.wait(c.hang_s)

        try:
            return _Response(200, self._page(segments, query), kind="page")
        except _Reply as reply:
            return _error_response(reply.status, reply.error, reply.message)

    def _page(self, segments: list[str], query: str) -> bytes:
        """The JSON body of a list page, or a _Reply for 404 / 400."""
        if len(segments) < 3 or segments[0] != "" or segments[1] != "v1":
            raise _Reply(404, "not_found", "no such route")
        rest = segments[2:]
        ids: list[str]
        if rest == ["warriors"]:
            ids = []
        elif len(rest) == 3 and rest[0] == "warriors" and rest[2] == "troops":
            ids = [rest[1]]
        elif len(rest) == 5 and rest[0] == "warriors" and rest[2] == "troops" and rest[4] == "data_groups":
            ids = [rest[1], rest[3]]
        elif (
            len(rest) == 7
            and rest[0] == "warriors"
            and rest[2] == "troops"
            and rest[4] == "data_groups"
            and rest[6] == "data"
        ):
            ids = [rest[1], rest[3], rest[5]]
        else:
            raise _Reply(404, "not_found", "no such route")

        kinds = ("warrior", "troop", "data group")
        for kind, ident in zip(kinds, ids, strict=False):
            if ident in self.config.not_found_ids:
                raise _Reply(404, "not_found", f"{kind} {ident!r} not found")
        try:
            indices = self.universe.resolve(*ids) if ids else ()
        except KeyError:
            raise _Reply(404, "not_found", f"unknown id in {'/'.join(ids)!r}") from None

        params = parse_qs(query, keep_blank_values=True)
        page_size = self.config.default_page_size
        if "page_size" in params:
            text = params["page_size"][-1]
            if not (text.isascii() and text.isdigit()) or not (1 <= int(text) <= self.config.max_page_size):
                raise _Reply(
                    400,
                    "bad_request",
                    f"page_size must be an integer in 1..{self.config.max_page_size}",
                )
            page_size = int(text)
        path_key = "\x1f".join(["v1", *ids, str(len(ids))])
        offset = 0
        if "page_token" in params:
            try:
                offset = self._tokens.decode(path_key, params["page_token"][-1])
            except (ValueError, UnicodeDecodeError) as exc:
                raise _Reply(400, "bad_request", f"invalid page_token: {exc}") from None

        end = offset + page_size
        if len(indices) == 3:
            # Records: render from raw values (see Universe._record_raw) instead of
            # json.dumps, whose float repr would dominate the cost of a page.
            raw = self.universe._record_raw(*indices)
            next_token = self._tokens.encode(path_key, end) if end < len(raw) else None
            text = (
                '{"items":'
                + _records_json(raw[offset:end])
                + ',"next_page_token":'
                + json.dumps(next_token)
                + "}"
            )
            return text.encode("utf-8")
        items = self.universe.list_items(indices)
        next_token = self._tokens.encode(path_key, end) if end < len(items) else None
        page = {"items": items[offset:end], "next_page_token": next_token}
        return json.dumps(page, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# --------------------------------------------------------------------------------------------
# CLI hooks
# --------------------------------------------------------------------------------------------


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the simulator's options to a (sub)parser; defaults of None mean 'from the preset'."""
    g = parser.add_argument_group("Hermes simulator")
    g.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    g.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 = any free)")
    g.add_argument("--size", choices=SIZES, default=None, help="data preset (default: small)")
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--warriors", type=int, default=None)
    g.add_argument("--troops-per-warrior", type=int, default=None)
    g.add_argument("--groups-per-troop", type=int, default=None)
    g.add_argument("--records-per-group", type=int, default=None)
    g.add_argument("--page-size", type=int, default=None, help="default page size")
    g.add_argument("--awkward-ids", action="store_true", default=None, help="hostile ids")
    g.add_argument("--token", default=None, help="bearer token (default: $HERMES_TOKEN, else sim-token)")
    g.add_argument("--rate-limit", type=float, default=None, help="requests/s per token")
    g.add_argument("--rate-burst", type=float, default=None, help="token bucket size")
    g.add_argument("--retry-after-format", choices=("seconds", "http-date"), default=None)
    g.add_argument("--error-rate-5xx", type=float, default=None)
    g.add_argument("--error-rate-429", type=float, default=None)
    g.add_argument("--garbage-rate", type=float, default=None)
    g.add_argument("--hang-rate", type=float, default=None)
    g.add_argument("--hang-s", type=float, default=None, help="seconds a hang lasts")
    g.add_argument("--latency-ms", type=float, default=None, help="added to every request")
    g.add_argument("--not-found", action="append", default=None, metavar="ID", help="answer 404 (repeat)")
    g.add_argument("--fault-seed", type=int, default=None)
    g.add_argument("--config-json", default=None, help=argparse.SUPPRESS)


def config_from_args(args: argparse.Namespace) -> SimConfig:
    """A SimConfig from parsed serve arguments: the preset, then every flag given."""
    if getattr(args, "config_json", None):
        return SimConfig.from_json(args.config_json)
    base = SimConfig.from_size(args.size) if args.size else SimConfig()
    changes: dict[str, Any] = {}
    direct = {
        "seed": "seed",
        "warriors": "warriors",
        "troops_per_warrior": "troops_per_warrior",
        "groups_per_troop": "groups_per_troop",
        "records_per_group": "records_per_group",
        "page_size": "default_page_size",
        "awkward_ids": "awkward_ids",
        "rate_limit": "rate_limit",
        "rate_burst": "rate_burst",
        "retry_after_format": "retry_after_format",
        "error_rate_5xx": "error_rate_5xx",
        "error_rate_429": "error_rate_429",
        "garbage_rate": "garbage_rate",
        "hang_rate": "hang_rate",
        "hang_s": "hang_s",
        "fault_seed": "fault_seed",
    }
    for arg, name in direct.items():
        value = getattr(args, arg, None)
        if value is not None:
            changes[name] = value
    if getattr(args, "latency_ms", None) is not None:
        changes["latency_s"] = args.latency_ms / 1000.0
    if getattr(args, "not_found", None):
        changes["not_found_ids"] = frozenset(args.not_found)
    changes["token"] = args.token or os.environ.get("HERMES_TOKEN") or "sim-token"
    return dataclasses.replace(base, **changes)


def serve_from_args(args: argparse.Namespace) -> int:
    """Run the simulator in the foreground until SIGINT or SIGTERM; returns the exit code."""
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"hermes simulator: {exc}", file=sys.stderr)
        return 2
    sim = HermesSimulator(config, host=args.host, port=args.port)
    try:
        url = sim.start()
    except OSError as exc:  # typically the port is taken
        print(f"hermes simulator: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    calls = sim.universe.expected_calls()
    print(
        f"hermes simulator listening on {url} ({config.warriors} warriors, ~{calls} calls for a full crawl)",
        flush=True,
    )
    done = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        done.set()

    previous: dict[signal.Signals, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError):  # not the main thread: rely on the caller
            previous[sig] = signal.signal(sig, on_signal)
    try:
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m fanout.simulator``: the same options as ``fanout serve``."""
    parser = argparse.ArgumentParser(prog="python -m fanout.simulator", description=__doc__)
    add_serve_arguments(parser)
    return serve_from_args(parser.parse_args(argv))


@contextlib.contextmanager
def run_in_subprocess(
    config: SimConfig | None = None, host: str = "127.0.0.1", timeout: float = 30.0
) -> Iterator[str]:
    """Serve ``config`` from a separate Python process; yields the base URL once healthy.

    Benchmarks need this: a server in the client's process competes with it for the GIL.
    """
    import urllib.request

    config = config or SimConfig()
    root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    argv = [sys.executable, "-m", "fanout.simulator", "--host", host, "--port", "0"]
    argv += ["--config-json", config.to_json()]
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=errors, env=env)
        try:
            assert proc.stdout is not None
            deadline = time.monotonic() + timeout
            line = b""
            while not line.endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0 or proc.poll() is not None:
                    errors.seek(0)
                    raise RuntimeError(
                        "simulator subprocess did not start: "
                        + errors.read().decode("utf-8", "replace")[-2000:]
                    )
                ready, _, _ = select.select([proc.stdout], [], [], min(left, 0.2))
                if ready:
                    line += os.read(proc.stdout.fileno(), 4096)
            url = line.decode().split(" listening on ", 1)[1].split()[0]
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/v1/health", timeout=1) as resp:
                        if resp.status == 200:
                            break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            yield url
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


if __name__ == "__main__":
    raise SystemExit(main())
