"""Retry decisions and failure records, shared by the Lambda wrapper and the local runtime.

Transient errors get ``max_attempts`` tries with exponentially growing, jittered
delays; permanent errors get one. A task that gives up leaves exactly one failure
record at ``failed/<task key>``, holding all that a redrive needs.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from fanout_core import keys
from fanout_core.errors import is_transient
from fanout_core.stages import stage_for_key
from fanout_core.storage import NoSuchKey, Storage
from fanout_core.tasks import dumps


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    max_attempts: int = 6
    base_delay_s: float = 60.0
    max_delay_s: float = 900.0

    def should_retry(self, error: BaseException, attempt: int) -> bool:
        """After ``attempt`` tries (1-based) ended in ``error``, is another one due?"""
        return is_transient(error) and attempt < self.max_attempts

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Full-jitter backoff before try ``attempt + 1``: uniform in [cap/2, cap]."""
        cap = min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))
        r = (rng or random).random()
        return cap / 2 + r * cap / 2


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
    status: int | None
    transient: bool
    attempts: int
    first_attempt_at: str
    last_attempt_at: str
    units: list[dict[str, Any]] = field(default_factory=list)

    def to_bytes(self) -> bytes:
        return dumps(asdict(self))

    @classmethod
    def from_bytes(cls, body: bytes) -> FailureRecord:
        return cls(**json.loads(body))


def describe(error: BaseException) -> tuple[str, str, int | None]:
    return type(error).__name__, str(error)[:2000], getattr(error, "status", None)


def failure_record_for(
    task_key: str,
    error: BaseException,
    *,
    attempts: int,
    first_attempt_at: str,
    last_attempt_at: str | None = None,
) -> FailureRecord:
    stage = stage_for_key(task_key)
    try:
        run_id: str | None = keys.run_id_of_task_key(task_key)
    except Exception:
        run_id = None
    error_class, message, status = describe(error)
    return FailureRecord(
        run_id=run_id,
        stage=stage.name if stage else None,
        task_key=task_key,
        kind="task",
        error_class=error_class,
        message=message,
        status=status,
        transient=is_transient(error),
        attempts=attempts,
        first_attempt_at=first_attempt_at,
        last_attempt_at=last_attempt_at or now_iso(),
    )


def write_failure(storage: Storage, record: FailureRecord) -> None:
    """Write the task's one failure record (a later one for the same task replaces it)."""
    storage.put(keys.failed_key(record.task_key), record.to_bytes())


def read_failure(storage: Storage, task_key: str) -> FailureRecord | None:
    try:
        return FailureRecord.from_bytes(storage.get(keys.failed_key(task_key)))
    except NoSuchKey:
        return None


@dataclass(frozen=True, kw_only=True)
class Attempt:
    """One try of one task: the key, which try this is, and when the first one began."""

    key: str
    number: int = 1
    first_attempt_at: str = field(default_factory=now_iso)

    def next(self) -> Attempt:
        return Attempt(key=self.key, number=self.number + 1, first_attempt_at=self.first_attempt_at)


@dataclass(frozen=True)
class Finished:
    result: Any


@dataclass(frozen=True)
class RetryLater:
    attempt: Attempt
    """The next try, to be made after ``delay_s``."""
    delay_s: float
    error: BaseException


@dataclass(frozen=True)
class GaveUp:
    record: FailureRecord


AttemptOutcome = Finished | RetryLater | GaveUp


def attempt_task(
    attempt: Attempt,
    work: Any,
    storage: Storage,
    policy: RetryPolicy,
    rng: random.Random | None = None,
) -> AttemptOutcome:
    """The retry-extension wrapper: run ``work(attempt)`` and decide what follows a failure.

    Both runtimes call it: the local one schedules ``RetryLater`` on its timer, the
    Lambda one sends it to the stage's retry queue with a delivery delay, so no
    function sleeps through a backoff. Writing the failure record is the last step of
    giving up; if that write fails the error propagates and the runtime's own retry
    (Lambda's, or the local timer's) takes over, so the task is never dropped silently.
    """
    try:
        return Finished(work(attempt))
    except Exception as exc:
        if policy.should_retry(exc, attempt.number):
            return RetryLater(attempt.next(), policy.delay(attempt.number, rng), exc)
        record = failure_record_for(
            attempt.key, exc, attempts=attempt.number, first_attempt_at=attempt.first_attempt_at
        )
        write_failure(storage, record)
        return GaveUp(record)
