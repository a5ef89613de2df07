"""The dead-letter recorder: whatever reaches a stage's dead-letter queue becomes the
task's one failure record, so no task is lost silently in a DLQ.

A message lands in a DLQ after its queue's ``maxReceiveCount`` receives all ended
without a delete: every invocation on it crashed, timed out, ran out of memory, could
not start, or was stopped by Lambda's recursive-loop detection (no receive is throttled:
each mapping polls no more than its function's reservation). The
stage's own function cannot be trusted to record it (it is what kept failing), so a
separate small function, with no secret and no API client, consumes every stage's
DLQ and writes ``failed/<task key>`` (kind ``crashed``, or ``configuration`` when the
on-failure record inside says the function could not start), unless the task has a
done marker (a later retry finished it) or a record already. A second delivery writes
nothing. The message is then deleted: ``fanout redrive`` re-runs the task from its
record, and a message the recorder itself cannot handle stays in the DLQ (its depth
alarm rings) for ``fanout redrive --from-dlq``.

How often the task ran. SQS documents ``ApproximateReceiveCount`` as the receives
"across all queues" of a message not yet deleted, and a dead letter is the same message
(its id and enqueue time kept): real SQS, as observed in public reports (a DLQ message
whose count exceeds its source's ``maxReceiveCount``), and moto keep the count when the
redrive policy moves it. So the count the recorder sees is the source queue's receives
plus its own, and SQS does not document whether the receive that moved it counts too;
the recorder therefore takes nothing from it. It takes the source's receives from the
redrive policy instead: a message reaches a DLQ only after ``maxReceiveCount`` receives
of its source queue, which is ``max_attempts`` + 1 for every queue feeding a stage
(``fanout_core.settings.receives_before_dead_letter``; the stack passes
``max_attempts``). Each of those receives ran the task while it had attempts left (a
receive after the first is a delivery that died), and the one past ``max_attempts``
tried to write the record, so the record says ``max_attempts`` attempts and, as its
invoke count, ``max_attempts`` + 1 (one invocation per receive). Only an on-failure
record reporting a crash differs: the retry consumer records such a record on each
receive and never runs the task, so its attempts and invoke count are Lambda's own
tries. The counts are as approximate as SQS's receive count is.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from fanout_aws import metrics
from fanout_aws.events import Refusal, TaskAttempt, parse_event, task_key_problem
from fanout_aws.log_fields import cut, log_fields, shown
from fanout_core.failures import FailureRecord, lambda_failure_record, now_iso, record_unless_settled
from fanout_core.settings import receives_before_dead_letter
from fanout_core.stages import STAGES, StageTable
from fanout_core.storage import Storage

log = logging.getLogger("fanout")
DEAD_LETTER = "DeadLetterQueue"
"""The condition a record written from a dead letter names (Lambda's own when it has one)."""


@dataclass(frozen=True)
class DeadLetterRecorder:
    storage: Storage
    bucket: str
    environment: str
    max_attempts: int
    """The environment's; its queues' ``maxReceiveCount`` is one more."""
    table: StageTable = STAGES
    """The stage table of the functions whose dead letters these are."""

    def handle(self, event: object) -> dict[str, Any]:
        decoded = parse_event(event)
        failed_ids: list[str] = []
        written: dict[str, float] = {}

        def record(key: str, message_id: str | None, build: Callable[[], FailureRecord]) -> None:
            stage = self.table.for_key(key)
            assert stage is not None  # the key parsed as a task
            try:
                made = build()
                outcome = "failed" if record_unless_settled(self.storage, made) else "already_settled"
            except Exception as exc:
                log_fields(
                    log,
                    logging.ERROR,
                    "could not record a dead letter",
                    {"outcome": "error", "task_key": key, "error": f"{type(exc).__name__}: {exc}"},
                )
                if message_id is not None and message_id not in failed_ids:
                    failed_ids.append(message_id)
                return
            if outcome == "failed":
                written[stage.name] = written.get(stage.name, 0.0) + 1
            fields = {"stage": stage.name, "task_key": key, "outcome": outcome, "error_kind": made.error_kind}
            log_fields(log, logging.ERROR, f"{stage.name} {outcome} {key}", fields)

        for refusal in decoded.refusals:
            key = refusal.key
            if refusal.fails_task and key is not None and self._task_problem(key, refusal.bucket) is None:
                # It names a task of this bucket, but its count or time is unreadable: the
                # task's record says what could be read, so the task is not lost.
                record(
                    key,
                    refusal.message_id,
                    partial(refusal_record, refusal, key, max_attempts=self.max_attempts, table=self.table),
                )
                continue
            fields = {"outcome": "refused", "reason": refusal.reason, "message_id": refusal.message_id}
            log_fields(log, logging.WARNING, "dead letter refused", fields)
        for item in decoded.attempts:
            bucket = item.s3.bucket if item.s3 is not None else None
            if (problem := self._task_problem(item.key, bucket)) is not None:
                fields = {
                    "outcome": "refused",
                    "task_key": item.key,
                    "reason": problem,
                    "message_id": item.message_id,
                }
                log_fields(log, logging.WARNING, "dead letter names no task of this bucket", fields)
                continue
            record(
                item.key,
                item.message_id,
                partial(dead_letter_record, item, max_attempts=self.max_attempts, table=self.table),
            )
        for stage_name, count in written.items():
            metrics.emit(self.environment, stage_name, {"Failures": count})
        return {"batchItemFailures": [{"itemIdentifier": i} for i in failed_ids]}

    def _task_problem(self, key: str, bucket: str | None) -> str | None:
        """Why ``key`` (from a notification of ``bucket``) is no task of this bucket."""
        if bucket is not None and bucket != self.bucket:
            return f"bucket {shown(bucket)} is not {self.bucket!r}"
        return task_key_problem(key, table=self.table)


def refusal_record(
    refusal: Refusal, key: str, *, max_attempts: int, table: StageTable = STAGES
) -> FailureRecord:
    """The failure record of a dead letter that names a task but whose count or time could
    not be read (a string or missing invoke count, attempt 0, no first_attempt_at): what
    could be read, the attempts clamped to ``max_attempts``; kind ``crashed`` if Lambda
    reported it, else ``bad_task``."""
    receives = receives_before_dead_letter(max_attempts)
    message = (
        f"its message was received {receives} times without an outcome and reached the "
        f"dead-letter queue; it could not be read whole: {refusal.reason}"
    )
    return lambda_failure_record(
        key,
        error_kind="crashed" if refusal.lambda_failure else "bad_task",
        message=cut(message, 1000),
        attempts=min(max(refusal.attempts, 1), max_attempts),
        first_attempt_at=refusal.first_attempt_at or now_iso(),
        condition=DEAD_LETTER,
        invoke_count=receives,
        error_type=None,
        error_message=None,
        table=table,
    )


def dead_letter_record(item: TaskAttempt, *, max_attempts: int, table: StageTable = STAGES) -> FailureRecord:
    """The failure record of a task whose message reached a DLQ after its source queue's
    ``max_attempts`` + 1 receives (see the module's note on receive counts)."""
    receives = receives_before_dead_letter(max_attempts)
    report = item.report
    # The decoder adds the receives before this one to the body's attempt; on a dead letter
    # those are the DLQ's count, not the task's, so take the body's own attempt back.
    number = item.attempt.number - (item.receives - 1)
    ends = (
        "then its message reached the dead-letter queue: every invocation on it crashed, "
        "timed out, ran out of memory or could not start"
    )
    if report is not None and not (report.is_bookkeeping or report.never_ran):
        # A crash Lambda reported: each receive tried to record it, none ran the task.
        attempts, invoke_count = min(max(number - 1, 1), max_attempts), report.invoke_count
        message = (
            f"Lambda gave up after {report.invoke_count} invocation(s) ({report.condition}); "
            f"its on-failure record was received {receives} times and none could record it; {ends}"
        )
    else:  # a retry message, an S3 notification (engine queue), or a report to run again
        # Receive r ran attempt number + r - 1 while that was within max_attempts.
        attempts = min(number + receives - 1, max_attempts)
        invoke_count = receives + (report.invoke_count if report is not None else 0)
        lead = (
            f"Lambda gave up after {report.invoke_count} invocation(s) ({report.condition}); "
            if report is not None
            else ""
        )
        died = f"attempts {number} to {attempts} died and " if number <= attempts else ""
        message = (
            f"{lead}its message was received {receives} times without an outcome: {died}the "
            f"receive past max_attempts={max_attempts} could not record it; {ends}"
        )
    return lambda_failure_record(
        item.key,
        error_kind=report.error_kind if report is not None else "crashed",
        message=message,
        attempts=attempts,
        first_attempt_at=item.attempt.first_attempt_at,
        condition=report.condition if report is not None else DEAD_LETTER,
        invoke_count=invoke_count,
        error_type=report.error_type if report is not None else None,
        error_message=report.error_message if report is not None else None,
        table=table,
    )


def dead_letter_handler() -> Callable[[Any, Any], dict[str, Any]]:
    """The recorder's Lambda entrypoint, configured on its first call."""
    recorder: list[DeadLetterRecorder] = []

    def handler(event: Any, _context: Any) -> dict[str, Any]:
        if not recorder:
            from fanout_aws.config import RecorderConfig
            from fanout_aws.s3_storage import S3Storage

            config = RecorderConfig.from_environ()
            recorder.append(  # the description's table, picked once at cold start
                DeadLetterRecorder(
                    # Its role may list only done/ and failed/ (stacks.constructs.dead_letters):
                    # a HEAD would be answered 403 and settled by a listing anyway.
                    S3Storage(config.bucket, exists_by_head=False),
                    config.bucket,
                    config.env_name,
                    config.max_attempts,
                    config.table,
                )
            )
        return recorder[0].handle(event)

    return handler
