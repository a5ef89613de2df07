"""The truth: every warrior, troop, data group and record, a pure function of the config.

Why its own module: tests compare a crawl with :meth:`Universe.expected_rows` and
:meth:`Universe.expected_calls` without any HTTP, and the server only renders what this
module decides.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator
from typing import Any

from fanout.simulator.config import SimConfig
from fanout.simulator.names import (
    _AWKWARD_GROUPS,
    _AWKWARD_TROOPS,
    _AWKWARD_WARRIORS,
    _GROUP_KINDS,
    _HEROES,
    _SERVICES,
    _stable_int,
)
from fanout.simulator.records import (
    _METRICS,
    _TS_SLOTS_PER_DAY,
    BAD_RECORD_KINDS,
    _bad_record_json,
    _RawRecord,
    _ts,
)

Row = tuple[str, str, str, str, str, str, float | None, str | None]
"""(warrior_id, troop_id, service, data_group_id, ts, metric, value, unit): one output row."""
_DOTS = (".", "..")


def _long(head: str, fill: str) -> str:
    """``head`` padded with ``fill`` to the contract's longest id, 128 characters."""
    return head + fill * (128 - len(head))


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
        self._extra: dict[tuple[int, int], dict[str, Any]] = {}
        self._bad: dict[tuple[int, int, int], str] | None = None

    # ---- ids and names -------------------------------------------------------------------

    def _warrior_id(self, w: int) -> str:
        if self.config.dot_ids and w < 2:
            return _DOTS[w]
        if self.config.long_ids:
            return _long(f"戦士 {w} ", "語")
        if self.config.awkward_ids:
            return _AWKWARD_WARRIORS[w % len(_AWKWARD_WARRIORS)].format(w=w)
        return f"w-{w:04d}"

    def _troop_id(self, w: int, t: int) -> str:
        if self.config.dot_ids and t < 2:
            return _DOTS[t]
        if self.config.long_ids:
            return _long(f"部隊 {w}-{t} ", "隊")
        if self.config.awkward_ids:
            return _AWKWARD_TROOPS[(w + t) % len(_AWKWARD_TROOPS)].format(w=w, t=t)
        return f"t-{w:04d}-{t:02d}"

    def _group_id(self, w: int, t: int, g: int) -> str:
        if self.config.long_ids:
            return _long(f"データ {w}.{t}.{g} ", "δ")
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
                for t in range(self.troop_count(w))
            ]
            cached = (items, {item["troop_id"]: t for t, item in enumerate(items)})
            self._troops[w] = cached
        return cached

    def _group_list(self, w: int, t: int) -> tuple[list[dict[str, Any]], dict[str, int]]:
        cached = self._groups.get((w, t))
        if cached is None:
            seed = self.config.seed
            n = self.config.groups_per_troop
            # With changing_listings, index n is the extra group some fetches list.
            every = [
                {
                    "data_group_id": self._group_id(w, t, g),
                    "name": f"{_GROUP_KINDS[_stable_int(seed, 'kind', w, t, g) % 6]} {g}",
                }
                for g in range(n + (1 if self.config.changing_listings else 0))
            ]
            items = every[:n]
            cached = (items, {item["data_group_id"]: g for g, item in enumerate(every)})
            self._groups[(w, t)] = cached
            if self.config.changing_listings:
                self._extra[(w, t)] = every[n]
        return cached

    def troop_count(self, w: int) -> int:
        """How many troops warrior ``w`` lists (``heavy_first_warrior`` skews the first)."""
        c = self.config
        if w == 0 and c.heavy_first_warrior:
            return c.heavy_first_warrior * c.troops_per_warrior
        return c.troops_per_warrior

    def record_count(self, w: int, t: int, g: int) -> int:
        """How many records group (w, t, g) holds, without generating them."""
        c = self.config
        if c.heavy_tailed_records:
            # Inverse of the Pareto CDF at a uniform draw u in (0, 1]: x_m / u ** (1 / a),
            # with x_m = mean * (a - 1) / a so that the mean is records_per_group.
            u = (_stable_int(c.seed, "tail", w, t, g) % 2**53 + 1) / 2**53
            drawn = c.records_per_group / 3 / u ** (1 / 1.5)
            return min(100 * c.records_per_group, math.floor(drawn))
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
        kind = self.bad_kind(w, t, g)
        if kind is not None:
            raw = self._record_raw(w, t, g)
            return [json.loads(_bad_record_json(kind, raw[0])), *self._records_ok(raw[1:])]
        return self._records_ok(self._record_raw(w, t, g))

    @staticmethod
    def _records_ok(raw: list[_RawRecord]) -> list[dict[str, Any]]:
        return [
            {
                "ts": ts,
                "metric": _METRICS[m][0],
                "value": None if k is None else k / 1000,
                "unit": _METRICS[m][1] if has_unit else None,
            }
            for ts, m, k, has_unit in raw
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

    # ---- hostile modes (see SimConfig) ---------------------------------------------------

    def loop_ids(self) -> frozenset[str]:
        """Ids whose child list loops under ``cursor_loop`` (empty when it is off)."""
        c = self.config
        if c.cursor_loop is None:
            return frozenset()
        if c.cursor_loop_ids:
            return c.cursor_loop_ids
        first = next(self.iter_group_paths(), None)
        return frozenset() if first is None else frozenset({first[2]})

    def extra_data_group(self, warrior_id: str, troop_id: str) -> dict[str, Any] | None:
        """The group that odd fetches of this troop's listing add (``changing_listings``)."""
        w, t = self.resolve(warrior_id, troop_id)
        self._group_list(w, t)
        extra = self._extra.get((w, t))
        return None if extra is None else dict(extra)

    def bad_kind(self, w: int, t: int, g: int) -> str | None:
        """The ``bad_records`` defect of group (w, t, g), if it has one."""
        if not self.config.bad_records:
            return None
        if self._bad is None:
            self._bad = {}
            kinds = iter(BAD_RECORD_KINDS)
            blocked = self.config.not_found_ids | self.loop_ids()
            for w2, warrior in enumerate(self._warriors):
                if warrior["warrior_id"] in blocked:
                    continue
                for t2, troop in enumerate(self._troop_list(w2)[0]):
                    if troop["troop_id"] in blocked:
                        continue
                    for g2, group in enumerate(self._group_list(w2, t2)[0]):
                        if group["data_group_id"] in blocked or not self.record_count(w2, t2, g2):
                            continue
                        kind = next(kinds, None)
                        if kind is None:
                            break
                        self._bad[(w2, t2, g2)] = kind
        return self._bad.get((w, t, g))

    def bad_record_groups(self) -> dict[tuple[str, str, str], str]:
        """(warrior_id, troop_id, data_group_id) -> defect kind, for ``bad_records``.

        ``BAD_RECORD_KINDS[kind]`` says whether the altered record still keeps the contract
        (only "lowercase_ts" does).
        """
        self.bad_kind(0, 0, 0)
        out = {}
        for (w, t, g), kind in (self._bad or {}).items():
            ids = (self._warriors[w]["warrior_id"], self._troop_list(w)[0][t]["troop_id"])
            out[(*ids, self._group_list(w, t)[0][g]["data_group_id"])] = kind
        return out

    def expected_failures(self) -> dict[tuple[str, ...], str]:
        """Units a correct crawler must fail, as id path -> reason.

        A path of 1, 2 or 3 ids is a warrior, troop or data group: "not_found" (an id in
        ``not_found_ids``: its child list answers 404), "cursor_loop" (its child list never
        ends) or "bad_records:<kind>" (a record that breaks the contract). Nothing below a
        failed unit is listed again.
        """
        nf, loops = self.config.not_found_ids, self.loop_ids()
        out: dict[tuple[str, ...], str] = {}

        def reason(ident: str) -> str | None:
            return "not_found" if ident in nf else "cursor_loop" if ident in loops else None

        for w, warrior in enumerate(self._warriors):
            wid = warrior["warrior_id"]
            if why := reason(wid):
                out[(wid,)] = why
                continue
            for t, troop in enumerate(self._troop_list(w)[0]):
                tid = troop["troop_id"]
                if why := reason(tid):
                    out[(wid, tid)] = why
                    continue
                for g, group in enumerate(self._group_list(w, t)[0]):
                    gid = group["data_group_id"]
                    kind = self.bad_kind(w, t, g)
                    if why := reason(gid):
                        out[(wid, tid, gid)] = why
                    elif kind is not None and not BAD_RECORD_KINDS[kind]:
                        out[(wid, tid, gid)] = f"bad_records:{kind}"
        return out

    def group_rows(self, warrior_id: str, troop_id: str, data_group_id: str) -> list[Row]:
        """The rows of one data group, listed or not (e.g. an extra ``changing_listings`` group)."""
        w, t, g = self.resolve(warrior_id, troop_id, data_group_id)
        service = self._troop_list(w)[0][t]["service"]
        ids = (warrior_id, troop_id, service, data_group_id)
        return [(*ids, r["ts"], r["metric"], r["value"], r["unit"]) for r in self._records(w, t, g)]

    def expected_rows_for(
        self, groups: Iterator[tuple[str, str, str]] | list[tuple[str, str, str]]
    ) -> list[Row]:
        """The rows a correct crawler keeps for exactly these (warrior, troop, data_group) ids,
        in the given order: the truth "as of the listings the crawler kept". Groups it must
        fail (see :meth:`expected_failures`, also via their warrior or troop) give no rows."""
        failures = self.expected_failures()
        rows: list[Row] = []
        for w, t, g in groups:
            if (w,) in failures or (w, t) in failures or (w, t, g) in failures:
                continue
            rows.extend(self.group_rows(w, t, g))
        return rows

    # ---- the truth of a whole crawl ------------------------------------------------------

    def expected_calls(self, page_size: int | None = None) -> int:
        """List calls a complete crawl makes with this page size (the config default if None).

        A list costs ceil(items / page_size) calls, at least one even when empty. An item
        whose id is in ``not_found_ids`` costs one call for its child list (the 404) and
        nothing below it; so does a looping list (``cursor_loop``: its first page only).
        ``duplicate_ids`` lists cost their extra page; ``changing_listings`` are counted
        without their extra group. Retries are never counted.
        """
        c = self.config
        ps = c.default_page_size if page_size is None else page_size
        if not 1 <= ps <= c.max_page_size:
            raise ValueError(f"page_size must be in 1..{c.max_page_size}, got {ps}")
        stop = c.not_found_ids | self.loop_ids()
        dup = c.duplicate_ids
        tail = c.heavy_tailed_records

        def pages(n: int, duplicated: bool = False) -> int:
            if duplicated and n > 0:
                return 1 + -(-(n - min(ps, n) + 1) // ps)
            return max(1, -(-n // ps))

        calls = pages(c.warriors)
        for w, warrior in enumerate(self._warriors):
            if warrior["warrior_id"] in stop:
                calls += 1
                continue
            troops = self._troop_list(w)[0]
            calls += pages(len(troops), dup)
            for t, troop in enumerate(troops):
                if troop["troop_id"] in stop:
                    calls += 1
                    continue
                if not stop and not dup and not c.vary_records and not c.empty_group_every and not tail:
                    # Fast path for the big presets: every group has the same count.
                    calls += pages(c.groups_per_troop)
                    calls += c.groups_per_troop * pages(c.records_per_group)
                    continue
                groups = self._group_list(w, t)[0]
                calls += pages(len(groups), dup)
                for g, group in enumerate(groups):
                    if group["data_group_id"] in stop:
                        calls += 1
                    else:
                        calls += pages(self.record_count(w, t, g))
        return calls

    def expected_rows(self, exclude_not_found: bool = True, exclude_failing: bool = True) -> Iterator[Row]:
        """Every record as (warrior_id, troop_id, service, data_group_id, ts, metric, value,
        unit), in crawl order.

        With ``exclude_not_found`` (the default) records under any id in ``not_found_ids``
        are skipped, because a crawl cannot reach them; pass False for the whole universe.
        With ``exclude_failing`` (the default) so are the units a correct crawler must fail
        under the hostile modes (``cursor_loop``, invalid ``bad_records``; see
        :meth:`expected_failures`).
        """
        nf = self.config.not_found_ids if exclude_not_found else frozenset()
        hostile = self.config.cursor_loop is not None or self.config.bad_records
        failures = self.expected_failures() if exclude_failing and hostile else {}
        for w, warrior in enumerate(self._warriors):
            wid = warrior["warrior_id"]
            if wid in nf or (wid,) in failures:
                continue
            for t, troop in enumerate(self._troop_list(w)[0]):
                tid, service = troop["troop_id"], troop["service"]
                if tid in nf or (wid, tid) in failures:
                    continue
                for g, group in enumerate(self._group_list(w, t)[0]):
                    gid = group["data_group_id"]
                    if gid in nf or (wid, tid, gid) in failures:
                        continue
                    for r in self._records(w, t, g):
                        yield (wid, tid, service, gid, r["ts"], r["metric"], r["value"], r["unit"])
