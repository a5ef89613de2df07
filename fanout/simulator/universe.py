"""The truth: every warrior, troop, data group and record, a pure function of the config.

Why its own module: tests compare a crawl with :meth:`Universe.expected_rows` and
:meth:`Universe.expected_calls` without any HTTP, and the server only renders what this
module decides.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from typing import Any

from fanout.simulator.config import SimConfig
from fanout.simulator.records import _METRICS, _TS_SLOTS_PER_DAY, _RawRecord, _ts


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
