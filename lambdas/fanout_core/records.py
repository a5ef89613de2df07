"""The work of the leaf stage: list each unit's rows (the last level) and write one Parquet file.

Rows are checked per unit by the client, against the description's columns: a row the
description does not allow fails its unit (a permanent unit failure naming the field),
and the task's other units are written. The file is created with ``put_if_absent``, so
a task that runs twice writes it once; its footer names the failed units, so a rerun
after a crash restores the failure record from the file instead of trusting its own
refetch (a refetch could disagree with the file and silently lose a unit). Whether the
file exists is asked only when it may: on a retry (an earlier attempt may have written
it before failing; then nothing is fetched), and when every unit failed
(no file to create would tell). A first attempt, which finds no done marker, goes
straight to the API: one LIST per task saved, and a duplicate delivery racing it learns
from ``put_if_absent`` that it lost.
Rows held in memory are capped per task: a unit that would pass the cap fails as too
large, and its redrive, a task of only the failed units, holds fewer rows.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from fanout_core.bodies import Manifest, TaskFormat
from fanout_core.error_kinds import failure_fields
from fanout_core.errors import BadTask, PermanentError

if TYPE_CHECKING:
    from fanout_core.task_context import Task, TaskContext, TaskResult

FAILED_UNITS_METADATA = "fanout.failed_units"
"""Parquet footer key listing the task's failed units, so a rerun can restore its record."""


class TooManyRecords(PermanentError):
    """One task would hold more records in memory than ``max_records_per_task``."""

    kind = "too_large"


def write_records(task: Task, ctx: TaskContext, result: TaskResult) -> None:
    body = task.body
    if isinstance(body, Manifest):
        raise BadTask("a seed manifest holds no units to list rows of")
    out_key = task.address.output_key(ctx.table.output_prefix_of(task.stage))
    if task.attempt > 1 and ctx.storage.exists(out_key):
        _written_before(ctx, out_key, result)
        return
    cap = ctx.settings.max_records_per_task
    held = 0
    fetched: list[tuple[dict[str, str], list[dict[str, Any]]]] = []
    for unit in body.units:
        records: list[dict[str, Any]] = []
        try:
            for record in ctx.client.list(task.stage.child.name, (*body.path, unit.id)):
                records.append(record)
                if held + len(records) > cap:
                    raise TooManyRecords(
                        f"{unit.id_name} {unit.id!r} takes the task past {cap} records held in memory "
                        "(max_records_per_task); its redrive holds only the failed units"
                    )
        except PermanentError as exc:
            result.failed_units.append({**body.unit_ids(unit), **failure_fields(exc)})
            continue
        held += len(records)
        # The unit's own row columns: its id and the fields it carries to the rows.
        fetched.append((TaskFormat.carried(task.stage.level, unit).fields(), records))
    if not fetched:
        if task.attempt == 1 and ctx.storage.exists(out_key):
            _written_before(ctx, out_key, result)
        return
    from fanout_core.output import rows_to_parquet  # pandas only where Parquet is written

    data, rows = rows_to_parquet(
        ctx.table.api,
        run_id=body.run_id,
        columns=body.columns(),
        groups=fetched,
        fetched_at=ctx.clock(),
        metadata={FAILED_UNITS_METADATA: json.dumps(result.failed_units, sort_keys=True)},
    )
    if ctx.storage.put_if_absent(out_key, data):
        result.files += 1
        result.records += rows
    else:  # an earlier attempt or a duplicate wrote it: its file, not this refetch, is the truth
        _written_before(ctx, out_key, result)


def _written_before(ctx: TaskContext, out_key: str, result: TaskResult) -> None:
    """The file exists: its footer's failed units are the task's (this attempt's are dropped)."""
    from fanout_core.output import read_metadata

    footer = read_metadata(ctx.storage.get(out_key))
    result.failed_units[:] = json.loads(footer.get(FAILED_UNITS_METADATA, "[]"))
