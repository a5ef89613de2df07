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

    def __post_init__(self) -> None:
        if self.error_kind not in KINDS:
            self.error_kind = kind_in(asdict(self))
        for unit in self.units:
            if unit.get("error_kind") not in KINDS:
                unit["error_kind"] = kind_in(unit)

    def to_bytes(self) -> bytes:
        return dumps(asdict(self))

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


def write_failure(storage: Storage, record: FailureRecord) -> None:
    """Write the task's one failure record (a later one for the same task replaces it)."""
    storage.put(keys.failed_key(record.task_key), record.to_bytes())


def read_failure(storage: Storage, task_key: str) -> FailureRecord | None:
    try:
        return FailureRecord.from_bytes(storage.get(keys.failed_key(task_key)))
    except NoSuchKey:
        return None
