"""Parquet output: one file per data-groups task, written with fastparquet.

Imported only by the data_groups stage (and compaction), so the warriors and troops
functions never load pandas (cold starts stay short).

Every file carries column statistics (min/max per row group), so an engine filtering
on ``ts`` or an id skips row groups; row groups hold at most ``ROW_GROUP_ROWS`` rows,
so a compacted file of a million rows is several row groups that readers scan in
parallel, and a task's small file is one.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from datetime import datetime
from typing import Any

# Two deprecations pandas 3.1 raises inside fastparquet, not in our code: its import reads
# the deprecated ``future.infer_string`` option, and its writer takes ``Series.values`` of a
# tz-aware column (every ``ts`` and ``fetched_at``: ~7,000 warnings in the test suite, one
# mid-progress-display). Writing naive timestamps instead would drop the UTC annotation
# from the files, so they are silenced here, once per process, before the import: these
# two messages only, so a new deprecation still shows.
warnings.filterwarnings("ignore", message=r"The 'future\.infer_string' option is deprecated")
warnings.filterwarnings(
    "ignore", message=r"Series\.values returning an ndarray that drops timezone information"
)

import fastparquet  # noqa: E402
import pandas as pd  # noqa: E402

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


GLUE_TYPES: dict[str, str] = {
    "run_id": "string",
    "warrior_id": "string",
    "troop_id": "string",
    "service": "string",
    "data_group_id": "string",
    "ts": "timestamp",
    "metric": "string",
    "value": "double",
    "unit": "string",
    "fetched_at": "timestamp",
}
"""The columns as Glue/Athena (Hive) types: what the stack's table declares. Strings are
UTF-8 BYTE_ARRAY, timestamps INT64 microseconds adjusted to UTC, ``value`` DOUBLE."""

ROW_GROUP_ROWS = 131_072
"""Rows per row group: ~1-2 MB of this schema compressed, large enough that footers and
per-group overhead vanish, small enough that a 128 MB file has dozens to scan in parallel
and to skip by statistics."""


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
    return frame_to_parquet(frame, metadata), n


def frame_to_parquet(frame: pd.DataFrame, metadata: dict[str, str] | None = None) -> bytes:
    """Parquet bytes of a frame with exactly ``COLUMNS``: statistics on, row groups of
    at most ``ROW_GROUP_ROWS``. The one writer of every file under ``data/`` and
    ``compacted/``, so both have the same schema."""
    if tuple(frame.columns) != COLUMNS:
        raise ValueError(f"a frame to write must have the columns {COLUMNS}, got {tuple(frame.columns)}")
    buffer = _KeptOpen()
    fastparquet.write(
        "part.parquet",
        frame,
        row_group_offsets=ROW_GROUP_ROWS,
        open_with=lambda _path, _mode: buffer,
        compression="SNAPPY" if _has_snappy() else None,
        object_encoding="utf8",
        stats=True,
        write_index=False,
        custom_metadata=metadata or None,
    )
    return buffer.getvalue()


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


def row_count(body: bytes) -> int:
    """Rows in a file, from its footer (no row is read)."""
    return int(fastparquet.ParquetFile(io.BytesIO(body)).count())


def read_parquet_bytes(body: bytes) -> pd.DataFrame:
    """Read a file this module wrote (tests, status and benchmarks use it)."""
    pf = fastparquet.ParquetFile(io.BytesIO(body))
    return pf.to_pandas()
