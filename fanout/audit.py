"""Compare what a run wrote under ``data/`` with what the API holds, row for row.

The demo, the end-to-end tests and the benchmarks all ask the same question, "is
every record there exactly once?", so they share this one answer. Hermes' rows keep their
own normal form (``Row``); a described API's are ``fanout.simulator.truth``'s.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fanout_core.output import read_parquet_bytes
from fanout_core.stages import STAGES, StageTable
from fanout_core.storage import Storage

Row = tuple[Any, ...]
"""Hermes: its four id and carried columns as text, ts as epoch microseconds, metric, value,
unit (the built-in description's columns without run_id and fetched_at)."""


def _micros(ts: Any) -> int:
    if isinstance(ts, str):  # RFC 3339 allows lower-case t and z
        ts = datetime.fromisoformat(ts.upper().replace("Z", "+00:00"))
    return round(ts.timestamp() * 1_000_000)


def normalize(row: Iterable[Any]) -> Row:
    """A Hermes row in its normal form."""
    *ids, ts, metric, value, unit = row
    value = None if value is None or value != value else float(value)
    unit = None if unit is None or unit != unit else str(unit)
    return (*(str(i) for i in ids), _micros(ts), str(metric), value, unit)


def output_rows(storage: Storage, run_id: str, table: StageTable = STAGES) -> tuple[list[Row], int]:
    """Every row of the run's current files and the number of files read: its compacted
    generation if it has one, else its small files under ``data/run=<run_id>/``."""
    from fanout.api_choice import is_builtin
    from fanout.simulator.truth import row_columns, rows_from_frame
    from fanout_core.compaction import consistent_read, current_files

    api = table.api
    hermes = is_builtin(api)
    cols = list(row_columns(api))

    def read() -> tuple[list[Row], int]:
        rows: list[Row] = []
        files = 0
        for key in current_files(storage, run_id, table):
            files += 1
            frame = read_parquet_bytes(storage.get(key))
            if (frame["run_id"] != run_id).any():
                raise AssertionError(f"{key} holds rows of another run")
            if hermes:
                rows.extend(normalize(r) for r in frame[cols].itertuples(index=False, name=None))
            else:
                rows.extend(rows_from_frame(api, frame))
        return rows, files

    return consistent_read(read, run_id)


@dataclass
class Comparison:
    expected: int
    found: int
    missing: list[Row]
    unexpected: list[Row]
    duplicated: list[Row]

    @property
    def exact(self) -> bool:
        return not (self.missing or self.unexpected or self.duplicated)

    def summary(self) -> str:
        return (
            f"{self.found} rows found, {self.expected} expected: {len(self.missing)} missing, "
            f"{len(self.unexpected)} unexpected, {len(self.duplicated)} written twice"
        )


def compare(found: Iterable[Row], expected: Iterable[Iterable[Any]]) -> Comparison:
    have = Counter(found)
    want = Counter(normalize(r) for r in expected)
    return Comparison(
        expected=sum(want.values()),
        found=sum(have.values()),
        missing=sorted((want - have).elements(), key=repr)[:50],
        unexpected=sorted((r for r in have if r not in want), key=repr)[:50],
        duplicated=sorted((r for r, n in have.items() if n > want.get(r, 0) and r in want), key=repr)[:50],
    )


def count_rows(storage: Storage, run_id: str, table: StageTable = STAGES) -> tuple[int, int]:
    """Rows and files of the run's current files (as ``output_rows``), from the footers alone (cheap)."""
    from fanout_core.compaction import consistent_read, current_files
    from fanout_core.output import row_count

    def read() -> tuple[int, int]:
        files = current_files(storage, run_id, table)
        return sum(row_count(storage.get(key)) for key in files), len(files)

    return consistent_read(read, run_id)
