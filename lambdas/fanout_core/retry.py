"""The retry-extension wrapper, shared by the Lambda handlers and the local runtime.

Transient errors get ``max_attempts`` tries with exponentially growing, jittered
delays; permanent errors get one. A task that gives up leaves exactly one failure
record (``fanout_core.failures``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from fanout_core.errors import is_transient
from fanout_core.failures import FailureRecord, failure_record_for, now_iso, write_failure
from fanout_core.settings import EnvironmentSettings
from fanout_core.stages import STAGES, StageTable
from fanout_core.storage import Storage


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    max_attempts: int = 6
    base_delay_s: float = 60.0
    max_delay_s: float = 900.0

    @classmethod
    def from_settings(cls, settings: EnvironmentSettings) -> RetryPolicy:
        return cls(
            max_attempts=settings.max_attempts,
            base_delay_s=settings.retry_base_delay_s,
            max_delay_s=settings.retry_max_delay_s,
        )

    def should_retry(self, error: BaseException, attempt: int) -> bool:
        """After ``attempt`` tries (1-based) ended in ``error``, is another one due?"""
        return is_transient(error) and attempt < self.max_attempts

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Full-jitter backoff before try ``attempt + 1``: uniform in [cap/2, cap]."""
        cap = min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))
        r = (rng or random).random()
        return cap / 2 + r * cap / 2


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
    *,
    table: StageTable = STAGES,
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
            attempt.key, exc, attempts=attempt.number, first_attempt_at=attempt.first_attempt_at, table=table
        )
        write_failure(storage, record)
        return GaveUp(record)
