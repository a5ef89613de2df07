"""Parquet output: one file per leaf-stage task, written with fastparquet, its schema built
from the API description (``columns_for``, ``column_types``, ``glue_types``).

Imported only by the leaf stage (and compaction), so the other stages' functions never
load pandas (cold starts stay short).

Every file carries column statistics (min/max per row group), so an engine filtering
on a timestamp or an id skips row groups; row groups hold at most ``ROW_GROUP_ROWS`` rows,
so a compacted file of a million rows is several row groups that readers scan in
parallel, and a task's small file is one.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping, Sequence
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

from fanout_core.api_description import ApiDescription, builtin  # noqa: E402

_GLUE_OF: dict[str, str] = {
    "string": "string",
    "int64": "bigint",
    "double": "double",
    "boolean": "boolean",
    "timestamp": "timestamp",
    "date": "timestamp",
    "json": "string",
}
"""A column type as Glue/Athena (Hive) declares it: what the file holds. fastparquet writes
no Parquet DATE, so a ``date`` is stored as the timestamp of its midnight in UTC."""


def column_types(api: ApiDescription) -> dict[str, str]:
    """Every output column's type (the description's names: string, int64, double,
    boolean, timestamp, date, json), in column order. Ids and carried fields are strings,
    the extra column JSON text, ``fetched_at`` a timestamp."""
    types = {"run_id": "string", **dict.fromkeys(api.id_columns(), "string")}
    types |= {c.name: c.type for c in api.rows.columns}
    if api.rows.extra == "keep":
        types[api.rows.extra_column] = "json"
    types["fetched_at"] = "timestamp"
    return types


def columns_for(api: ApiDescription) -> tuple[str, ...]:
    """The output columns in file order (``ApiDescription.column_names``)."""
    return api.column_names()


def glue_types(api: ApiDescription) -> dict[str, str]:
    """The columns as Glue/Athena (Hive) types: what the stack's table declares. Strings
    (JSON text too) are UTF-8 BYTE_ARRAY, timestamps INT64 microseconds adjusted to UTC,
    doubles DOUBLE, int64 INT64, booleans BOOLEAN."""
    return {name: _GLUE_OF[kind] for name, kind in column_types(api).items()}


COLUMNS: tuple[str, ...] = columns_for(builtin())
"""The built-in description's columns (the product default)."""
GLUE_TYPES: dict[str, str] = glue_types(builtin())
"""The built-in description's columns as Glue types."""

ROW_GROUP_ROWS = 131_072
"""Rows per row group: ~1-2 MB of this schema compressed, large enough that footers and
per-group overhead vanish, small enough that a 128 MB file has dozens to scan in parallel
and to skip by statistics."""


class _KeptOpen(io.BytesIO):
    """fastparquet closes the file it writes; keep the bytes readable afterwards."""

    def close(self) -> None:
        pass


def rows_to_parquet(
    api: ApiDescription,
    *,
    run_id: str,
    columns: Mapping[str, str],
    groups: Sequence[tuple[Mapping[str, str] | str, Sequence[Mapping[str, Any]]]],
    fetched_at: datetime,
    metadata: dict[str, str] | None = None,
) -> tuple[bytes, int]:
    """Parquet bytes of the rows of ``groups``, and the row count.

    ``columns`` holds the id columns every row of the file shares (the ids and carried
    fields of the levels above the task's units); each group is one unit's own id columns
    (or its bare id) and its rows as the client yields them (column name -> value). A task
    whose groups hold no rows still gets a file with the schema and no rows, so an empty
    group leaves a countable trace.
    """
    unit_level = api.stage_levels[-1]
    unit_id = unit_level.id_name or ""
    names = columns_for(api)
    types = column_types(api)
    row_names = {c.name for c in api.rows.columns} | (
        {api.rows.extra_column} if api.rows.extra == "keep" else set()
    )
    shared = set(columns)
    per_unit = [n for n in api.id_columns() if n not in shared]
    unit_values: dict[str, list[Any]] = {n: [] for n in per_unit}
    values: dict[str, list[Any]] = {n: [] for n in row_names}
    n = 0
    for key, rows in groups:
        unit = {unit_id: key} if isinstance(key, str) else key
        count = len(rows)
        for name in per_unit:
            if name not in unit:
                raise ValueError(f"a group lacks the id column {name!r}")
            unit_values[name].extend([unit[name]] * count)
        for name, column in values.items():
            column.extend([r.get(name) for r in rows])
        n += count
    data: dict[str, Any] = {}
    for name in names:
        if name == "run_id":
            data[name] = pd.Series([run_id] * n, dtype="object")
        elif name == "fetched_at":
            data[name] = pd.Series([pd.Timestamp(fetched_at)] * n, dtype="datetime64[us, UTC]")
        elif name in shared:
            data[name] = pd.Series([columns[name]] * n, dtype="object")
        elif name in unit_values:
            data[name] = pd.Series(unit_values[name], dtype="object")
        else:
            data[name] = _series(values[name], types[name], _nullable(api, name))
    return frame_to_parquet(pd.DataFrame(data), metadata, api), n


