"""Records the contract does not allow fail their one data group (BadRecord, permanent), with a
message naming the field, the record's page and position, and the list URL; records it does
allow (lower-case ``t``/``z``, offsets) are yielded in a form the Parquet output reads.

A body that is not JSON at all, or not the page shape, stays transient (a glitch).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pytest

from fanout_core.errors import BadRecord, PermanentError, TransientError
from fanout_core.hermes import HermesClient
from fanout_core.output import read_parquet_bytes, records_to_parquet

from .raw_http import Conn, Request, always, servers

serve = pytest.fixture(servers)
GOOD = {"ts": "2026-11-27T08:00:00Z", "metric": "m", "value": 1.5, "unit": "ms"}
GOOD_JSON = json.dumps(GOOD)
URL_PATH = "/v1/warriors/w/troops/t/data_groups/g/data"


def client(url: str, **options: object) -> HermesClient:
    options.setdefault("max_retries", 0)
    options.setdefault("sleep", lambda _s: None)
    return HermesClient(url, "tok", **options)  # type: ignore[arg-type]


def two_pages(bad_record_json: str) -> Any:
    """Page 1: three good records; page 2: two good ones, then the record under test."""

    def reply(request: Request, conn: Conn) -> None:
        if "page_token" not in request.target:
            body = f'{{"items": [{GOOD_JSON}, {GOOD_JSON}, {GOOD_JSON}], "next_page_token": "p2"}}'
        else:
            body = f'{{"items": [{GOOD_JSON}, {GOOD_JSON}, {bad_record_json}], "next_page_token": null}}'
        conn.reply(200, body.encode())

    return reply


def record_json(**fields: str) -> str:
    """GOOD with some fields replaced by raw JSON text (``"-"`` drops the field)."""
    raw = {name: json.dumps(value) for name, value in GOOD.items()}
    for name, text in fields.items():
        if text == "-":
            raw.pop(name)
        else:
            raw[name] = text
    return "{" + ", ".join(f'"{name}": {text}' for name, text in raw.items()) + "}"


def fetch(server_url: str, **options: object) -> list[dict[str, Any]]:
    options.setdefault("page_size", 3)
    return list(client(server_url, **options).list("records", ("w", "t", "g")))


BAD_RECORDS = [
    # value: not a finite number (or null), or absent
    pytest.param(record_json(value="1" + "0" * 400), "value", "too large for a float", id="int-10**400"),
    pytest.param(record_json(value="1e400"), "value", "too large for a float", id="float-1e400"),
    pytest.param(record_json(value="-1e400"), "value", "too large for a float", id="float--1e400"),
    pytest.param(record_json(value="NaN"), "value", "NaN, which JSON does not allow", id="NaN"),
    pytest.param(
        record_json(value="Infinity"), "value", "Infinity, which JSON does not allow", id="Infinity"
    ),
    pytest.param(record_json(value="-Infinity"), "value", "-Infinity, which JSON", id="-Infinity"),
    pytest.param(record_json(value='"1.5"'), "value", "not a number", id="value-string"),
    pytest.param(record_json(value="true"), "value", "not a number", id="value-bool"),
    pytest.param(record_json(value="[1]"), "value", "not a number", id="value-list"),
    pytest.param(record_json(value="-"), "value", "missing", id="value-missing"),
    # ts: not an RFC 3339 date-time
    pytest.param(record_json(ts='"2026-11-27"'), "ts", "not an RFC 3339", id="date-only"),
    pytest.param(record_json(ts='"2026-11-27 08:00:00Z"'), "ts", "not an RFC 3339", id="space"),
    pytest.param(record_json(ts='"2026-11-27T08:00:00"'), "ts", "not an RFC 3339", id="no-offset"),
    pytest.param(record_json(ts='"2026-11-27T08:00Z"'), "ts", "not an RFC 3339", id="no-seconds"),
    pytest.param(record_json(ts='"2026-11-27T08:00:00+2:00"'), "ts", "not an RFC 3339", id="short-offset"),
    pytest.param(record_json(ts='"2026-11-27T08:00:00+0200"'), "ts", "not an RFC 3339", id="offset-no-colon"),
    pytest.param(record_json(ts='"2026-11-27T08:00:00.Z"'), "ts", "not an RFC 3339", id="empty-fraction"),
    pytest.param(record_json(ts='"26-11-27T08:00:00Z"'), "ts", "not an RFC 3339", id="two-digit-year"),
    pytest.param(
        record_json(ts='"\\uff12026-11-27T08:00:00Z"'), "ts", "not an RFC 3339", id="fullwidth-digit"
    ),
    pytest.param(record_json(ts='"2026-13-01T00:00:00Z"'), "ts", "no such date", id="month-13"),
    pytest.param(record_json(ts='"2026-02-29T00:00:00Z"'), "ts", "no such date", id="feb-29-2026"),
    pytest.param(record_json(ts='"2026-04-31T00:00:00Z"'), "ts", "no such date", id="april-31"),
    pytest.param(record_json(ts='"2026-11-27T24:00:00Z"'), "ts", "no such time", id="hour-24"),
    pytest.param(record_json(ts='"2026-11-27T08:60:00Z"'), "ts", "no such time", id="minute-60"),
    pytest.param(record_json(ts='"2026-11-27T08:00:00+24:00"'), "ts", "no such offset", id="offset-24"),
    pytest.param(record_json(ts='"2016-12-31T23:59:60Z"'), "ts", "leap second", id="leap-second"),
    pytest.param(record_json(ts='"0000-01-01T00:00:00Z"'), "ts", "no such date", id="year-0"),
    pytest.param(record_json(ts='"9999-12-31T23:59:59-01:00"'), "ts", "years 0001 to 9999", id="past-9999"),
    pytest.param(record_json(ts='"0001-01-01T00:00:00+01:00"'), "ts", "years 0001 to 9999", id="before-0001"),
    pytest.param(record_json(ts="1764230400"), "ts", "not a string", id="ts-number"),
    pytest.param(record_json(ts="null"), "ts", "not a string", id="ts-null"),
    pytest.param(record_json(ts="-"), "ts", "missing", id="ts-missing"),
    # metric and unit
    pytest.param(record_json(metric="-"), "metric", "missing", id="metric-missing"),
    pytest.param(record_json(metric="null"), "metric", "not a string", id="metric-null"),
    pytest.param(record_json(metric="5"), "metric", "not a string", id="metric-number"),
    pytest.param(record_json(unit="5"), "unit", "neither a string nor null", id="unit-number"),
    pytest.param(record_json(unit="NaN"), "unit", "neither a string nor null", id="unit-NaN"),
]


@pytest.mark.parametrize(("record", "field", "reason"), BAD_RECORDS)
def test_a_record_the_contract_does_not_allow_is_permanent_and_says_where(
    serve, record: str, field: str, reason: str
) -> None:
    server = serve(two_pages(record))
    with pytest.raises(BadRecord) as info:
        fetch(server.url)
    message = str(info.value)
    assert isinstance(info.value, PermanentError) and info.value.status == 200
    assert f"'{field}'" in message and reason in message
    assert f"{server.url}{URL_PATH}" in message
    assert "page 2, record 3 of 3" in message
    assert len(server.requests) == 2  # not retried


def test_a_record_that_is_not_an_object_is_permanent(serve) -> None:
    server = serve(two_pages('"2026-11-27T08:00:00Z"'))
    with pytest.raises(BadRecord, match="page 2, record 3 of 3: the record is not an object"):
        fetch(server.url)


def test_nan_outside_the_contract_fields_of_a_record_is_permanent(serve) -> None:
    server = serve(two_pages(record_json(extra="NaN")))
    with pytest.raises(BadRecord, match="NaN or Infinity, which JSON does not allow"):
        fetch(server.url)


def test_nan_in_a_warrior_page_is_not_accepted_silently(serve) -> None:
    server = serve(
        always(200, b'{"items": [{"warrior_id": "w", "name": "n", "x": NaN}], "next_page_token": null}')
    )
    with pytest.raises(TransientError, match="NaN or Infinity"):
        list(client(server.url).list("warriors", ()))


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"<html>502</html>", id="not-json"),
        pytest.param(b'{"items": {}, "next_page_token": null}', id="items-not-a-list"),
        pytest.param(b'{"items": []}', id="no-token"),
        pytest.param(b'{"items": [], "next_page_token": NaN}', id="NaN-token"),
    ],
)
def test_a_record_page_that_is_not_json_or_not_a_page_stays_transient(serve, body: bytes) -> None:
    server = serve(always(200, body))
    with pytest.raises(TransientError) as info:
        fetch(server.url)
    assert not isinstance(info.value, PermanentError) and info.value.status == 200


def test_a_bad_record_message_stays_short(serve) -> None:
    server = serve(two_pages(record_json(metric=json.dumps(["x" * 10_000]))))
    with pytest.raises(BadRecord) as info:
        fetch(server.url)
    assert len(str(info.value)) < 400


# --- records the contract allows ---------------------------------------------------------------

GOOD_TS = [
    ("2026-11-27T08:00:00Z", "2026-11-27T08:00:00Z", datetime(2026, 11, 27, 8, tzinfo=UTC)),
    ("2026-11-27t08:00:00z", "2026-11-27T08:00:00Z", datetime(2026, 11, 27, 8, tzinfo=UTC)),
    ("2026-11-27t10:00:00+02:00", "2026-11-27T10:00:00+02:00", datetime(2026, 11, 27, 8, tzinfo=UTC)),
    ("2026-11-27T03:30:00-04:30", "2026-11-27T03:30:00-04:30", datetime(2026, 11, 27, 8, tzinfo=UTC)),
    ("2026-11-27T08:00:00-00:00", "2026-11-27T08:00:00-00:00", datetime(2026, 11, 27, 8, tzinfo=UTC)),
    (
        "2026-11-27T08:00:00.123456789Z",
        "2026-11-27T08:00:00.123456Z",  # the output keeps microseconds
        datetime(2026, 11, 27, 8, 0, 0, 123456, tzinfo=UTC),
    ),
    (
        "2024-02-29T23:59:59.5z",
        "2024-02-29T23:59:59.5Z",
        datetime(2024, 2, 29, 23, 59, 59, 500000, tzinfo=UTC),
    ),
    (
        "2026-11-27t08:00:00.1234567-01:00",
        "2026-11-27T08:00:00.123456-01:00",
        datetime(2026, 11, 27, 9, 0, 0, 123456, tzinfo=UTC),
    ),
    ("2026-01-31T00:00:00Z", "2026-01-31T00:00:00Z", datetime(2026, 1, 31, tzinfo=UTC)),
    ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00Z", datetime(1, 1, 1, tzinfo=UTC)),
    ("9999-12-31T23:59:59Z", "9999-12-31T23:59:59Z", datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)),
]


def test_every_rfc_3339_form_is_yielded_so_the_parquet_output_reads_it(serve) -> None:
    items = [{"ts": ts, "metric": "m", "value": i} for i, (ts, _, _) in enumerate(GOOD_TS)]
    server = serve(always(200, json.dumps({"items": items, "next_page_token": None}).encode()))
    got = fetch(server.url, page_size=100)
    assert [r["ts"] for r in got] == [yielded for _, yielded, _ in GOOD_TS]
    body, rows = records_to_parquet(
        run_id="r",
        warrior_id="w",
        troop_id="t",
        service="s",
        groups=[("g", got)],
        fetched_at=datetime(2026, 11, 28, tzinfo=UTC),
    )
    frame = read_parquet_bytes(body)
    assert rows == len(GOOD_TS)
    assert list(frame["ts"]) == [pd.Timestamp(instant) for _, _, instant in GOOD_TS]


@pytest.mark.parametrize(
    "record",
    [
        {"ts": "2026-11-27T08:00:00Z", "metric": "m", "value": None},
        {"ts": "2026-11-27T08:00:00Z", "metric": "m", "value": None, "unit": None},
        {"ts": "2026-11-27T08:00:00Z", "metric": "", "value": 0, "unit": ""},
        {"ts": "2026-11-27T08:00:00Z", "metric": "m", "value": -(10**300), "unit": "B"},
        {"ts": "2026-11-27T08:00:00Z", "metric": "m", "value": 1.7976931348623157e308, "extra": [1]},
    ],
)
def test_a_record_the_contract_allows_is_yielded_unchanged(serve, record: dict[str, Any]) -> None:
    server = serve(always(200, json.dumps({"items": [record], "next_page_token": None}).encode()))
    assert fetch(server.url) == [record]


def test_output_reads_lower_case_t_and_z_given_directly() -> None:
    body, _ = records_to_parquet(
        run_id="r",
        warrior_id="w",
        troop_id="t",
        service="s",
        groups=[("g", [{"ts": "2026-11-27t08:00:00z", "metric": "m", "value": 1.0, "unit": None}])],
        fetched_at=datetime(2026, 11, 28, tzinfo=UTC),
    )
    assert list(read_parquet_bytes(body)["ts"]) == [pd.Timestamp("2026-11-27T08:00:00Z")]


# --- identifiers in listings -------------------------------------------------------------------


@pytest.mark.parametrize("ident", ["a\nb", "a\x00b", "a\x7fb", "a\x85b", "a\ud800b"])
def test_an_identifier_with_a_control_character_or_lone_surrogate_is_permanent(serve, ident: str) -> None:
    body = json.dumps({"items": [{"troop_id": ident, "service": "s"}], "next_page_token": None}).encode()
    server = serve(always(200, body))
    with pytest.raises(PermanentError, match="breaks the contract"):
        list(client(server.url).list("troops", ("w",)))
