"""The work of each stage, given a task key: the one function every runtime calls.

``run_task`` is idempotent. A task whose done marker exists is skipped; children
and outputs are created with ``put_if_absent`` from units sorted by id, so a task
that runs twice, or is retried after it half-finished, writes nothing twice and
triggers no child twice. The done marker is written last.

Transient errors propagate (the runtime retries the whole task); a permanent error
of one unit (a 404 warrior, troop or data group) fails that unit alone and lands
in the task's failure record, while its siblings are finished.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from fanout_core import keys
from fanout_core.bodies import (
    DataGroup,
    DataGroupsTask,
    Troop,
    TroopsTask,
    WarriorsPart,
    check_id,
    chunks,
    dumps,
    parse_manifest,
)
from fanout_core.errors import BadTask, PermanentError
from fanout_core.failures import FailureRecord, describe, now_iso, write_failure
from fanout_core.settings import EnvironmentSettings
from fanout_core.stages import stage_for_key
from fanout_core.storage import NoSuchKey, Storage

FAILED_UNITS_METADATA = "fanout.failed_units"
"""Parquet footer key listing the task's failed units, so a rerun can restore its record."""


class Hermes(Protocol):
    """What the core needs of the Hermes client (``fanout_core.hermes.HermesClient``)."""

    def list_warriors(self) -> Iterator[dict[str, Any]]: ...
    def list_troops(self, warrior_id: str) -> Iterator[dict[str, Any]]: ...
    def list_data_groups(self, warrior_id: str, troop_id: str) -> Iterator[dict[str, Any]]: ...
    def list_records(
        self, warrior_id: str, troop_id: str, data_group_id: str
    ) -> Iterator[dict[str, Any]]: ...


@dataclass(frozen=True, kw_only=True)
class TaskContext:
    storage: Storage
    hermes: Hermes
    settings: EnvironmentSettings
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))


@dataclass(kw_only=True)
class TaskResult:
    stage: str
    key: str
    skipped: bool = False
    """The done marker existed: a duplicate delivery, nothing was fetched."""
    children: int = 0
    """Child task objects this run created (not counting ones that existed)."""
    files: int = 0
    records: int = 0
    failed_units: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def run_task(
    key: str, ctx: TaskContext, *, attempts: int = 1, first_attempt_at: str | None = None
) -> TaskResult:
    """Do the task stored at ``key``; raise on a whole-task failure, for the runtime to decide."""
    stage = stage_for_key(key)
    if stage is None:
        raise BadTask(f"{key!r} is under no stage's prefix")
    keys.run_id_of_task_key(key)  # a key without a valid run id is refused before any work
    started = time.monotonic()
    result = TaskResult(stage=stage.name, key=key)
    if ctx.storage.exists(keys.done_key(key)):
        result.skipped = True
        return result
    try:
        body = ctx.storage.get(key)
    except NoSuchKey:
        raise BadTask(f"task object {key!r} does not exist") from None
    if stage.name == "warriors":
        if keys.is_seed_manifest(key):
            _split_manifest(key, body, ctx, result)
        else:
            _warriors_part(key, body, ctx, result)
    elif stage.name == "troops":
        _troops(key, body, ctx, result)
    else:
        _data_groups(key, body, ctx, result)
    if result.failed_units:
        error_class, message, status = _summary(result.failed_units)
        write_failure(
            ctx.storage,
            FailureRecord(
                run_id=keys.run_id_of_task_key(key),
                stage=stage.name,
                task_key=key,
                kind="units",
                error_class=error_class,
                message=message,
                status=status,
                transient=False,
                attempts=attempts,
                first_attempt_at=first_attempt_at or now_iso(),
                last_attempt_at=now_iso(),
                units=result.failed_units,
            ),
        )
    result.seconds = time.monotonic() - started
    marker = {
        "stage": stage.name,
        "finished_at": now_iso(),
        "children": result.children,
        "files": result.files,
        "records": result.records,
        "failed_units": len(result.failed_units),
    }
    ctx.storage.put(keys.done_key(key), dumps(marker))
    return result


def _check_run(key: str, body_run_id: str) -> None:
    """A task body must belong to the run its key is filed under (outputs follow the key)."""
    run_id = keys.run_id_of_task_key(key)
    if body_run_id != run_id:
        raise BadTask(f"task body names run {body_run_id!r}, but its key {key!r} is in run {run_id!r}")


def _summary(failed: list[dict[str, Any]]) -> tuple[str, str, int | None]:
    first = failed[0]
    more = f" (and {len(failed) - 1} more unit(s))" if len(failed) > 1 else ""
    return first["error_class"], first["message"] + more, first.get("status")


def _unit_failure(ids: dict[str, str], error: PermanentError) -> dict[str, Any]:
    error_class, message, status = describe(error)
    return {**ids, "error_class": error_class, "message": message, "status": status}


