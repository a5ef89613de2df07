"""Leaf items become rows per the description's columns: each type accepted and converted or
refused with a BadRecord naming the field and the record's place; nullable and required;
nested sources; extra fields kept, dropped or refused."""

from __future__ import annotations

from typing import Any

import pytest

from fanout_core.api_description import Column, ColumnType, Rows
from fanout_core.errors import BadRecord
from fanout_core.pages import decode_page
from fanout_core.rows import RowChecker


def one(kind: ColumnType, *, nullable: bool = False, required: bool = True, source: str = "f") -> Rows:
    return Rows((Column("c", kind, tuple(source.split(".")), nullable=nullable, required=required),))


def check(rows: Rows, *items: Any) -> list[dict[str, Any]]:
    return RowChecker(rows).check(list(items), "http://h/x", 1, repr)


GOOD: dict[str, Any] = {
    "string": "s",
    "int64": 1,
    "double": 1.5,
    "boolean": True,
    "timestamp": "2026-11-27T08:00:00Z",
    "date": "2026-11-27",
    "json": {},
}


def refused(rows: Rows, item: Any) -> str:
    """The message refusing ``item`` as the second record of a page whose first is good."""
    col = rows.columns[0]
    good: dict[str, Any] = {"a": 1, "customer": {"name": "x"}}
    if len(rows.columns) == 1:
        good = {col.source[0]: GOOD[col.type]} if len(col.source) == 1 else {"customer": {"name": "x"}}
    assert check(rows, dict(good))
    with pytest.raises(BadRecord) as info:
        check(rows, dict(good), item)
    message = str(info.value)
    assert message.startswith("http://h/x: page 1, record 2 of 2: ")
    return message


ACCEPTED = [
    ("string", "text", "text"),
    ("int64", 2**63 - 1, 2**63 - 1),
    ("int64", -(2**63), -(2**63)),
    ("double", 1.5, 1.5),
    ("double", 3, 3),
    ("boolean", False, False),
    ("timestamp", "2026-11-27T08:00:00Z", "2026-11-27T08:00:00Z"),
    ("timestamp", "2026-11-27t08:00:00.1234567z", "2026-11-27T08:00:00.123456Z"),
    ("date", "2024-02-29", "2024-02-29"),
    ("json", {"b": [1, None], "a": "é"}, '{"a":"é","b":[1,null]}'),
    ("json", "x", '"x"'),
]


@pytest.mark.parametrize(("kind", "value", "stored"), ACCEPTED)
def test_a_valid_value_of_each_type_is_stored_converted(kind: ColumnType, value: Any, stored: Any) -> None:
    assert check(one(kind), {"f": value}) == [{"c": stored}]


REFUSED = [
    ("string", 5, "not a string"),
    ("int64", 1.0, "not an integer"),
    ("int64", True, "not an integer"),
    ("int64", 2**63, "outside 64 bits"),
    ("double", "1.5", "not a number"),
    ("double", 10**400, "too large for a float"),
    ("boolean", 1, "not true or false"),
    ("boolean", "true", "not true or false"),
    ("timestamp", "2026-11-27", "not an RFC 3339"),
    ("timestamp", "2026-02-30T00:00:00Z", "no such date"),
    ("date", "2026-11-27T00:00:00Z", "not a date"),
    ("date", "2026-02-30", "no such date"),
    ("date", 20261127, "not a date"),
]


@pytest.mark.parametrize(("kind", "value", "reason"), REFUSED)
def test_a_value_breaking_its_type_is_refused_naming_field_and_place(
    kind: ColumnType, value: Any, reason: str
) -> None:
    message = refused(one(kind), {"f": value})
    assert message.startswith("http://h/x: page 1, record 2 of 2: 'f' is ") and reason in message


@pytest.mark.parametrize("kind", ["double", "json"])
def test_nan_is_refused_where_a_number_or_any_json_may_stand(kind: ColumnType) -> None:
    item = decode_page(b'{"f": NaN}')
    message = refused(one(kind), item)
    assert "'f'" in message and "NaN" in message


@pytest.mark.parametrize("kind", ["string", "int64", "double", "boolean", "timestamp", "date", "json"])
def test_null_is_refused_unless_nullable(kind: ColumnType) -> None:
    assert "'f' is None" in refused(one(kind), {"f": None})
    assert check(one(kind, nullable=True), {"f": None}) == [{"c": None}]


def test_an_absent_required_field_is_refused() -> None:
    assert "'f' is missing" in refused(one("string"), {"g": 1})
    assert "'f' is missing (it is required" in refused(one("string", nullable=True), {"g": 1})


def test_an_absent_optional_field_is_null() -> None:
    assert check(one("int64", nullable=True, required=False), {"g": 1}) == [{"c": None}]


def test_a_nested_source_is_read_at_its_dotted_path() -> None:
    rows = one("string", source="customer.name")
    assert check(rows, {"customer": {"name": "Ann", "age": 3}}) == [{"c": "Ann"}]
    assert "'customer.name' is missing" in refused(rows, {"customer": "Ann"})


def two_columns(extra: str) -> Rows:
    return Rows(
        (Column("a", "int64", ("a",)), Column("who", "string", ("customer", "name"))),
        extra,  # type: ignore[arg-type]
        "rest",
    )


def test_extra_keep_stores_the_unnamed_fields_as_one_json_object() -> None:
    rows = two_columns("keep")
    got = check(
        rows, {"a": 1, "customer": {"name": "x"}, "z": [1], "b": None}, {"a": 2, "customer": {"name": "y"}}
    )
    assert got == [{"a": 1, "who": "x", "rest": '{"b":null,"z":[1]}'}, {"a": 2, "who": "y", "rest": None}]


def test_extra_drop_ignores_the_unnamed_fields() -> None:
    assert check(two_columns("drop"), {"a": 1, "customer": {"name": "x"}, "z": 0}) == [{"a": 1, "who": "x"}]


def test_extra_refuse_fails_the_record_naming_the_field() -> None:
    message = refused(two_columns("refuse"), {"a": 1, "customer": {"name": "x"}, "zz": 0})
    assert "record 2 of 2: 'zz' is a field no column reads" in message


def test_a_record_that_is_not_an_object_is_refused_for_any_shape() -> None:
    for rows in (one("string"), two_columns("keep")):
        assert "record 2 of 2: the record is not an object" in refused(rows, ["f"])
