"""The runs a bucket holds: one per seed manifest, each summed up by ``fanout.status``.

A run exists when its manifest does; every command that reads a run checks that
first, so a typo is a usage error naming the runs there are, not a run "in progress".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fanout.status import run_status
from fanout_core.compaction import consistent_read, current_files, read_current
from fanout_core.keys import RUN_ID_RE
from fanout_core.output import row_count
from fanout_core.stages import STAGES, StageTable
from fanout_core.storage import Storage

SHOWN_RUNS = 10
"""How many run ids a "no such run" message names."""


class NoSuchRun(Exception):
    """The bucket holds no manifest for the run."""


def known_runs(storage: Storage, table: StageTable = STAGES) -> list[str]:
    """Run ids with a seed manifest (``<first prefix><run>.json``), sorted."""
    prefix = table.first.input_prefix
    found = []
    for key in storage.list(prefix):
        name = key[len(prefix) :]
        if "/" not in name and name.endswith(".json") and RUN_ID_RE.fullmatch(name[: -len(".json")]):
            found.append(name[: -len(".json")])
    return sorted(found)


def no_such_run(run_id: str, runs: list[str]) -> NoSuchRun:
    if not runs:
        return NoSuchRun(f"no run {run_id} in this bucket; it holds no runs")
    shown = ", ".join(runs[:SHOWN_RUNS]) + (
        f", ... ({len(runs)} in all: fanout runs)" if len(runs) > SHOWN_RUNS else ""
    )
    return NoSuchRun(f"no run {run_id} in this bucket; runs: {shown}")


def require_run(storage: Storage, run_id: str, table: StageTable = STAGES) -> None:
    """``NoSuchRun`` (naming the runs there are) unless the bucket holds the run's manifest."""
    if not storage.exists(table.seed(run_id).key):
        raise no_such_run(run_id, known_runs(storage, table))


@dataclass
class RunSummary:
    run_id: str
    started: str | None
    """When the manifest was written (UTC, ISO 8601), if the storage knows."""
    complete: bool
    tasks: int
    finished: int
    failed: int
    pending: int
    rows: int

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "started": self.started,
            "complete": self.complete,
            "tasks": self.tasks,
            "finished": self.finished,
            "failed": self.failed,
            "pending": self.pending,
            "rows": self.rows,
        }


def run_rows(storage: Storage, run_id: str, table: StageTable = STAGES) -> int:
    """Rows of the run's current files: a compacted file's count from ``current.json``, else its footer."""

    def read() -> int:
        committed = read_current(storage, run_id, table) or {}
        known = {f["key"]: int(f["rows"]) for f in committed.get("files", []) if isinstance(f, dict)}
        return sum(
            known[k] if k in known else row_count(storage.get(k))
            for k in current_files(storage, run_id, table)
        )

    return consistent_read(read, run_id)


def summarize(storage: Storage, run_id: str, table: StageTable = STAGES) -> RunSummary:
    status = run_status(storage, run_id, table=table)
    written_at = storage.last_modified(table.seed(run_id).key)
    started = (
        datetime.fromtimestamp(written_at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        if written_at is not None
        else None
    )
    return RunSummary(
        run_id=run_id,
        started=started,
        complete=status.complete,
        tasks=sum(s.written for s in status.stages),
        finished=sum(s.finished for s in status.stages),
        failed=status.failed,
        pending=sum(s.open for s in status.stages),
        rows=run_rows(storage, run_id, table),
    )


def list_runs(storage: Storage, table: StageTable = STAGES) -> list[RunSummary]:
    """Every run in the bucket, newest first (by when its manifest was written)."""
    runs = [summarize(storage, r, table) for r in known_runs(storage, table)]
    return sorted(runs, key=lambda r: (r.started or "", r.run_id), reverse=True)


def render_runs(runs: list[RunSummary]) -> list[str]:
    id_w = max(3, *(len(r.run_id) for r in runs)) if runs else 3
    lines = [f"  {'run':<{id_w}}  {'started':<20}  {'complete':<8}  {'tasks':>6}  {'failed':>6}  {'rows':>9}"]
    for r in runs:
        lines.append(
            f"  {r.run_id:<{id_w}}  {r.started or '-':<20}  {'yes' if r.complete else 'no':<8}  "
            f"{r.tasks:>6}  {r.failed:>6}  {r.rows:>9}"
        )
    return lines