def _create(ctx: TaskContext, result: TaskResult, key: str, body: bytes) -> None:
    if ctx.storage.put_if_absent(key, body):
        result.children += 1


def _split_manifest(key: str, body: bytes, ctx: TaskContext, result: TaskResult) -> None:
    """Split the seed into parts so that no invocation takes on thousands of warriors."""
    run_id = keys.run_id_of_manifest(key)
    manifest = parse_manifest(body)
    if manifest.warriors is None:
        warriors = [
            check_id(w["warrior_id"], "warrior_id", PermanentError) for w in ctx.hermes.list_warriors()
        ]
        if not warriors:
            raise PermanentError("Hermes lists no warriors")
    else:
        warriors = list(manifest.warriors)
    per_task = ctx.settings.stage("warriors").units_per_task
    for index, part in enumerate(chunks(sorted(set(warriors)), per_task)):
        _create(
            ctx,
            result,
            keys.warriors_part_key(run_id, index),
            WarriorsPart(run_id, tuple(part)).to_bytes(),
        )


def _warriors_part(key: str, body: bytes, ctx: TaskContext, result: TaskResult) -> None:
    part = WarriorsPart.from_bytes(body)
    _check_run(key, part.run_id)
    per_task = ctx.settings.stage("troops").units_per_task
    for warrior_id in part.warriors:
        try:
            troops = sorted(
                {
                    Troop(check_id(t["troop_id"], "troop_id", PermanentError), t["service"])
                    for t in ctx.hermes.list_troops(warrior_id)
                },
                key=lambda t: t.troop_id,
            )
        except PermanentError as exc:
            result.failed_units.append(_unit_failure({"warrior_id": warrior_id}, exc))
            continue
        for index, batch in enumerate(chunks(troops, per_task)):
            task = TroopsTask(part.run_id, warrior_id, tuple(batch))
            _create(ctx, result, keys.troops_task_key(part.run_id, warrior_id, index), task.to_bytes())


def _troops(key: str, body: bytes, ctx: TaskContext, result: TaskResult) -> None:
    task = TroopsTask.from_bytes(body)
    _check_run(key, task.run_id)
    per_task = ctx.settings.stage("data_groups").units_per_task
    for troop in task.troops:
        try:
            groups = sorted(
                {
                    DataGroup(check_id(g["data_group_id"], "data_group_id", PermanentError), g["name"])
                    for g in ctx.hermes.list_data_groups(task.warrior_id, troop.troop_id)
                },
                key=lambda g: g.data_group_id,
            )
        except PermanentError as exc:
            ids = {
                "warrior_id": task.warrior_id,
                "troop_id": troop.troop_id,
                "service": troop.service,
            }
            result.failed_units.append(_unit_failure(ids, exc))
            continue
        for index, batch in enumerate(chunks(groups, per_task)):
            child = DataGroupsTask(task.run_id, task.warrior_id, troop.troop_id, troop.service, tuple(batch))
            child_key = keys.data_groups_task_key(task.run_id, task.warrior_id, troop.troop_id, index)
            _create(ctx, result, child_key, child.to_bytes())


def _data_groups(key: str, body: bytes, ctx: TaskContext, result: TaskResult) -> None:
    task = DataGroupsTask.from_bytes(body)
    _check_run(key, task.run_id)
    out_key = keys.data_key_for_task(key)
    if ctx.storage.exists(out_key):
        # A previous attempt wrote the output and died before its done marker, maybe
        # before its failure record too. Its footer names the units that had failed, so
        # nothing is fetched again; a refetch could even disagree with the file (a 404
        # since fixed) and silently lose that unit's rows.
        from fanout_core.output import read_metadata

        footer = read_metadata(ctx.storage.get(out_key))
        result.failed_units.extend(json.loads(footer.get(FAILED_UNITS_METADATA, "[]")))
        return
    fetched: list[tuple[str, list[dict[str, Any]]]] = []
    for group in task.data_groups:
        try:
            records = list(ctx.hermes.list_records(task.warrior_id, task.troop_id, group.data_group_id))
        except PermanentError as exc:
            ids = {
                "warrior_id": task.warrior_id,
                "troop_id": task.troop_id,
                "service": task.service,
                "data_group_id": group.data_group_id,
                "name": group.name,
            }
            result.failed_units.append(_unit_failure(ids, exc))
            continue
        fetched.append((group.data_group_id, records))
    if not fetched:
        return
    from fanout_core.output import records_to_parquet  # pandas only where Parquet is written

    data, rows = records_to_parquet(
        run_id=task.run_id,
        warrior_id=task.warrior_id,
        troop_id=task.troop_id,
        service=task.service,
        groups=fetched,
        fetched_at=ctx.clock(),
        metadata={FAILED_UNITS_METADATA: json.dumps(result.failed_units, sort_keys=True)},
    )
    if ctx.storage.put_if_absent(out_key, data):
        result.files += 1
        result.records += rows
