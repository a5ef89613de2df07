"""Failure records: the one object a task that gave up leaves, at ``failed/<task key>``.

It holds everything a redrive needs (run, stage, key, kind, error, attempts, the failed
units), so an operator needs nothing else to see why a task failed and to try again.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from fanout_core import keys
from fanout_core.bodies import dumps
from fanout_core.error_kinds import KINDS, kind_in, kind_of
from fanout_core.errors import FanoutError, describe, is_transient
from fanout_core.stages import STAGES, StageTable
from fanout_core.storage import NoSuchKey, Storage


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(kw_only=True)
class FailureRecord:
    run_id: str | None
    stage: str | None
    task_key: str
    kind: str
    """``task``: the whole task gave up; ``units``: some of its units failed permanently."""
    error_class: str
    message: str
    error_kind: str = ""
    """Why, in plain words (``fanout_core.error_kinds.KINDS``); derived when a record lacks it."""
    status: int | None
    transient: bool
    attempts: int
    first_attempt_at: str
    last_attempt_at: str
    units: list[dict[str, Any]] = field(default_factory=list)
    condition: str | None = None
    """When Lambda, not fanout, gave up on the task (kind ``crashed`` or
    ``configuration``): its condition, e.g. ``RetriesExhausted``, ``EventAgeExceeded``,
    or ``DeadLetterQueue`` when the message reached a dead-letter queue."""
    approximate_invoke_count: int | None = None
    """How often Lambda invoked the function on it (or SQS delivered it)."""
    error_type: str | None = None
    """What Lambda reported: ``Runtime.ExitError``, ``Sandbox.Timedout``, ..."""
    error_message: str | None = None

    def __post_init__(self) -> None:
        if self.error_kind not in KINDS:
            self.error_kind = kind_in(asdict(self))
        for unit in self.units:
            if unit.get("error_kind") not in KINDS:
                unit["error_kind"] = kind_in(unit)

    def to_bytes(self) -> bytes:
        """Lambda's fields only when it reported them: other records keep their bytes."""
        doc = {k: v for k, v in asdict(self).items() if not (k in _LAMBDA_FIELDS and v is None)}
        return dumps(doc)

    @classmethod
    def from_bytes(cls, body: bytes) -> FailureRecord:
        """Fields this version does not know (a newer writer's) are ignored, not fatal."""
        fields = json.loads(body)
        return cls(**{k: v for k, v in fields.items() if k in _FIELDS})


def failure_record_for(
    task_key: str,
    error: BaseException,
    *,
    attempts: int,
    first_attempt_at: str,
    last_attempt_at: str | None = None,
    table: StageTable = STAGES,
) -> FailureRecord:
    """The record of a whole task that gave up (its key may even be malformed)."""
    stage = table.for_key(task_key)
    try:
        run_id: str | None = table.parse(task_key).run_id
    except FanoutError:
        run_id = None
    error_class, message, status = describe(error)
    return FailureRecord(
        run_id=run_id,
        stage=stage.name if stage else None,
        task_key=task_key,
        kind="task",
        error_class=error_class,
        error_kind=kind_of(error),
        message=message,
        status=status,
        transient=is_transient(error),
        attempts=attempts,
        first_attempt_at=first_attempt_at,
        last_attempt_at=last_attempt_at or now_iso(),
    )


_FIELDS = {f.name for f in fields(FailureRecord)}
_LAMBDA_FIELDS = {"condition", "approximate_invoke_count", "error_type", "error_message"}


def lambda_failure_record(
    task_key: str,
    *,
    error_kind: str,
    message: str,
    attempts: int,
    first_attempt_at: str,
    condition: str,
    invoke_count: int | None,
    error_type: str | None,
    error_message: str | None,
    table: StageTable = STAGES,
) -> FailureRecord:
    """The record of a task Lambda (or SQS) gave up on: the process crashed, timed out,
    ran out of memory, could not start, or its message reached a dead-letter queue.
    Kind ``crashed`` or ``configuration``; not transient, so no runtime retries it on
    its own: ``fanout redrive`` does, once the cause is fixed."""
    stage = table.for_key(task_key)
    try:
        run_id: str | None = table.parse(task_key).run_id
    except FanoutError:
        run_id = None
    return FailureRecord(
        run_id=run_id,
        stage=stage.name if stage else None,
        task_key=task_key,
        kind="task",
        error_class=error_type or condition,
        error_kind=error_kind,
        message=message,
        status=None,
        transient=False,
        attempts=max(attempts, 1),
        first_attempt_at=first_attempt_at,
        last_attempt_at=now_iso(),
        condition=condition,
        approximate_invoke_count=invoke_count,
        error_type=error_type,
        error_message=error_message,
    )


def record_unless_settled(storage: Storage, record: FailureRecord) -> bool:
    """Write ``record`` unless the task finished (a done marker: a retry that got through
    made it obsolete) or already has a failure record; True if it was written.

    Idempotent: a second delivery of the same dead letter or on-failure record writes
    nothing, and never replaces the record fanout itself wrote.
    """
    if storage.exists(keys.done_key(record.task_key)):
        return False
    return storage.put_if_absent(keys.failed_key(record.task_key), record.to_bytes())


def write_failure(storage: Storage, record: FailureRecord) -> None:
    """Write the task's one failure record (a later one for the same task replaces it)."""
    storage.put(keys.failed_key(record.task_key), record.to_bytes())


def read_failure(storage: Storage, task_key: str) -> FailureRecord | None:
    try:
        return FailureRecord.from_bytes(storage.get(keys.failed_key(task_key)))
    except NoSuchKey:
        return None