_DTYPES = {"int64": {True: "Int64", False: "int64"}, "boolean": {True: "boolean", False: "bool"}}
"""The pandas dtype an int64 or boolean column is written from, by whether it is nullable."""


def _nullable(api: ApiDescription, name: str) -> bool:
    return next((c.nullable for c in api.rows.columns if c.name == name), True)


def _series(values: list[Any], kind: str, nullable: bool) -> pd.Series:
    """One row column as the dtype its type is written from."""
    if kind == "timestamp":
        return _utc_timestamps(values).astype("datetime64[us, UTC]")
    if kind == "date":
        series = pd.to_datetime(pd.Series(values, dtype="object"), utc=True, format="%Y-%m-%d")
        return series.astype("datetime64[us, UTC]")
    if kind == "double":
        return pd.Series([None if v is None else float(v) for v in values], dtype="float64")
    if kind in _DTYPES:
        return pd.Series(values, dtype=_DTYPES[kind][nullable])
    return pd.Series(values, dtype="object")  # string, json text


def records_to_parquet(
    *,
    run_id: str,
    groups: Sequence[tuple[Mapping[str, str] | str, Sequence[Mapping[str, Any]]]],
    fetched_at: datetime,
    metadata: dict[str, str] | None = None,
    **columns: str,
) -> tuple[bytes, int]:
    """Transitional: ``rows_to_parquet`` of the built-in description, the shared id columns
    as keywords, for the callers that do not pass the description yet."""
    return rows_to_parquet(
        builtin(), run_id=run_id, columns=columns, groups=groups, fetched_at=fetched_at, metadata=metadata
    )


def frame_to_parquet(
    frame: pd.DataFrame, metadata: dict[str, str] | None = None, api: ApiDescription | None = None
) -> bytes:
    """Parquet bytes of a frame with exactly the description's columns (the built-in one's
    when None): statistics on, row groups of at most ``ROW_GROUP_ROWS``. The one writer of
    every file under ``data/`` and ``compacted/``, so both have the same schema."""
    expected = COLUMNS if api is None else columns_for(api)
    if tuple(frame.columns) != expected:
        raise ValueError(f"a frame to write must have the columns {expected}, got {tuple(frame.columns)}")
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


def _utc_timestamps(ts: list[Any]) -> pd.Series:
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


