"""The truth of a described API: a deterministic tree for any ``ApiDescription``.

Why its own module: Hermes' :class:`~fanout.simulator.universe.Universe` knows warriors,
troops and data groups by name and must stay byte-identical; every other description gets
this tree instead, built from its levels and columns alone, so an end-to-end test of any
API can say "rows exact" (:meth:`DescribedUniverse.expected_rows`).

The tree, a pure function of ``(seed, index path)``:

* Every unit (an item of a level with a stage) has its id (``id_type`` string: plain,
  awkward, ``.``/``..`` or 128-character ones per the config, as Hermes'; integer: JSON
  integers, with 2**53 + 1 and 0 among the awkward ones), a string for each ``carry``,
  ``keep`` and ``require`` field, and one unnamed field (``position``) a client ignores.
  Ids are unique across their whole level, so a path that names only the parent's id
  still finds one unit. These are item fields by name (a dot is part of the name, as the
  client reads them); only a column's ``source`` is a dotted path into nested objects.
* Every leaf item has each column at its ``source`` path with a value of its type:
  strings (some non-Latin or quoted), int64 (some beyond 2**53, some negative), double
  (thousandths, some written as JSON integers), boolean, timestamp (RFC 3339 with ``Z`` or
  an offset, some with fractions), date, json (objects, lists and scalars). A nullable
  column is sometimes null, a column that need not be present sometimes absent. With
  ``extra: keep`` or ``drop`` some items carry a few unnamed fields; with ``refuse`` none.

Rows of the truth are tuples in ``ApiDescription.column_names()`` order without ``run_id``
and ``fetched_at``, in the form :func:`fanout.simulator.truth.normalize_row` gives any row:
ids as text, timestamps as UTC epoch microseconds, dates as ``YYYY-MM-DD``, json and the
extra column as canonical JSON text, nulls as None.
"""

from __future__ import annotations

import functools
import json
import random
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from fanout.simulator.config import SimConfig
from fanout.simulator.names import _AWKWARD_GROUPS, _AWKWARD_TROOPS, _AWKWARD_WARRIORS, _stable_int
from fanout_core import api_description
from fanout_core.api_description import ApiDescription, Column, Level

_DOTS = (".", "..")
_WORDS = (
    "amber", "birch", "cedar", "delta", "ember", "fjord", "garnet", "harbor", "indigo",
    "juniper", "kestrel", "lagoon", "meadow", "nectar", "onyx", "prairie", "quartz", "raven",
)  # fmt: skip
_AWKWARD_WORDS = ("Ωμέγα", "naïve", "o'brien", 'say "hi"', "東京", "Воин", "ß+=%20", "tab\u00a0space")
_TS_BASE = datetime(2026, 11, 27, 8, 0, 0, tzinfo=UTC)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_OFFSETS = ((0, "Z"), (0, "Z"), (0, "Z"), (330, "+05:30"), (-180, "-03:00"), (0, "+00:00"))
_EXTRAS: tuple[tuple[str, Any], ...] = (
    ("x_color", "teal"),
    ("x_tags", ["a", "b"]),
    ("x_score", 12),
    ("x_flags", {"beta": True, "since": None}),
)
HERMES_ONLY = ("duplicate_ids", "changing_listings", "heavy_first_warrior", "heavy_tailed_records")
"""Hostile modes and tree shapes only Hermes' universe simulates; a described API refuses them (one line)."""
TOKEN_STYLES = ("cursor", "next_url", "link_header")
"""Pagination styles whose next page is a token the server makes, so a list can loop."""
BAD_ROW_KINDS = {
    "missing_field": False,
    "wrong_type": False,
    "nan_value": False,
    "huge_int": False,
    "unnamed_field": False,
    "lowercase_ts": True,
}
"""``bad_records`` defects of a described API, each mapped to whether the item still keeps
the description: a required field absent; the first non-json column's value of another JSON
type; ``NaN`` (not JSON) in a double; the JSON integer 10**400 in an int64 (else a double);
an unnamed field under ``extra: refuse``; a timestamp in lower-case ``t``/``z`` form (valid,
kept). Only the kinds the description's columns allow are used."""
_WRONG_TYPE: dict[str, Any] = {
    "string": 12345,
    "int64": "12",
    "double": "1.5",
    "boolean": "true",
    "timestamp": 1_700_000_000,
    "date": 20261127,
}

