"""Parquet output: one file per data-groups task, written with fastparquet.

Imported only by the data_groups stage, so the warriors and troops functions never
load pandas (cold starts stay short).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import fastparquet
import pandas as pd

COLUMNS: tuple[str, ...] = (
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


class _KeptOpen(io.BytesIO):
    """fastparquet closes the file it writes; keep the bytes readable afterwards."""

    def close(self) -> None:
        pass


def records_to_parquet(
    *,
    run_id: str,
    warrior_id: str,
    troop_id: str,
    service: str,
    groups: Sequence[tuple[str, Sequence[dict[str, Any]]]],
    fetched_at: datetime,
    metadata: dict[str, str] | None = None,
) -> tuple[bytes, int]:
    """Parquet bytes for the records of ``groups`` (data_group_id, records); and the row count.

    A task whose groups hold no records still gets a file with the schema and no rows,
    so an empty group leaves a countable trace.
    """
    group_ids: list[str] = []
    ts: list[str] = []
    metric: list[str] = []
    value: list[float | None] = []
    unit: list[str | None] = []
    for group_id, records in groups:
        group_ids.extend([group_id] * len(records))
        for r in records:
            ts.append(r["ts"])
            metric.append(r["metric"])
            v = r["value"]
            value.append(None if v is None else float(v))
            unit.append(r.get("unit"))
    n = len(ts)
    frame = pd.DataFrame(
        {
            "run_id": pd.Series([run_id] * n, dtype="object"),
            "warrior_id": pd.Series([warrior_id] * n, dtype="object"),
            "troop_id": pd.Series([troop_id] * n, dtype="object"),
            "service": pd.Series([service] * n, dtype="object"),
            "data_group_id": pd.Series(group_ids, dtype="object"),
            "ts": _utc_timestamps(ts),
            "metric": pd.Series(metric, dtype="object"),
            "value": pd.Series(value, dtype="float64"),
            "unit": pd.Series(unit, dtype="object"),
            "fetched_at": pd.Series([pd.Timestamp(fetched_at)] * n, dtype="datetime64[us, UTC]"),
        }
    )
    frame["ts"] = frame["ts"].astype("datetime64[us, UTC]")
    buffer = _KeptOpen()
    fastparquet.write(
        "part.parquet",
        frame,
        open_with=lambda _path, _mode: buffer,
        compression="SNAPPY" if _has_snappy() else None,
        object_encoding="utf8",
        stats=False,
        write_index=False,
        custom_metadata=metadata or None,
    )
    return buffer.getvalue(), n


def _utc_timestamps(ts: list[str]) -> pd.Series:
    """RFC 3339 date-times as UTC timestamps, whatever their offsets.

    RFC 3339 allows a lower-case ``t`` and ``z``, which pandas' ISO 8601 parser refuses;
    only when it refuses are the strings upper-cased (the client already yields them so).
    """
    series = pd.Series(ts, dtype="object")
    try:
        return pd.to_datetime(series, utc=True, format="ISO8601")
    except ValueError:
        return pd.to_datetime(series.str.upper(), utc=True, format="ISO8601")


_SNAPPY: bool | None = None


def _has_snappy() -> bool:
    global _SNAPPY
    if _SNAPPY is None:
        try:
            from fastparquet import compression

            _SNAPPY = "SNAPPY" in compression.compressions
        except Exception:
            _SNAPPY = False
    return _SNAPPY


def read_metadata(body: bytes) -> dict[str, str]:
    """The key-value metadata of a file's footer (no row is read)."""
    return dict(fastparquet.ParquetFile(io.BytesIO(body)).key_value_metadata)


def read_parquet_bytes(body: bytes) -> pd.DataFrame:
    """Read a file this module wrote (tests, status and benchmarks use it)."""
    pf = fastparquet.ParquetFile(io.BytesIO(body))
    return pf.to_pandas()
