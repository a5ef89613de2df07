"""The summary a finished ``local run``, ``demo`` or ``redrive`` prints: a table for a person,
typed JSON for a script, and, when the bucket holds failure records, why and what to run next.

The last word (on stderr) counts every failure record of the run, whoever wrote it, because
the exit code does too: a run re-started after an earlier failure has not succeeded.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from typing import Any, TextIO

from fanout.failure_report import failed_items, group_failures, read_failures, render_groups
from fanout.progress import print_table, stage_lines, summary_rows
from fanout.start_run import RunOutcome
from fanout_core.compaction import output_files
from fanout_core.stages import STAGES, StageTable
from fanout_core.storage import Storage


def output_folder(where: str, run_id: str, table: StageTable = STAGES) -> str:
    """The folder that holds the run's rows (compacted or not), under the bucket ``where``."""
    return f"{where.rstrip('/')}/{table.output_run_prefix(run_id)}"


def summary_doc(
    outcome: RunOutcome, where: str, groups: list[dict[str, Any]], redrive: str | None
) -> dict[str, Any]:
    """The summary as ``--json`` prints it (docs/json-output.md)."""
    report = outcome.report
    elapsed = report.elapsed_s
    stages = {
        name: {
            "finished": c.finished,
            "skipped": c.skipped,
            "retried": c.retries,
            "failed": c.failed,
            "unit_failures": c.unit_failures,
            "calls": outcome.stats[name].calls,
            "throttled": outcome.stats[name].throttled,
        }
        for name, c in report.stages.items()
    }
    return {
        "run_id": outcome.run_id,
        "output": where,
        "ok": outcome.ok,
        "stages": stages,
        "api_calls": outcome.calls,
        "throttled": outcome.throttled,
        "retries": sum(c.retries for c in report.stages.values()) + outcome.client_retries,
        "client_retries": outcome.client_retries,
        "duplicate_ids": sum(c.duplicates for c in report.stages.values()),
        "elapsed_s": round(elapsed, 3),
        "calls_per_s": round(outcome.calls / elapsed, 1) if elapsed > 0 else 0.0,
        "files_written": sum(c.files for c in report.stages.values()),
        "rows_written": sum(c.records for c in report.stages.values()),
        "resumed": outcome.resumed,
        "failure_records": len(outcome.failure_records),
        "earlier_failure_records": len(outcome.earlier_failures),
        "failures": groups,
        "redrive_command": redrive,
    }


def closing_line(outcome: RunOutcome, redrive: str) -> str | None:
    """What to do next when the run's bucket holds failure records (None when it holds none)."""
    if outcome.ok:
        return None
    earlier = len(outcome.earlier_failures)
    mine = len(outcome.failure_records) - earlier
    parts = []
    if mine:
        parts.append(f"{mine} task(s) failed in this run")
    if earlier:
        parts.append(f"{earlier} earlier failure record{'s' if earlier != 1 else ''}")
    return f"{', '.join(parts)}; fix the cause, then {redrive}"


def show_summary(
    outcome: RunOutcome,
    storage: Storage,
    where: str,
    *,
    as_json: bool,
    redrive: str,
    extra_rows: Iterable[tuple[str, str]] = (),
    extra_doc: dict[str, Any] | None = None,
    first_rows: Iterable[tuple[str, str]] = (),
    stream: TextIO = sys.stdout,
    table: StageTable = STAGES,
) -> None:
    """Print the summary (table or JSON), its failures by reason, and the closing line on stderr.

    ``where`` is the bucket; the summary names the run's output folder in it, and the
    Parquet files that folder holds now (after a compaction, the compacted ones)."""
    groups = (
        group_failures(failed_items(read_failures(storage, outcome.run_id, table=table), table=table))
        if not outcome.ok
        else []
    )
    folder = output_folder(where, outcome.run_id, table)
    files = len(output_files(storage, outcome.run_id, table))
    if as_json:
        doc = summary_doc(outcome, folder, [g.to_json() for g in groups], None if outcome.ok else redrive)
        doc["output_files"] = files
        stream.write(json.dumps({**doc, **(extra_doc or {})}, indent=2) + "\n")
    else:
        for line in stage_lines(outcome):
            stream.write(f"  {line}\n")
        rows = [*first_rows, *summary_rows(outcome, folder), ("output files", f"{files} Parquet file(s)")]
        print_table([*rows, *extra_rows], stream)
        for line in render_groups(groups):
            stream.write(f"  {line}\n")
    stream.flush()
    last = closing_line(outcome, redrive)
    if last:
        print(f"fanout: {last}", file=sys.stderr)
