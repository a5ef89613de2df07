"""The Parquet writer builds its schema from the API description: Hermes' files keep exactly
the schema they had before descriptions existed, and every column type of another
description is written as its Parquet type (``date`` as the timestamp of its UTC midnight:
fastparquet writes no Parquet DATE)."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastparquet
import pandas as pd
import pytest

from fanout_core.api_description import ApiDescription, builtin, from_doc, load
from fanout_core.output import (
    COLUMNS,
    GLUE_TYPES,
    columns_for,
    glue_types,
    read_parquet_bytes,
    records_to_parquet,
    rows_to_parquet,
)

FIXTURES = Path(__file__).parents[1] / "fixtures"
BEFORE = FIXTURES / "parquet" / "hermes_written_before_descriptions.parquet"
"""Written by the writer before descriptions existed (commit b9b8af7) from exactly the
rows ``hermes_rows`` gives."""
FETCHED_AT = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
HERMES_COLUMNS = (
    "run_id",
    "warrior_id",
    "troop_id",
    "service",
    "data_group_id",
    "ts",
    "metric",
    "value",
    "unit",
    "fetched_at",
)


def rec(ts: str, metric: str, value: Any, unit: str | None = "ms") -> dict[str, Any]:
    return {"ts": ts, "metric": metric, "value": value, "unit": unit}


def hermes_groups() -> list[tuple[str, list[dict[str, Any]]]]:
    return [
        (
            "g-1",
            [
                rec("2026-11-27T08:00:00Z", "cpu", 1.5),
                rec("2026-11-27T09:00:00.123456+02:00", "mem", 7, None),
            ],
        ),
        ("g-2", []),
        ("g-3", [rec("2026-11-28T00:00:00Z", "cpu", None)]),
    ]


def schema_of(body: bytes) -> tuple[str, dict[str, str]]:
    pf = fastparquet.ParquetFile(io.BytesIO(body))
    return str(pf.schema), {name: str(dtype) for name, dtype in pf.dtypes.items()}


def test_hermes_columns_and_glue_types_are_those_before_descriptions() -> None:
    assert COLUMNS == columns_for(builtin()) == HERMES_COLUMNS
    assert glue_types(builtin()) == GLUE_TYPES
    assert {c: "string" for c in HERMES_COLUMNS} | {
        "ts": "timestamp",
        "value": "double",
        "fetched_at": "timestamp",
    } == GLUE_TYPES


def test_a_hermes_file_has_the_schema_and_rows_of_one_written_before_descriptions() -> None:
    before = BEFORE.read_bytes()
    after, rows = rows_to_parquet(
        builtin(),
        run_id="r1",
        columns={"warrior_id": "w-1", "troop_id": "t-1", "service": "svc"},
        groups=[({"data_group_id": g}, records) for g, records in hermes_groups()],
        fetched_at=FETCHED_AT,
        metadata={"fanout.failed_units": "[]"},
    )
    assert rows == 3
    assert schema_of(after) == schema_of(before)
    pd.testing.assert_frame_equal(read_parquet_bytes(after), read_parquet_bytes(before))


def test_the_transitional_keyword_writer_writes_the_same_file() -> None:
    after, _rows = records_to_parquet(
        run_id="r1",
        warrior_id="w-1",
        troop_id="t-1",
        service="svc",
        groups=hermes_groups(),
        fetched_at=FETCHED_AT,
        metadata={"fanout.failed_units": "[]"},
    )
    assert schema_of(after) == schema_of(BEFORE.read_bytes())
    pd.testing.assert_frame_equal(read_parquet_bytes(after), read_parquet_bytes(BEFORE.read_bytes()))


def shops() -> ApiDescription:
    return load(FIXTURES / "apis" / "two_level.yaml")


def sale(**changes: Any) -> dict[str, Any]:
    row = {
        "sale_id": 9_000_000_000,
        "sold_at": "2026-11-27T08:00:00Z",
        "amount": 12,
        "paid": True,
        "day": "2026-11-27",
        "note": None,
        "customer_name": "Ann",
        "meta": '{"a":1}',
        "extra": None,
    }
    return row | changes


def test_every_column_type_is_written_as_its_parquet_type() -> None:
    body, rows = rows_to_parquet(
        shops(),
        run_id="r1",
        columns={},
        groups=[({"shop_id": "7", "region": "eu"}, [sale(), sale(paid=False, note="n", extra='{"x":2}')])],
        fetched_at=FETCHED_AT,
    )
    frame = read_parquet_bytes(body)
    assert rows == 2 and tuple(frame.columns) == columns_for(shops())
    assert {c: str(t) for c, t in frame.dtypes.items()} == {
        "run_id": "object",
        "shop_id": "object",
        "region": "object",
        "sale_id": "int64",
        "sold_at": "datetime64[us, UTC]",
        "amount": "float64",
        "paid": "bool",
        "day": "datetime64[us, UTC]",
        "note": "object",
        "customer_name": "object",
        "meta": "object",
        "extra": "object",
        "fetched_at": "datetime64[us, UTC]",
    }
    first = frame.iloc[0]
    assert first["sale_id"] == 9_000_000_000 and first["amount"] == 12.0
    assert first["day"] == pd.Timestamp("2026-11-27T00:00:00Z")
    assert first["meta"] == '{"a":1}' and first["shop_id"] == "7" and first["region"] == "eu"
    assert frame["extra"].tolist() == [None, '{"x":2}']


def test_the_glue_types_of_a_description_follow_its_column_types() -> None:
    assert glue_types(shops()) == {
        "run_id": "string",
        "shop_id": "string",
        "region": "string",
        "sale_id": "bigint",
        "sold_at": "timestamp",
        "amount": "double",
        "paid": "boolean",
        "day": "timestamp",
        "note": "string",
        "customer_name": "string",
        "meta": "string",
        "extra": "string",
        "fetched_at": "timestamp",
    }


def nullable_api() -> ApiDescription:
    return from_doc(
        {
            "name": "n",
            "levels": [
                {"name": "units", "prefix": "units/", "path": "/units", "id": "id"},
                {"name": "items", "path": "/units/{units}/items"},
            ],
            "rows": {
                "columns": [
                    {"name": "count", "type": "int64", "nullable": True},
                    {"name": "ok", "type": "boolean", "nullable": True},
                ]
            },
        },
        source="<test>",
        lines={},
    )


def test_nullable_int64_and_boolean_columns_keep_their_nulls() -> None:
    body, _rows = rows_to_parquet(
        nullable_api(),
        run_id="r1",
        columns={},
        groups=[("u", [{"count": 3, "ok": None}, {"count": None, "ok": False}])],
        fetched_at=FETCHED_AT,
    )
    frame = read_parquet_bytes(body)
    assert str(frame["count"].dtype) == "Int64" and str(frame["ok"].dtype) == "boolean"
    assert frame["count"].isna().tolist() == [False, True] and frame["count"][0] == 3
    assert frame["ok"].isna().tolist() == [True, False] and not frame["ok"][1]
    schema = str(fastparquet.ParquetFile(io.BytesIO(body)).schema)
    assert "count: INT64, OPTIONAL" in schema and "ok: BOOLEAN, OPTIONAL" in schema


def test_a_group_without_a_shared_id_column_is_refused() -> None:
    with pytest.raises(ValueError, match="region"):
        rows_to_parquet(
            shops(), run_id="r1", columns={}, groups=[({"shop_id": "7"}, [sale()])], fetched_at=FETCHED_AT
        )


@pytest.mark.parametrize(
    ("api", "groups", "sort_key"),
    [
        pytest.param(
            shops,
            [
                [({"shop_id": "2", "region": "eu"}, [sale(sold_at="2026-11-29T00:00:00Z"), sale(note="n")])],
                [({"shop_id": "1", "region": "us"}, [sale(sale_id=5, paid=False, extra='{"q":1}')])],
            ],
            ["sold_at", "shop_id"],
            id="two-level",
        ),
        pytest.param(
            nullable_api,
            [[("u2", [{"count": None, "ok": True}])], [("u1", [{"count": 4, "ok": None}])]],
            ["id"],
            id="nullable-int64-boolean",
        ),
    ],
)
def test_a_compacted_file_of_a_description_is_the_whole_frame_writer_of_its_sorted_inputs(
    api: Any, groups: list[Any], sort_key: list[str]
) -> None:
    from fanout_core.output import SortedColumns, frame_to_parquet

    desc: ApiDescription = api()
    bodies = [
        rows_to_parquet(desc, run_id="r1", columns={}, groups=g, fetched_at=FETCHED_AT)[0] for g in groups
    ]
    frames = [read_parquet_bytes(b) for b in bodies]
    whole = pd.concat(frames, ignore_index=True).sort_values(sort_key, kind="stable", ignore_index=True)
    expected = frame_to_parquet(whole, {"fanout.compacted_from": "2"}, desc)
    columns = SortedColumns(len(whole), desc)
    for body in bodies:
        columns.add(body)
    assert columns.to_parquet(sort_key, {"fanout.compacted_from": "2"}) == expected