class SortedColumns:
    """Rows of many files held as compact columns, written out sorted, a row group at a time.

    Compaction's memory: a text column is a dictionary (its values repeat: a handful of
    ids, metrics, units) and 4-byte codes, a timestamp 8 bytes: with the sort's index
    and temporaries a row costs about 120 bytes at the peak (measured), a fraction of a
    pandas frame of Python strings; only one row group at a time is turned back into a
    frame. A double is 8 bytes; int64 and boolean columns are kept as the files give them.
    The file written is the one ``frame_to_parquet`` writes of the concatenated inputs
    sorted stably by the same key: same schema, order, row groups and metadata. The columns
    and their kinds are the description's (the built-in one's when None).
    """

    def __init__(self, rows: int, api: ApiDescription | None = None):
        import numpy as np

        api = api if api is not None else builtin()
        types = column_types(api)
        nullable = {c.name: c.nullable for c in api.rows.columns}
        self.rows = rows
        self.filled = 0
        self._columns = tuple(types)
        text = [c for c, t in types.items() if t in ("string", "json")]
        self._codes = {c: np.empty(rows, dtype=np.int32) for c in text}
        self._values: dict[str, list[Any]] = {c: [] for c in text}
        self._index: dict[str, dict[Any, int]] = {c: {} for c in text}
        self._times = {
            c: np.empty(rows, dtype=np.int64) for c, t in types.items() if t in ("timestamp", "date")
        }
        self._units: dict[str, str] = {}
        self._doubles = {c: np.empty(rows, dtype=np.float64) for c, t in types.items() if t == "double"}
        self._parts: dict[str, list[pd.Series]] = {c: [] for c, t in types.items() if t in _DTYPES}
        self._empty = {c: _DTYPES[types[c]][nullable[c]] for c in self._parts}
        """The dtype of an int64 or boolean column that no file filled."""
        self._whole: dict[str, pd.Series] = {}

    def add(self, body: bytes) -> None:
        """Append one file's rows (the file's bytes are not kept)."""
        import numpy as np

        frame = read_parquet_bytes(body)
        n = len(frame)
        if self.filled + n > self.rows:
            raise ValueError(f"more rows than the {self.rows} announced")
        span = slice(self.filled, self.filled + n)
        for column in self._codes:
            codes, uniques = pd.factorize(frame[column], use_na_sentinel=True)
            index = self._index[column]
            values = self._values[column]
            mapping = np.empty(len(uniques) + 1, dtype=np.int32)
            mapping[-1] = -1  # a null stays a null
            for i, value in enumerate(uniques):
                if value not in index:
                    index[value] = len(values)
                    values.append(value)
                mapping[i] = index[value]
            self._codes[column][span] = mapping[codes]
        for column in self._times:
            series = frame[column]
            unit = str(series.dtype.unit)
            if self._units.setdefault(column, unit) != unit:
                series = series.astype(f"datetime64[{self._units[column]}, UTC]")
            self._times[column][span] = pd.DatetimeIndex(series).asi8
        for column, doubles in self._doubles.items():
            doubles[span] = frame[column].to_numpy(dtype=np.float64, na_value=np.nan)
        for column, parts in self._parts.items():
            parts.append(frame[column])
        self.filled += n

    def _rank(self, column: str) -> Any:
        """Each row's place in the column's sort order (a null last, as pandas sorts)."""
        import numpy as np

        values = self._values[column]
        order = sorted(range(len(values)), key=values.__getitem__)
        rank = np.empty(len(values) + 1, dtype=np.int32)
        rank[np.asarray(order, dtype=np.int64)] = np.arange(len(values), dtype=np.int32)
        rank[-1] = len(values)
        return rank[self._codes[column]]

    def _order(self, sort_key: list[str]) -> Any:
        import numpy as np

        keys: list[Any] = []
        for column in reversed(sort_key):  # lexsort: the last key is the primary one
            if column in self._times:
                t = self._times[column]
                keys.append(np.where(t == np.iinfo(np.int64).min, np.iinfo(np.int64).max, t))
            elif column in self._codes:
                keys.append(self._rank(column))
            elif column in self._doubles:
                keys.append(self._doubles[column])  # NaN sorts last, as pandas puts a null
            else:
                raise ValueError(f"compaction cannot sort by the {column!r} column")
        return np.lexsort(keys)  # stable, like sort_values(kind="stable")

    def _frame(self, rows: Any) -> pd.DataFrame:
        import numpy as np

        data: dict[str, Any] = {}
        for column in self._columns:
            if column in self._codes:
                values = np.empty(len(self._values[column]) + 1, dtype=object)
                values[:-1] = self._values[column]
                values[-1] = None
                data[column] = pd.Series(values[self._codes[column][rows]], dtype="object")
            elif column in self._times:
                unit = self._units.get(column, "us")
                stamps = self._times[column][rows].view(f"datetime64[{unit}]")
                data[column] = pd.Series(stamps).dt.tz_localize("UTC")
            elif column in self._doubles:
                data[column] = pd.Series(self._doubles[column][rows], dtype="float64")
            else:
                data[column] = self._whole_column(column).iloc[rows].reset_index(drop=True)
        return pd.DataFrame(data)

    def _whole_column(self, column: str) -> pd.Series:
        """An int64 or boolean column of every file, joined once (as the files typed it)."""
        if column not in self._whole:
            parts = self._parts.pop(column)
            self._whole[column] = (
                pd.concat(parts, ignore_index=True) if parts else pd.Series([], dtype=self._empty[column])
            )
        return self._whole[column]

    def to_parquet(self, sort_key: list[str], metadata: dict[str, str] | None = None) -> bytes:
        """The Parquet bytes of every row added, sorted by ``sort_key``."""
        from fastparquet import writer

        if self.filled != self.rows:
            raise ValueError(f"{self.filled} rows added, {self.rows} announced")
        order = self._order(sort_key)
        n = self.rows
        parts = max((n - 1) // ROW_GROUP_ROWS + 1, 1)  # fastparquet's own split of n rows
        chunk = max(min((n - 1) // parts + 1, n), 1)
        starts = list(range(0, n, chunk)) or [0]
        first = self._frame(order[: chunk if n else 0])
        fmd = writer.make_metadata(
            first,
            has_nulls=True,
            object_encoding="utf8",
            times="int64",
            index_cols=[],
            cols_dtype=first.columns.dtype,
        )
        if metadata:
            from fastparquet import parquet_thrift

            fmd.key_value_metadata = [
                *(fmd.key_value_metadata or []),
                *(parquet_thrift.KeyValue(key=k, value=v) for k, v in metadata.items()),
            ]

        def groups() -> Any:
            yield first
            for start in starts[1:]:
                yield self._frame(order[start : start + chunk])

        buffer = _KeptOpen()
        writer.write_simple(
            buffer, groups(), fmd, compression="SNAPPY" if _has_snappy() else None, stats=True
        )
        return buffer.getvalue()