Row = tuple[Any, ...]


def canonical_json(value: Any) -> str:
    """The one text of a JSON value: sorted keys, no spaces, UTF-8 as is (``bodies.dumps``)."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def get_path(doc: Any, path: tuple[str, ...]) -> Any:
    """The value at a dotted path, or KeyError."""
    for part in path:
        if not isinstance(doc, dict):
            raise KeyError(part)
        doc = doc[part]
    return doc


def put_path(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    """Set the value at a dotted path, making the objects on the way."""
    for part in path[:-1]:
        doc = doc.setdefault(part, {})
    doc[path[-1]] = value


def id_text(value: Any) -> str:
    """An id as the bodies, keys and rows carry it: a JSON integer as its decimal string."""
    return value if isinstance(value, str) else str(value)


def is_hermes(api: ApiDescription) -> bool:
    """Whether ``api`` is Hermes' own description (wherever it was read from, whatever its
    base URL): then the simulator serves today's Hermes universe, byte for byte."""
    return api_description.is_builtin(api)


class DescribedUniverse:
    """Every unit and row a simulator of ``api`` with this config serves.

    Units are addressed by index paths (``(i0, i1, ...)``: the i0-th item of the first
    level, its i1-th child...). Lists of units are built lazily per parent and cached;
    leaf rows are generated per leaf list on demand. ``not_found_ids`` do not change the
    data: those units are listed, only the server refuses paths that name them.
    """

    def __init__(self, api: ApiDescription, config: SimConfig | None = None) -> None:
        self.api = api
        self.config = config or SimConfig()
        for name in HERMES_ONLY:
            if getattr(self.config, name):
                raise ValueError(f"{name} is simulated for Hermes' description only, not for {api.name!r}")
        self.sizes = self.config.sizes_for(len(api.levels))
        self._depth = len(api.levels) - 1
        """Index-path length of a leaf list's parent (the number of stage levels)."""
        self._units: dict[tuple[int, ...], tuple[list[dict[str, Any]], dict[str, int]]] = {}
        heads = [c.source[0] for c in api.rows.columns]
        for c in api.rows.columns:
            for other in api.rows.columns:
                if other is not c and other.source[: len(c.source)] == c.source:
                    raise ValueError(
                        f"{api.name}: column {c.name!r} holds column {other.name!r}; cannot simulate"
                    )
        self._extras = tuple((n, v) for n, v in _EXTRAS if n not in heads)
        self._bad: dict[tuple[int, ...], str] | None = None
        self._leaf_cached = functools.lru_cache(maxsize=64)(self._leaf)
        self._loops: frozenset[tuple[int, ...]] | None = None
        if self.config.cursor_loop is not None:
            for path in self.loop_units():
                style = api.levels[len(path)].pagination.type
                if style not in TOKEN_STYLES:
                    raise ValueError(
                        f"cursor_loop needs a {', '.join(TOKEN_STYLES)} list; {api.levels[len(path)].name} "
                        f"is {style}"
                    )

    # ---- units ---------------------------------------------------------------------------

    def _ordinal(self, path: tuple[int, ...]) -> int:
        """The unit's position in its whole level (crawl order), from its index path."""
        n = 0
        for d, i in enumerate(path):
            n = n * self.sizes[d] + i
        return n

    def _string_id(self, level: Level, d: int, path: tuple[int, ...]) -> str:
        c, i = self.config, path[-1]
        if c.dot_ids and d < 2 and i < 2:
            return _DOTS[i]
        where = ".".join(str(x) for x in path)
        if c.long_ids:
            head = f"{level.name} {where} "
            return head + "語" * (128 - len(head))
        if c.awkward_ids:
            w, t, g = (0, 0, *path)[-3:]
            if d == 0:
                text = _AWKWARD_WARRIORS[g % len(_AWKWARD_WARRIORS)].format(w=g)
            elif d == 1:
                text = _AWKWARD_TROOPS[(t + g) % len(_AWKWARD_TROOPS)].format(w=t, t=g)
            else:
                text = _AWKWARD_GROUPS[(w + t + g) % len(_AWKWARD_GROUPS)].format(w=w, t=t, g=g)
            return text if d < 3 else f"{text} #{self._ordinal(path)}"
        return f"{level.folder}-{'-'.join(f'{x:02d}' for x in path)}"

    def _integer_id(self, d: int, path: tuple[int, ...]) -> int:
        ordinal = self._ordinal(path)
        if self.config.awkward_ids and ordinal < 2:
            return (2**53 + 1, 0)[ordinal]  # beyond a double's integers; zero
        return 100 + 3 * ordinal + _stable_int(self.config.seed, "id", d, *path) % 3

    def _text(self, d: int, path: tuple[int, ...], name: str) -> str:
        h = _stable_int(self.config.seed, "text", d, name, *path)
        words = _AWKWARD_WORDS if self.config.awkward_ids and h % 3 == 0 else _WORDS
        return f"{words[h % len(words)]} {path[-1]}"

    def _unit_list(self, parent: tuple[int, ...]) -> tuple[list[dict[str, Any]], dict[str, int]]:
        cached = self._units.get(parent)
        if cached is None:
            d = len(parent)
            level = self.api.levels[d]
            items = []
            for i in range(self.sizes[d]):
                path = (*parent, i)
                item: dict[str, Any] = {}
                ident: Any = (
                    self._integer_id(d, path)
                    if level.id_type == "integer"
                    else self._string_id(level, d, path)
                )
                item[cast(str, level.id_field)] = ident
                for field in (*(c.source for c in level.carry), *level.require):
                    item[field] = self._text(d, path, field)
                if "position" not in item:
                    item["position"] = i
                items.append(item)
            index = {self.unit_id(d, item): i for i, item in enumerate(items)}
            cached = self._units[parent] = (items, index)
        return cached

    def unit_id(self, d: int, item: dict[str, Any]) -> str:
        """The id of a unit of level ``d`` as text (its decimal string for integer ids)."""
        return id_text(item[cast(str, self.api.levels[d].id_field)])

    def carried(self, d: int, item: dict[str, Any]) -> tuple[str, ...]:
        """The values of level ``d``'s carried (to rows) fields of a unit, in order."""
        return tuple(item[c.source] for c in self.api.levels[d].carry if c.to_rows)

    def children(self, parent: tuple[int, ...]) -> Iterator[tuple[int, ...]]:
        """Index paths of the units listed under ``parent`` (``()``: the first level)."""
        return ((*parent, i) for i in range(len(self._unit_list(parent)[0])))

    def unit(self, path: tuple[int, ...]) -> dict[str, Any]:
        return self._unit_list(path[:-1])[0][path[-1]]

    def resolve(self, ids: dict[int, str]) -> tuple[int, ...]:
        """The index path of the unit whose level-d id is ``ids[d]`` for every d given (the
        deepest level named last); levels a path leaves out may be any. KeyError if none or
        several fit."""
        deepest = max(ids)
        found: list[tuple[int, ...]] = [()]
        for d in range(deepest + 1):
            nxt: list[tuple[int, ...]] = []
            for parent in found:
                items, index = self._unit_list(parent)
                if d in ids:
                    if ids[d] in index:
                        nxt.append((*parent, index[ids[d]]))
                else:
                    nxt.extend((*parent, i) for i in range(len(items)))
            found = nxt
        if len(found) != 1:
            raise KeyError(ids[deepest])
        return found[0]

    # ---- leaf rows -----------------------------------------------------------------------

    def row_count(self, parent: tuple[int, ...]) -> int:
        """How many rows the leaf list under ``parent`` holds, without generating them."""
        c, n = self.config, self.sizes[-1]
        if c.empty_group_every and self._ordinal(parent) % c.empty_group_every == c.empty_group_every - 1:
            return 0
        if c.vary_records:
            return _stable_int(c.seed, "count", *parent) % (2 * n + 1)
        return n

    def leaf(self, parent: tuple[int, ...]) -> tuple[list[dict[str, Any]], list[Row]]:
        """The leaf list under ``parent``: the items as served, and their values as the truth
        has them (the rows' columns, then the extra column if kept). Shared with the recent
        pages of the same list (each page would otherwise build the whole list again):
        callers must not mutate them."""
        return self._leaf_cached(parent)

    def _leaf(self, parent: tuple[int, ...]) -> tuple[list[dict[str, Any]], list[Row]]:
        rnd = random.Random(_stable_int(self.config.seed, "rows", *parent)).random
        cols = self.api.rows.columns
        extra = self.api.rows.extra
        items: list[dict[str, Any]] = []
        truths: list[Row] = []
        for j in range(self.row_count(parent)):
            item: dict[str, Any] = {}
            truth: list[Any] = []
            for col in cols:
                if not col.required and rnd() < 0.07:
                    truth.append(None)
                    continue
                if col.nullable and rnd() < 0.06:
                    put_path(item, col.source, None)
                    truth.append(None)
                    continue
                raw, value = self._value(col, rnd, j)
                put_path(item, col.source, raw)
                truth.append(value)
            unnamed: dict[str, Any] = {}
            if extra != "refuse" and self._extras and rnd() < 0.3:
                k = int(rnd() * len(self._extras))
                for name, value in self._extras[k : k + 2]:
                    unnamed[name] = value
                item.update(unnamed)
            if extra == "keep":
                truth.append(canonical_json(unnamed) if unnamed else None)
            items.append(item)
            truths.append(tuple(truth))
        kind = self.bad_kind(parent) if self.config.bad_records and items else None
        if kind is not None:
            self._spoil(items[0], kind)
        return items, truths

    def _bad_kinds(self) -> list[str]:
        """The ``bad_records`` defects this description's rows can show, in order."""
        cols = self.api.rows.columns
        types = {c.type for c in cols}
        usable = {
            "missing_field": any(c.required for c in cols),
            "wrong_type": any(c.type != "json" for c in cols),
            "nan_value": "double" in types,
            "huge_int": bool(types & {"int64", "double"}),
            "unnamed_field": self.api.rows.extra == "refuse",
            "lowercase_ts": "timestamp" in types,
        }
        return [k for k in BAD_ROW_KINDS if usable[k]]

    def _spoil(self, item: dict[str, Any], kind: str) -> None:
        """Alter one served item by a ``bad_records`` defect (see BAD_ROW_KINDS)."""
        cols = self.api.rows.columns
        if kind == "missing_field":
            col = next(c for c in cols if c.required)
            parent = get_path(item, col.source[:-1]) if len(col.source) > 1 else item
            parent.pop(col.source[-1], None)
        elif kind == "wrong_type":
            col = next(c for c in cols if c.type != "json")
            put_path(item, col.source, _WRONG_TYPE[col.type])
        elif kind == "nan_value":
            put_path(item, next(c for c in cols if c.type == "double").source, float("nan"))
        elif kind == "huge_int":
            col = next((c for c in cols if c.type == "int64"), None) or next(
                c for c in cols if c.type == "double"
            )
            put_path(item, col.source, 10**400)
        elif kind == "unnamed_field":
            item["x_unnamed"] = "refused"
        else:
            col = next(c for c in cols if c.type == "timestamp")
            value = get_path(item, col.source)
            if isinstance(value, str):
                put_path(item, col.source, value.lower())

    def bad_kind(self, parent: tuple[int, ...]) -> str | None:
        """The ``bad_records`` defect of the leaf list under ``parent``, if it has one: the
        first non-empty reachable leaf lists in crawl order get one kind each."""
        if not self.config.bad_records:
            return None
        if self._bad is None:
            bad: dict[tuple[int, ...], str] = {}  # built whole, then published: pages run in threads
            kinds = iter(self._bad_kinds())
            for path in self._reachable_leaf_parents():
                if not self.row_count(path):
                    continue
                kind = next(kinds, None)
                if kind is None:
                    break
                bad[path] = kind
            self._bad = bad
        return self._bad.get(parent)

    def bad_record_lists(self) -> dict[tuple[str, ...], str]:
        """Id path of each leaf list's parent -> its ``bad_records`` kind (see BAD_ROW_KINDS)."""
        self.bad_kind(())
        return {self.id_path(path): kind for path, kind in (self._bad or {}).items()}

    def id_path(self, path: tuple[int, ...]) -> tuple[str, ...]:
        """The ids of the unit at an index path and of those above it, top first."""
        return tuple(self.unit_id(d, self.unit(path[: d + 1])) for d in range(len(path)))

    def _reachable_leaf_parents(self) -> Iterator[tuple[int, ...]]:
        """Index paths of the leaf lists a crawl reaches (no not-found or looping unit above)."""
        loops = self._loop_paths()

        def walk(parent: tuple[int, ...]) -> Iterator[tuple[int, ...]]:
            if len(parent) == self._depth:
                yield parent
                return
            for i, item in enumerate(self._unit_list(parent)[0]):
                path = (*parent, i)
                if not self._stops(len(parent), item) and path not in loops:
                    yield from walk(path)

        return walk(())

    def loop_units(self) -> list[tuple[int, ...]]:
        """Index paths of the units whose child list loops under ``cursor_loop``: those named
        in ``cursor_loop_ids``, else the first leaf list's parent in crawl order."""
        c = self.config
        if c.cursor_loop is None:
            return []
        if not c.cursor_loop_ids:
            first = next(self._all_units(self._depth), None)
            return [] if first is None else [first]
        return [
            path
            for d in range(self._depth)
            for path in self._all_units(d + 1)
            if self.unit_id(d, self.unit(path)) in c.cursor_loop_ids
        ]

    def _all_units(self, length: int) -> Iterator[tuple[int, ...]]:
        """Every unit index path of this length, in crawl order."""

        def walk(parent: tuple[int, ...]) -> Iterator[tuple[int, ...]]:
            for path in self.children(parent):
                if len(path) == length:
                    yield path
                else:
                    yield from walk(path)

        return walk(())

    def _loop_paths(self) -> frozenset[tuple[int, ...]]:
        if self._loops is None:
            self._loops = frozenset(self.loop_units())
        return self._loops

    def loops(self, parent: tuple[int, ...]) -> bool:
        """Whether the list below the unit at ``parent`` never ends (``cursor_loop``)."""
        return self.config.cursor_loop is not None and parent in self._loop_paths()

    def _value(self, col: Column, rnd: Any, j: int) -> tuple[Any, Any]:
        """One served value of the column's type and its truth."""
        kind = col.type
        if kind == "string":
            words = _AWKWARD_WORDS if self.config.awkward_ids or rnd() < 0.2 else _WORDS
            text = f"{words[int(rnd() * len(words))]} {j}"
            return text, text
        if kind == "int64":
            r = rnd()
            n = 2**62 + int(rnd() * 1e6) if r < 0.05 else -int(rnd() * 1e9) if r < 0.15 else int(rnd() * 1e5)
            return n, n
        if kind == "double":
            if rnd() < 0.1:
                n = int(rnd() * 1000)
                return n, float(n)
            x = (int(rnd() * 2_000_000) - 1_000_000) / 1000
            return x, x
        if kind == "boolean":
            b = rnd() < 0.5
            return b, b
        if kind == "timestamp":
            micros = int(rnd() * 20_000) * 300_000_000
            r = rnd()
            if r < 0.2:
                micros += int(rnd() * 1000) * 1000
            elif r < 0.3:
                micros += int(rnd() * 1_000_000)
            moment = _TS_BASE + timedelta(microseconds=micros)
            minutes, suffix = _OFFSETS[int(rnd() * len(_OFFSETS))]
            local = moment + timedelta(minutes=minutes)
            text = local.strftime("%Y-%m-%dT%H:%M:%S")
            if local.microsecond % 1000 == 0 and local.microsecond:
                text += f".{local.microsecond // 1000:03d}"
            elif local.microsecond:
                text += f".{local.microsecond:06d}"
            return text + suffix, (moment - _EPOCH) // timedelta(microseconds=1)
        if kind == "date":
            day = (_TS_BASE + timedelta(days=int(rnd() * 4000) - 3000)).date().isoformat()
            return day, day
        # json: any JSON value
        choices: tuple[Any, ...] = (
            {"k": j, "tags": ["a", "b"]},
            [j, "x", True],
            f"note {j}",
            j,
            False,
            {"nested": {"deep": None, "n": [1, 2]}},
            {"ü": "ß", "a": 1},
        )
        doc = choices[int(rnd() * len(choices))]
        return doc, canonical_json(doc)

    # ---- the truth of a whole crawl ------------------------------------------------------

    def _stops(self, d: int, item: dict[str, Any]) -> bool:
        return self.unit_id(d, item) in self.config.not_found_ids

    def expected_failures(self) -> dict[tuple[str, ...], str]:
        """Units a correct crawler must fail, as id path -> reason: "not_found" (an id in
        ``not_found_ids``: its child list answers 404), "cursor_loop" (its child list never
        ends) or "bad_records:<kind>" (its leaf list holds an item that breaks the
        description). Nothing below a failed unit is listed again."""
        out: dict[tuple[str, ...], str] = {}
        loops = self._loop_paths() if self.config.cursor_loop is not None else frozenset()

        def walk(parent: tuple[int, ...], ids: tuple[str, ...]) -> None:
            d = len(parent)
            for i, item in enumerate(self._unit_list(parent)[0]):
                uid, path = self.unit_id(d, item), (*parent, i)
                kind = self.bad_kind(path) if d + 1 == self._depth else None
                if uid in self.config.not_found_ids:
                    out[(*ids, uid)] = "not_found"
                elif path in loops:
                    out[(*ids, uid)] = "cursor_loop"
                elif kind is not None and not BAD_ROW_KINDS[kind]:
                    out[(*ids, uid)] = f"bad_records:{kind}"
                elif d + 1 < self._depth:
                    walk(path, (*ids, uid))

        walk((), ())
        return out

    def expected_rows(self, first_ids: Iterable[str | int] | None = None) -> Iterator[Row]:
        """Every row a correct crawl writes, in crawl order, in ``column_names()`` order
        without run_id and fetched_at; only below ``first_ids`` (a manifest's chosen
        first-level ids) if given. Units in ``not_found_ids`` give no rows."""
        chosen = None if first_ids is None else {id_text(x) for x in first_ids}

        def walk(parent: tuple[int, ...], head: tuple[Any, ...]) -> Iterator[Row]:
            d = len(parent)
            if d == self._depth:
                kind = self.bad_kind(parent)
                if kind is None or BAD_ROW_KINDS[kind]:
                    for truth in self.leaf(parent)[1]:
                        yield (*head, *truth)
                return
            for i, item in enumerate(self._unit_list(parent)[0]):
                uid = self.unit_id(d, item)
                if self._stops(d, item) or (d == 0 and chosen is not None and uid not in chosen):
                    continue
                if self.loops((*parent, i)):
                    continue
                yield from walk((*parent, i), (*head, uid, *self.carried(d, item)))

        return walk((), ())

    def expected_calls(self, page_size: int | None = None) -> int:
        """List calls a complete crawl makes: per list, its pages in the level's style with
        the description's page size (``page_size`` overrides it). Cursor, next-URL and Link
        lists cost ceil(n / size) pages, at least one; offset and page-number lists without
        a total also ask for the empty page after a full last one; a single page is one call.
        A unit in ``not_found_ids`` costs one call (the 404) and nothing below it; so does a
        looping list (``cursor_loop``: its first page only)."""

        def pages(d: int, n: int) -> int:
            pag = self.api.levels[d].pagination
            if pag.type == "single_page":
                return 1
            ps = page_size or pag.page_size or self.config.default_page_size
            if pag.type in ("offset", "page_number") and pag.total is None:
                return n // ps + 1
            return max(1, -(-n // ps))

        def walk(parent: tuple[int, ...]) -> int:
            d = len(parent)
            if d == self._depth:
                return pages(d, self.row_count(parent))
            items = self._unit_list(parent)[0]
            calls = pages(d, len(items))
            for i, item in enumerate(items):
                stops = self._stops(d, item) or self.loops((*parent, i))
                calls += 1 if stops else walk((*parent, i))
            return calls

        return walk(())
