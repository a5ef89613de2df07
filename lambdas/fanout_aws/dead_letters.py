"""The dead-letter recorder: whatever reaches a stage's dead-letter queue becomes the
task's one failure record, so no task is lost silently in a DLQ.

A message lands in a DLQ after its queue's ``maxReceiveCount`` receives all ended
without a delete: every invocation on it crashed, timed out, ran out of memory, could
not start, was stopped by Lambda's recursive-loop detection, or was throttled. The
stage's own function cannot be trusted to record it (it is what kept failing), so a
separate small function, with no secret and no Hermes client, consumes every stage's
DLQ and writes ``failed/<task key>`` (kind ``crashed``, or ``configuration`` when the
on-failure record inside says the function could not start), unless the task has a
done marker (a later retry finished it) or a record already. A second delivery writes
nothing. The message is then deleted: ``fanout redrive`` re-runs the task from its
record, and a message the recorder itself cannot handle stays in the DLQ (its depth
alarm rings) for ``fanout redrive --from-dlq``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fanout_aws import metrics
from fanout_aws.events import TaskAttempt, parse_event
from fanout_core.failures import FailureRecord, lambda_failure_record, record_unless_settled
from fanout_core.stages import stage_for_key
from fanout_core.storage import Storage

log = logging.getLogger("fanout")
DEAD_LETTER = "DeadLetterQueue"
"""The condition a record written from a dead letter names (Lambda's own when it has one)."""


@dataclass(frozen=True)
class DeadLetterRecorder:
    storage: Storage
    bucket: str
    environment: str

    def handle(self, event: object) -> dict[str, Any]:
        decoded = parse_event(event)
        failed_ids: list[str] = []
        written: dict[str, float] = {}
        for refusal in decoded.refusals:  # nothing to record: consumed with a log line
            log.warning(
                "dead letter refused",
                extra={"outcome": "refused", "reason": refusal.reason, "message_id": refusal.message_id},
            )
        for item in decoded.attempts:
            stage = stage_for_key(item.key)
            if stage is None or (item.s3 is not None and item.s3.bucket != self.bucket):
                log.warning(
                    "dead letter names no task of this bucket",
                    extra={"outcome": "refused", "task_key": item.key, "message_id": item.message_id},
                )
                continue
            try:
                if record_unless_settled(self.storage, dead_letter_record(item)):
                    written[stage.name] = written.get(stage.name, 0.0) + 1
                    outcome = "failed"
                else:
                    outcome = "already_settled"
            except Exception as exc:
                log.error(
                    "could not record a dead letter",
                    extra={"outcome": "error", "task_key": item.key, "error": f"{type(exc).__name__}: {exc}"},
                )
                if item.message_id is not None and item.message_id not in failed_ids:
                    failed_ids.append(item.message_id)
                continue
            log.error(
                f"{stage.name} {outcome} {item.key}",
                extra={
                    "stage": stage.name,
                    "task_key": item.key,
                    "outcome": outcome,
                    "error_kind": "crashed",
                },
            )
        for stage_name, count in written.items():
            metrics.emit(self.environment, stage_name, {"Failures": count})
        return {"batchItemFailures": [{"itemIdentifier": i} for i in failed_ids]}


def dead_letter_record(item: TaskAttempt) -> FailureRecord:
    """The failure record of a task whose message reached a DLQ."""
    report = item.report
    # The decoder counts each earlier receive as a delivery that died; on a DLQ message
    # those receives are reported as invoke_count instead, and attempts stay the body's.
    number = item.attempt.number - (item.receives - 1)
    if report is not None:  # an on-failure record that the stage function could not handle
        tried = number - 1
        what = f"Lambda gave up after {report.invoke_count} invocation(s) ({report.condition})"
        error_type, error_message = report.error_type, report.error_message
        kind = report.error_kind
    else:  # a retry message, or (engine queue) an S3 notification
        tried = number
        what = f"attempt {number}'s message was never processed"
        error_type, error_message, kind = None, None, "crashed"
    message = (
        f"{what}; then its message reached the dead-letter queue: every invocation on it "
        "crashed, timed out, ran out of memory, could not start or was throttled"
    )
    return lambda_failure_record(
        item.key,
        error_kind=kind,
        message=message,
        attempts=tried,
        first_attempt_at=item.attempt.first_attempt_at,
        condition=report.condition if report is not None else DEAD_LETTER,
        invoke_count=report.invoke_count if report is not None else item.receives,
        error_type=error_type,
        error_message=error_message,
    )


def dead_letter_handler() -> Callable[[Any, Any], dict[str, Any]]:
    """The recorder's Lambda entrypoint, configured on its first call."""
    recorder: list[DeadLetterRecorder] = []

    def handler(event: Any, _context: Any) -> dict[str, Any]:
        if not recorder:
            from fanout_aws.config import RecorderConfig
            from fanout_aws.s3_storage import S3Storage

            config = RecorderConfig.from_environ()
            recorder.append(DeadLetterRecorder(S3Storage(config.bucket), config.bucket, config.env_name))
        return recorder[0].handle(event)

    return handler
