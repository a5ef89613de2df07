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

Order: archive copy, then the task write, then the record's removal; a crash at
any point leaves either the record (redrive again, same keys) or the new task.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fanout.status import run_status
from fanout_core import keys
from fanout_core.bodies import DataGroup, DataGroupsTask, Troop, TroopsTask, WarriorsPart
from fanout_core.errors import BadTask
from fanout_core.failures import FailureRecord, now_iso
from fanout_core.stages import STAGES, Stage, stage_named
from fanout_core.storage import NoSuchKey, Storage

_GENERATION = re.compile(r"~redrive-(\d+)\.json$")


@dataclass
class RedriveResult:
    retriggered: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    """New sibling tasks holding only failed units."""
    archived: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _next_generation(task_key: str) -> int:
    match = _GENERATION.search(task_key)
    return int(match.group(1)) + 1 if match else 1


def _units_task(stage: Stage, record: FailureRecord, original: bytes) -> bytes:
    """A task body like ``original`` holding only the record's failed units."""
    units = record.units
    if stage.name == "warriors":
        part = WarriorsPart.from_bytes(original)
        return WarriorsPart(part.run_id, tuple(u["warrior_id"] for u in units)).to_bytes()
    if stage.name == "troops":
        troops = TroopsTask.from_bytes(original)
        failed = {u["troop_id"] for u in units}
        kept = tuple(t for t in troops.troops if t.troop_id in failed)
        return TroopsTask(
            troops.run_id, troops.warrior_id, kept or tuple(Troop(u["troop_id"], u["service"]) for u in units)
        ).to_bytes()
    groups = DataGroupsTask.from_bytes(original)
    failed = {u["data_group_id"] for u in units}
    kept_groups = tuple(g for g in groups.data_groups if g.data_group_id in failed)
    if not kept_groups:
        kept_groups = tuple(DataGroup(u["data_group_id"], u.get("name", "")) for u in units)
    return DataGroupsTask(
        groups.run_id, groups.warrior_id, groups.troop_id, groups.service, kept_groups
    ).to_bytes()


def select_failures(
    storage: Storage, run_id: str, *, stage: str | None = None, error_class: str | None = None
) -> list[FailureRecord]:
    keys.check_run_id(run_id)
    stages = [stage_named(stage)] if stage else list(STAGES)
    found: list[FailureRecord] = []
    for st in stages:
        record_keys = list(storage.list(keys.failed_key(keys.run_prefix(st, run_id))))
        if st.name == "warriors":
            seed_record = keys.failed_key(keys.manifest_key(run_id))
            if storage.exists(seed_record):
                record_keys.insert(0, seed_record)
        for rk in record_keys:
            try:
                record = FailureRecord.from_bytes(storage.get(rk))
            except (NoSuchKey, ValueError, TypeError):
                continue
            if error_class and record.error_class != error_class:
                continue
            found.append(record)
    return found


def redrive(
    storage: Storage,
    run_id: str,
    *,
    stage: str | None = None,
    error_class: str | None = None,
    stale: bool = False,
    stale_after: Callable[[str], float] | None = None,
    stamp: Callable[[], str] = now_iso,
) -> RedriveResult:
    """Re-trigger the selected failed tasks (and, with ``stale``, the lost ones)."""
    result = RedriveResult()
    for record in select_failures(storage, run_id, stage=stage, error_class=error_class):
        _redrive_record(storage, record, result, stamp())
    if stale:
        status = run_status(storage, run_id, stale_after=stale_after or (lambda _s: 0.0))
        for st in status.stages:
            if stage and st.stage != stage:
                continue
            for key in st.stale:
                try:
                    storage.put(key, storage.get(key))
                except NoSuchKey:
                    result.skipped.append((key, "vanished"))
                    continue
                result.retriggered.append(key)
    return result


def _redrive_record(storage: Storage, record: FailureRecord, result: RedriveResult, stamp: str) -> None:
    task_key = record.task_key
    failed_key = keys.failed_key(task_key)
    try:
        original = storage.get(task_key)
    except NoSuchKey:
        result.skipped.append((task_key, "the task object is gone"))
        return
    archive = keys.archived_failure_key(task_key, stamp.replace(":", ""))
    storage.put(archive, record.to_bytes())
    result.archived.append(archive)
    if record.kind == "units" and record.units:
        stage = stage_named(record.stage or "")
        try:
            body = _units_task(stage, record, original)
        except (BadTask, KeyError) as exc:
            result.skipped.append((task_key, f"cannot rebuild its failed units: {exc}"))
            return
        new_key = keys.redrive_key(task_key, _next_generation(task_key))
        storage.put_if_absent(new_key, body)
        result.created.append(new_key)
    else:
        storage.put(task_key, original)
        result.retriggered.append(task_key)
    storage.delete(failed_key)


def describe(result: RedriveResult) -> dict[str, Any]:
    return {
        "retriggered": len(result.retriggered),
        "created": len(result.created),
        "archived": len(result.archived),
        "skipped": [f"{k}: {why}" for k, why in result.skipped],
    }
