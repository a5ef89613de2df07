"""Hermes pages as the contract defines them: the page shape, the listings' required
fields and identifiers, every record's fields (a BadRecord naming the field and the
position), and JSON decoding that tells NaN and Infinity (not JSON) apart."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from fanout_core.errors import BadRecord, PermanentError, TransientError

_SCHEMAS: dict[str, dict[str, tuple[type, ...]]] = {
    "warrior": {"warrior_id": (str,), "name": (str,)},
    "troop": {"troop_id": (str,), "service": (str,)},
    "data_group": {"data_group_id": (str,), "name": (str,)},
}
"""Required fields of the listings (the identifier first); records are checked by _check_records."""
PREVIEW_CHARS = 80
"""How much of a bad value an error message shows."""


def error_message(body: bytes) -> str:
    try:
        doc = json.loads(body)
        return f" ({doc.get('error')}: {doc.get('message')})" if isinstance(doc, dict) else ""
    except ValueError:
        return ""


def validate_page(
    page: Any, kind: str, url: str, page_size: int, page_no: int, preview: Callable[[Any], str]
) -> tuple[list[dict[str, Any]], str | None]:
    """Check a page against the contract.

    A body that is not the page shape is transient (it may be a glitch); so is a broken
    warrior, troop or data group. A record the contract does not allow is a BadRecord
    (permanent: the list gives it again), naming the field, the page and the position.
    """
    if not isinstance(page, dict) or not isinstance(page.get("items"), list):
        raise TransientError(f"{url}: page is not an object with an items list", status=200)
    if "next_page_token" not in page:
        raise TransientError(f"{url}: page has no next_page_token", status=200)
    token = page["next_page_token"]
    if token is not None and (not isinstance(token, str) or not token):
        raise TransientError(f"{url}: next_page_token is neither null nor a string", status=200)
    items = page["items"]
    if len(items) > page_size:
        raise PermanentError(
            f"{url}: page holds {len(items)} items, more than the page_size {page_size} asked for",
            status=200,
        )
    if kind == "record":
        _check_records(items, url, page_no, preview)
        return items, token
    required = _SCHEMAS[kind]
    for item in items:
        if not isinstance(item, dict):
            raise TransientError(f"{url}: a {kind} item is not an object", status=200)
        for name, types in required.items():
            if name not in item or not isinstance(item[name], types) or isinstance(item[name], bool):
                raise TransientError(
                    f"{url}: a {kind} item has no valid {name!r}: {preview(item)}", status=200
                )
        ident = item[next(iter(required))]
        if not 1 <= len(ident) <= 128 or _BAD_ID_CHAR(ident) is not None:
            raise PermanentError(f"{url}: identifier {preview(ident)} breaks the contract", status=200)
    return items, token


# Control characters are Unicode's Cc (C0, DEL, C1); a lone surrogate is no character.
_BAD_ID_CHAR = re.compile("[/\x00-\x1f\x7f-\x9f\ud800-\udfff]").search

# RFC 3339 date-time (section 5.6), ASCII digits only. The fast pattern takes the usual
# upper-case form whose every field is in range whatever the month; anything else
# (days 29-31, years 0001 and 9999 that an offset may push out of range, lower-case
# "t"/"z", more than 6 fractional digits, mistakes) goes to _check_ts, which says what
# is wrong or normalises it.
_TS_FAST = re.compile(
    r"(?!0000|0001|9999)[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])"
    r"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?"
    r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
).fullmatch
_TS_SYNTAX = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))"
).fullmatch


class _Bad(Exception):
    """What is wrong with one field of one record (the caller adds where)."""


_MISSING: Any = object()


def _check_ts(ts: Any, preview: Callable[[Any], str]) -> str:
    """``ts`` as yielded, or _Bad saying why it is not RFC 3339 (or cannot be stored).

    Yielded in the form the Parquet output reads: upper-case ``T`` and ``Z`` (pandas
    refuses lower case) and at most 6 fractional digits (the output keeps microseconds;
    a nanosecond value beside year 0001 would make pandas fail the whole column).
    """
    if ts is _MISSING:
        raise _Bad("'ts' is missing")
    if type(ts) is not str:
        raise _Bad(f"'ts' is {preview(ts)}, not a string")
    m = _TS_SYNTAX(ts)
    if m is None:
        raise _Bad(f"'ts' is {preview(ts)}, not an RFC 3339 date-time such as 2026-11-27T08:00:00Z")
    year, month, day, hour, minute, second = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    try:
        date = datetime(year, month, day)
    except ValueError:
        raise _Bad(f"'ts' is {preview(ts)}: there is no such date") from None
    if second == 60 and hour < 24 and minute < 60:
        raise _Bad(f"'ts' is {preview(ts)}: a leap second, which the output's timestamps cannot hold")
    if hour > 23 or minute > 59 or second > 59:
        raise _Bad(f"'ts' is {preview(ts)}: there is no such time of day")
    offset = timedelta()
    if m.group(8) is not None:
        off_hours, off_minutes = int(m.group(9)), int(m.group(10))
        if off_hours > 23 or off_minutes > 59:
            raise _Bad(f"'ts' is {preview(ts)}: there is no such offset from UTC")
        offset = timedelta(hours=off_hours, minutes=off_minutes) * (1 if m.group(8) == "+" else -1)
    try:
        # The instant in UTC must be one the output's timestamps hold.
        date.replace(hour=hour, minute=minute, second=second, tzinfo=UTC) - offset
    except OverflowError:
        raise _Bad(f"'ts' is {preview(ts)}, outside the years 0001 to 9999 in UTC") from None
    fraction = m.group(7)
    if fraction is not None and len(fraction) > 6:
        ts = ts[: m.start(7) + 6] + ts[m.end(7) :]
    return ts.upper()


def _check_value(value: Any, preview: Callable[[Any], str]) -> None:
    if value is _MISSING:
        raise _Bad("'value' is missing (it is required; null stands for no value)")
    if type(value) is _NonJSONConstant:
        raise _Bad(
            f"'value' is {value!r}, which JSON does not allow (the contract wants a finite number or null)"
        )
    if type(value) is float:  # inf, from a literal such as 1e400
        raise _Bad(f"'value' is {preview(value)}: a number too large for a float")
    if type(value) is int:
        raise _Bad(f"'value' is an integer of {len(str(abs(value)))} digits, too large for a float")
    raise _Bad(f"'value' is {preview(value)}, not a number or null")


def _check_records(items: list[Any], url: str, page_no: int, preview: Callable[[Any], str]) -> None:
    """Every record of one page, as the contract defines it; a BadRecord saying where if not.

    The usual record costs a few type checks and one regex match (1.2 M of them a run);
    the helpers only run for what needs a closer look.
    """
    i = 0
    try:
        for i, item in enumerate(items):  # noqa: B007 (i says where, in the message)
            if type(item) is not dict:
                raise _Bad("the record is not an object")
            ts = item.get("ts", _MISSING)
            if type(ts) is not str or _TS_FAST(ts) is None:
                item["ts"] = _check_ts(ts, preview)
            metric = item.get("metric", _MISSING)
            if type(metric) is not str:
                raise _Bad(
                    "'metric' is missing"
                    if metric is _MISSING
                    else f"'metric' is {preview(metric)}, not a string"
                )
            value = item.get("value", _MISSING)
            kind = type(value)
            if kind is float:
                if value - value != 0.0:  # inf or nan
                    _check_value(value, preview)
            elif kind is int:
                try:
                    float(value)
                except OverflowError:
                    _check_value(value, preview)
            elif value is not None:
                _check_value(value, preview)
            unit = item.get("unit")
            if unit is not None and type(unit) is not str:
                raise _Bad(f"'unit' is {preview(unit)}, neither a string nor null")
    except _Bad as exc:
        raise BadRecord(f"{url}: page {page_no}, record {i + 1} of {len(items)}: {exc}") from None


class _NonJSONConstant:
    """What the page parser makes of NaN, Infinity and -Infinity, which JSON does not allow
    (Python's json reads them as floats by default): a marker the checks refuse."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


_PAGE_DECODER = json.JSONDecoder(parse_constant=_NonJSONConstant)


def decode_page(body: bytes) -> Any:
    """``json.loads(body)``, except that NaN and Infinity become _NonJSONConstant markers."""
    return _PAGE_DECODER.decode(body.decode(json.detect_encoding(body), "surrogatepass"))


def holds_constant(doc: Any) -> bool:
    if type(doc) is _NonJSONConstant:
        return True
    if type(doc) is dict:
        return any(holds_constant(v) for v in doc.values())
    if type(doc) is list:
        return any(holds_constant(v) for v in doc)
    return False
