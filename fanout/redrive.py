"""Redrive: turn failure records (and lost tasks) back into task objects.

Re-triggering is writing a task object: on a deployed bucket the S3 notification
carries on from there; locally the runtime that wraps the storage sees the write.

- A whole-task failure (``kind: task``): the record is archived and the same task
  object is written again, so the same key runs afresh (it has no done marker).
- A unit failure (``kind: units``): the task itself finished for its other units,
  so a sibling task is created holding only the failed units, at a key derived from
  the failed one (``part-00003.json`` -> ``part-00003~redrive-1.json``). Its output
  lands beside the first one and no unit is fetched or written twice. The key is
  derived, not counted, so a redrive interrupted and run again writes nothing twice.
- A lost task (pending past the stale threshold, ``--stale``): written again as is.

Order: archive copy, then (whole task) the record's removal and the task write, or
(units) the sibling's write and the record's removal. The record of a whole task goes
first so that the re-run the write triggers can never have its own new record
deleted; a crash between the two leaves the task pending with its record archived
(``status`` shows it, ``redrive --stale`` re-triggers it). A crash anywhere else leaves
either the record (redrive again, same keys) or the new task.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fanout.failure_report import read_failures, record_matches
from fanout.status import run_status
from fanout_core import keys
from fanout_core.bodies import TaskBody
from fanout_core.errors import BadTask, FanoutError
from fanout_core.failures import FailureRecord, now_iso
from fanout_core.stages import STAGES, StageTable
from fanout_core.storage import NoSuchKey, Storage


@dataclass
class RedriveResult:
    retriggered: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    """New sibling tasks holding only failed units."""
    archived: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _units_task(body: TaskBody, record: FailureRecord) -> TaskBody:
    """A task body like ``body`` holding only the record's failed units."""
    failed = [body.unit_from_fields(u) for u in record.units]
    wanted = {u.id for u in failed}
    kept = tuple(u for u in body.units if u.id in wanted)
    return body.with_units(kept or tuple(failed))


def select_failures(
    storage: Storage,
    run_id: str,
    *,
    stage: str | None = None,
    error_class: str | None = None,
    table: StageTable = STAGES,
) -> list[FailureRecord]:
    """The run's failure records of ``stage`` whose kind (or a failed unit's) is ``error_class``.

    A record is redriven whole: its other failed units go with it, and fail again if
    their cause is still there.
    """
    records = read_failures(storage, run_id, stage=stage, table=table)
    return [r for r in records if record_matches(r, error_class, table)]


def redrive(
    storage: Storage,
    run_id: str,
    *,
    stage: str | None = None,
    error_class: str | None = None,
    stale: bool = False,
    stale_after: Callable[[str], float] | None = None,
    stamp: Callable[[], str] = now_iso,
    table: StageTable = STAGES,
) -> RedriveResult:
    """Re-trigger the selected failed tasks (and, with ``stale``, the lost ones)."""
    result = RedriveResult()
    handled: set[str] = set()
    for record in select_failures(storage, run_id, stage=stage, error_class=error_class, table=table):
        _redrive_record(storage, table, record, result, stamp())
        handled.add(record.task_key)
    if stale:
        # A task just written again from its record (or a sibling just created) is pending
        # now, with no record: with a short threshold it would count as stale and be
        # written a second time. Each task is re-triggered once.
        handled.update(result.retriggered, result.created)
        status = run_status(storage, run_id, stale_after=stale_after or (lambda _s: 0.0), table=table)
        for st in status.stages:
            if stage and st.stage != stage:
                continue
            for key in st.stale:
                if key in handled:
                    continue
                try:
                    storage.put(key, storage.get(key))
                except NoSuchKey:
                    result.skipped.append((key, "vanished"))
                    continue
                result.retriggered.append(key)
    return result


def _redrive_record(
    storage: Storage, table: StageTable, record: FailureRecord, result: RedriveResult, stamp: str
) -> None:
    task_key = record.task_key
    failed_key = keys.failed_key(task_key)
    try:
        original = storage.get(task_key)
    except NoSuchKey:
        result.skipped.append((task_key, "the task object is gone"))
        return
    units_body: TaskBody | None = None
    if record.kind == "units" and record.units:
        try:
            address = table.parse(task_key)
            if address.is_seed:
                raise BadTask("a seed manifest has no units")
            units_body = _units_task(address.stage.body.from_bytes(original), record)
        except (FanoutError, KeyError) as exc:
            result.skipped.append((task_key, f"cannot rebuild its failed units: {exc}"))
            return
    archive = keys.archived_failure_key(task_key, stamp.replace(":", ""))
    storage.put(archive, record.to_bytes())
    result.archived.append(archive)
    if units_body is not None:
        # The sibling's own outcome goes to failed/<its key>: this record can go after.
        new_key = address.redriven(address.redrive + 1).key
        storage.put_if_absent(new_key, units_body.to_bytes())
        result.created.append(new_key)
        storage.delete(failed_key)
    else:
        # The record goes before the task is written: on a bucket the re-run starts
        # as soon as the write lands and may fail again at once, and deleting after
        # the write could remove the record that re-run wrote.
        storage.delete(failed_key)
        storage.put(task_key, original)
        result.retriggered.append(task_key)


def describe(result: RedriveResult) -> str:
    """One line of what a redrive wrote."""
    text = (
        f"{len(result.retriggered)} task(s) written again, {len(result.created)} new task(s) of "
        f"failed units, {len(result.archived)} failure record(s) archived"
    )
    if result.skipped:
        text += (
            f", {len(result.skipped)} skipped (" + "; ".join(f"{k}: {why}" for k, why in result.skipped) + ")"
        )
    return text


def to_json(result: RedriveResult) -> dict[str, Any]:
    return {
        "retriggered": result.retriggered,
        "created": result.created,
        "archived": result.archived,
        "skipped": [{"task_key": k, "reason": why} for k, why in result.skipped],
    }


def is_empty(result: RedriveResult) -> bool:
    """Nothing matched: no record redriven, no lost task written again."""
    return not (result.retriggered or result.created or result.skipped)
