"""The output rows of a described API: every leaf item checked and converted per column.

A description's ``rows`` (``api_description.Rows``) is compiled once into a ``RowChecker``:
per column a converter that says what is wrong (a BadRecord naming the field, the page and
the record's position) or hands back the value the Parquet writer stores. The usual record
costs a few type checks and, per timestamp, one regex match (1.2 M records a Hermes run):
the converters only run for what needs a closer look.

Column types (the contract): ``string``; ``int64`` (a JSON integer, not a bool, in 64 bits);
``double`` (a finite number; an integer is accepted if a float holds it); ``boolean``;
``timestamp`` (RFC 3339, normalised to upper-case ``T``/``Z`` and at most 6 fractional
digits, in the years 0001-9999 in UTC); ``date`` (``YYYY-MM-DD``); ``json`` (any JSON value,
kept as canonical JSON text). ``nullable``: null allowed; ``required``: the field must be
present (absent and not required: null). ``extra``: the item's other top-level fields kept
as one canonical JSON object (null if none), dropped, or refused.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any, cast

from fanout_core.api_description import Column, Rows
from fanout_core.errors import BadRecord
from fanout_core.pages import NonJSONConstant

Preview = Callable[[Any], str]

# RFC 3339 date-time (section 5.6), ASCII digits only. The fast pattern takes the usual
# upper-case form whose every field is in range whatever the month; anything else
# (days 29-31, years 0001 and 9999 that an offset may push out of range, lower-case
# "t"/"z", more than 6 fractional digits, mistakes) goes to check_timestamp, which says what
# is wrong or normalises it.
TS_FAST = re.compile(
    r"(?!0000|0001|9999)[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])"
    r"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?"
    r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
).fullmatch
_TS_SYNTAX = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))"
).fullmatch
_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})").fullmatch
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


class Bad(Exception):
    """What is wrong with one field of one record (the caller adds where)."""


MISSING: Any = object()
"""An absent field (``dict.get``'s default): told apart from null."""


def canonical_json(value: Any) -> str:
    """One JSON value as canonical text (sorted keys, no spaces, UTF-8 kept)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def check_timestamp(ts: Any, field: str, preview: Preview) -> str:
    """``ts`` as stored, or Bad saying why it is not RFC 3339 (or cannot be stored).

    Yielded in the form the Parquet output reads: upper-case ``T`` and ``Z`` (pandas
    refuses lower case) and at most 6 fractional digits (the output keeps microseconds;
    a nanosecond value beside year 0001 would make pandas fail the whole column).
    """
    name = f"'{field}'"
    if ts is MISSING:
        raise Bad(f"{name} is missing")
    if type(ts) is not str:
        raise Bad(f"{name} is {preview(ts)}, not a string")
    m = _TS_SYNTAX(ts)
    if m is None:
        raise Bad(f"{name} is {preview(ts)}, not an RFC 3339 date-time such as 2026-11-27T08:00:00Z")
    year, month, day, hour, minute, second = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    try:
        day_start = datetime(year, month, day)
    except ValueError:
        raise Bad(f"{name} is {preview(ts)}: there is no such date") from None
    if second == 60 and hour < 24 and minute < 60:
        raise Bad(f"{name} is {preview(ts)}: a leap second, which the output's timestamps cannot hold")
    if hour > 23 or minute > 59 or second > 59:
        raise Bad(f"{name} is {preview(ts)}: there is no such time of day")
    offset = timedelta()
    if m.group(8) is not None:
        off_hours, off_minutes = int(m.group(9)), int(m.group(10))
        if off_hours > 23 or off_minutes > 59:
            raise Bad(f"{name} is {preview(ts)}: there is no such offset from UTC")
        offset = timedelta(hours=off_hours, minutes=off_minutes) * (1 if m.group(8) == "+" else -1)
    try:
        # The instant in UTC must be one the output's timestamps hold.
        day_start.replace(hour=hour, minute=minute, second=second, tzinfo=UTC) - offset
    except OverflowError:
        raise Bad(f"{name} is {preview(ts)}, outside the years 0001 to 9999 in UTC") from None
    fraction = m.group(7)
    if fraction is not None and len(fraction) > 6:
        ts = ts[: m.start(7) + 6] + ts[m.end(7) :]
    return ts.upper()


def _absent(col: Column, field: str) -> Any:
    if col.required:
        raise Bad(
            f"'{field}' is missing (it is required; null stands for no value)"
            if col.nullable
            else f"'{field}' is missing"
        )
    return None


def converter(col: Column) -> Callable[[Any, Preview], Any]:
    """The full check of one column's value: the value to store, or Bad saying what is wrong."""
    field = ".".join(col.source)
    name = f"'{field}'"
    kind = col.type

    def not_a(value: Any, what: str, preview: Preview) -> Bad:
        said = f"neither {what} nor null" if col.nullable else f"not {what}"
        return Bad(f"{name} is {preview(value)}, {said}")

    def convert(value: Any, preview: Preview) -> Any:
        if value is MISSING:
            return _absent(col, field)
        if value is None:
            if col.nullable:
                return None
            if kind == "timestamp":
                return check_timestamp(value, field, preview)
            if kind == "json":
                raise Bad(f"{name} is None, and the column is not nullable")
        if kind == "string":
            if type(value) is not str:
                raise not_a(value, "a string", preview)
            return value
        if kind == "timestamp":
            return value if type(value) is str and TS_FAST(value) else check_timestamp(value, field, preview)
        if kind == "double":
            t = type(value)
            if t is float:
                if value - value != 0.0:  # inf, from a literal such as 1e400
                    raise Bad(f"{name} is {preview(value)}: a number too large for a float")
                return value
            if t is int:
                try:
                    float(value)
                except OverflowError:
                    raise Bad(
                        f"{name} is an integer of {len(str(abs(value)))} digits, too large for a float"
                    ) from None
                return value
            if t is NonJSONConstant:
                raise Bad(
                    f"{name} is {value!r}, which JSON does not allow (the contract wants a finite number"
                    f"{' or null' if col.nullable else ''})"
                )
            raise Bad(f"{name} is {preview(value)}, not a number{' or null' if col.nullable else ''}")
        if kind == "int64":
            if type(value) is not int:
                raise not_a(value, "an integer", preview)
            if not _INT64_MIN <= value <= _INT64_MAX:
                raise Bad(f"{name} is an integer of {len(str(abs(value)))} digits, outside 64 bits")
            return value
        if kind == "boolean":
            if type(value) is not bool:
                raise not_a(value, "true or false", preview)
            return value
        if kind == "date":
            m = _DATE(value) if type(value) is str else None
            if m is None:
                raise not_a(value, "a date such as 2026-11-27", preview)
            try:
                date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
            except ValueError:
                raise Bad(f"{name} is {preview(value)}: there is no such date") from None
            return value
        # json: any JSON value, as canonical text
        try:
            return canonical_json(value)
        except (TypeError, ValueError):
            raise Bad(f"{name} holds a number JSON cannot carry (NaN, Infinity or too large)") from None

    return convert


# Per column type: the test (on ``v``) that sends a value to its full converter, and
# whether the converter's answer is written back (it may differ from what was read).
_SLOW_WHEN: dict[str, tuple[str, bool]] = {
    "string": ("type(v) is not str", False),
    "timestamp": ("type(v) is not str or TS_FAST(v) is None", True),
    "double": (
        "not (type(v) is float and v - v == 0.0 or type(v) is int and -FLOAT_INTS < v < FLOAT_INTS)",
        False,
    ),
    "int64": ("type(v) is not int or v < INT64_MIN or v > INT64_MAX", False),
    "boolean": ("type(v) is not bool", False),
    "date": ("True", False),
    "json": ("True", True),
}


def _in_place_checker(columns: tuple[Column, ...]) -> Callable[[list[Any], str, int, Preview], list[Any]]:
    """One page's check, compiled for these columns: the usual record runs a type test and
    (for a timestamp) one regex match per column inline, as the hand-written Hermes check
    did; a loop over the columns with a call each cost half as much again per record.
    Only column names (``[a-z][a-z0-9_]*``, checked at load) reach the source, as literals."""
    lines = [
        "def check(items, url, page_no, preview):",
        "  i = 0",
        "  try:",
        "    for i, item in enumerate(items):",
        "        if type(item) is not dict:",
        "            raise Bad('the record is not an object')",
    ]
    for n, col in enumerate(columns):
        test, write_back = _SLOW_WHEN[col.type]
        if col.nullable:  # null passes untouched; absent and not required reads as null
            test = f"v is not None and ({test})"
        default = "" if col.nullable and not col.required else ", MISSING"
        lines += [f"        v = item.get({col.name!r}{default})", f"        if {test}:"]
        if write_back:
            lines.append(f"            item[{col.name!r}] = c{n}(v, preview)")
        else:
            lines.append(f"            c{n}(v, preview)")
    lines += [
        "  except Bad as exc:",
        "    raise BadRecord(f'{url}: page {page_no}, record {i + 1} of {len(items)}: {exc}') from None",
        "  return items",
    ]
    namespace: dict[str, Any] = {
        "Bad": Bad,
        "BadRecord": BadRecord,
        "MISSING": MISSING,
        "TS_FAST": TS_FAST,
        "INT64_MIN": _INT64_MIN,
        "INT64_MAX": _INT64_MAX,
        "FLOAT_INTS": 2**1023,  # an integer below this in size is a float too
        **{f"c{n}": converter(col) for n, col in enumerate(columns)},
    }
    exec(compile("\n".join(lines), "<rows check>", "exec"), namespace)
    return cast(Callable[[list[Any], str, int, Preview], list[Any]], namespace["check"])


def _dig(item: dict[str, Any], path: tuple[str, ...]) -> Any:
    """The value at a dotted path; MISSING where any step is absent or not an object."""
    value: Any = item
    for part in path:
        if type(value) is not dict:
            return MISSING
        value = value.get(part, MISSING)
        if value is MISSING:
            return MISSING
    return value


class RowChecker:
    """The rows of one description: ``check`` turns a page of leaf items into rows.

    When every column reads the item field of its own name and unnamed fields are dropped,
    an item is its own row (converted values written back in place, nothing copied): the
    Parquet writer reads only the columns, by name, and an absent optional field reads as
    null. Otherwise each row is a new dict of exactly the columns (and the extra column).
    """

    def __init__(self, rows: Rows):
        self.rows = rows
        self.columns = rows.columns
        self._convert = tuple(converter(c) for c in rows.columns)
        in_place = rows.extra == "drop" and all(c.source == (c.name,) for c in rows.columns)
        self._in_place = _in_place_checker(rows.columns) if in_place else None
        self._heads = frozenset(c.source[0] for c in rows.columns)

    def check(self, items: list[Any], url: str, page_no: int, preview: Preview) -> list[dict[str, Any]]:
        """The rows of one page; a BadRecord naming the field, the page and the position if
        a record breaks its columns."""
        if self._in_place is not None:
            return self._in_place(items, url, page_no, preview)
        i = 0
        try:
            out: list[dict[str, Any]] = []
            for i, item in enumerate(items):  # noqa: B007
                if type(item) is not dict:
                    raise Bad("the record is not an object")
                out.append(self._row(item, preview))
            return out
        except Bad as exc:
            raise BadRecord(f"{url}: page {page_no}, record {i + 1} of {len(items)}: {exc}") from None

    def _row(self, item: dict[str, Any], preview: Preview) -> dict[str, Any]:
        row = {
            col.name: convert(_dig(item, col.source), preview)
            for col, convert in zip(self.columns, self._convert, strict=True)
        }
        policy = self.rows.extra
        if policy != "drop":
            extra = {k: v for k, v in item.items() if k not in self._heads}
            if policy == "refuse" and extra:
                field = next(iter(extra))
                raise Bad(f"'{field}' is a field no column reads (the description refuses extra fields)")
            if policy == "keep":
                try:
                    row[self.rows.extra_column] = canonical_json(extra) if extra else None
                except (TypeError, ValueError):
                    raise Bad("an extra field holds a number JSON cannot carry") from None
        return row
