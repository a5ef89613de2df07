"""``run_task``: the one function every runtime calls for one task.

Skip it if its done marker exists; parse its key once into an address; read its body
and check it against that address; hand it to its stage's work (from the stage table);
write the failure record of units that failed permanently; write the done marker last.
Idempotent: children and outputs are created with ``put_if_absent``, a listing stage's
children are decided once (``fanout_core.fan_out``), so a task that runs twice, or is
retried after it half-finished, writes nothing twice and triggers no child twice.

Transient errors propagate (the runtime retries the whole task); a permanent error of
one unit (a 404 for one of its ids) fails that unit alone.
"""

from __future__ import annotations

import time

from fanout_core import keys
from fanout_core.bodies import TaskBody, dumps, parse_manifest
from fanout_core.errors import BadTask
from fanout_core.failures import FailureRecord, now_iso, write_failure
from fanout_core.fan_out import split_seed
from fanout_core.storage import NoSuchKey
from fanout_core.task_context import Api, Task, TaskContext, TaskResult

__all__ = ["Api", "TaskContext", "TaskResult", "read_task", "run_task"]


def run_task(
    key: str, ctx: TaskContext, *, attempts: int = 1, first_attempt_at: str | None = None
) -> TaskResult:
    """Do the task stored at ``key``; raise on a whole-task failure, for the runtime to decide."""
    address = ctx.table.parse(key)  # a key that is no task is refused before any work
    started = time.monotonic()
    result = TaskResult(stage=address.stage.name, key=address.key)
    if ctx.storage.exists(address.done_key):
        result.skipped = True
        return result
    task = read_task(address, ctx, attempt=attempts)
    if task.address.is_seed:
        split_seed(task, ctx, result)
    else:
        task.stage.work(task, ctx, result)
    if result.failed_units:
        _write_unit_failures(task, ctx, result, attempts, first_attempt_at)
    result.seconds = time.monotonic() - started
    marker = {
        "stage": address.stage.name,
        "finished_at": now_iso(),
        "children": result.children,
        "files": result.files,
        "records": result.records,
        "duplicates": result.duplicates,
        "failed_units": len(result.failed_units),
        "seconds": round(result.seconds, 3),
    }
    ctx.storage.put(address.done_key, dumps(marker))
    return result


def read_task(address: keys.TaskAddress, ctx: TaskContext, *, attempt: int = 1) -> Task:
    """The task's body, parsed and checked against its key: a body of another run or
    another path would write rows into folders that are not theirs."""
    try:
        raw = ctx.storage.get(address.key)
    except NoSuchKey:
        raise BadTask(f"task object {address.key!r} does not exist") from None
    if address.is_seed:
        return Task(address, parse_manifest(raw, ctx.table.api), attempt)
    body: TaskBody = address.stage.body.from_bytes(raw)
    if body.run_id != address.run_id:
        raise BadTask(
            f"task body names run {body.run_id!r}, but its key {address.key!r} is in run {address.run_id!r}"
        )
    if not address.names(body.path):
        raise BadTask(f"task body's ids {list(body.path)!r} are not the folders of its key {address.key!r}")
    return Task(address, body, attempt)


def _write_unit_failures(
    task: Task, ctx: TaskContext, result: TaskResult, attempts: int, first_attempt_at: str | None
) -> None:
    failed = result.failed_units
    first = failed[0]
    more = f" (and {len(failed) - 1} more unit(s))" if len(failed) > 1 else ""
    write_failure(
        ctx.storage,
        FailureRecord(
            run_id=task.address.run_id,
            stage=task.stage.name,
            task_key=task.address.key,
            kind="units",
            error_class=first["error_class"],
            error_kind=first.get("error_kind", ""),
            message=first["message"] + more,
            status=first.get("status"),
            transient=False,
            attempts=attempts,
            first_attempt_at=first_attempt_at or now_iso(),
            last_attempt_at=now_iso(),
            units=failed,
        ),
    )
