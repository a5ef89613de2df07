"""What every stage's Lambda entrypoint does: configure once at cold start, decode the
event into task attempts (``fanout_aws.events``), hand each to the core's retry
wrapper, send retries, emit metrics.

A transient failure goes to the stage's retry queue with its backoff as delivery
delay (no sleeping function); a permanent one, or the last attempt, leaves its
failure record and the invocation succeeds. Only when even that bookkeeping fails
does the invocation fail: an S3 invocation raises, handing the event to Lambda's own
retries and then to the on-failure destination (the same retry queue); an SQS
invocation reports the message in ``batchItemFailures``, so SQS redelivers it.

Whatever the event holds that is no task for this function is refused before any
work, logged once, and never raised: no retry can make it valid. An SQS message that
is refused is therefore consumed (dropped with its log line), not redelivered.
"""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fanout_aws import metrics
from fanout_aws.config import ENV_STAGE, ENV_TOKEN, LambdaConfig
from fanout_aws.events import Refusal, Scope, decode_event
from fanout_aws.retry_queue import SqsRetryQueue
from fanout_aws.secrets import check_token, read_secret, redact
from fanout_core import keys
from fanout_core.assembly import hermes_client, instance_pacer, retry_policy
from fanout_core.deadlines import task_deadline
from fanout_core.errors import BadTask, ConfigurationError, SettingsError
from fanout_core.failures import failure_record_for, now_iso, write_failure
from fanout_core.hermes import CallStats, HermesClient
from fanout_core.pipeline import TaskContext, TaskResult, run_task
from fanout_core.retry import Attempt, Finished, GaveUp, RetryLater, RetryPolicy, attempt_task
from fanout_core.storage import Storage

log = logging.getLogger("fanout")

__all__ = ["InvocationFailed", "StageRuntime", "handler_for", "read_secret"]


class InvocationFailed(Exception):
    """A task's bookkeeping failed in an S3 invocation; Lambda's retries take over.
    Its message is the cause's, with the Hermes token scrubbed (Lambda logs it)."""


@dataclass
class StageRuntime:
    """Everything built once per cold start and reused by warm invocations."""

    config: LambdaConfig
    storage: Storage
    hermes: HermesClient
    retry_queue: SqsRetryQueue | None
    policy: RetryPolicy
    token: str = ""
    stats: CallStats = field(default_factory=CallStats)

    @classmethod
    def from_config(cls, config: LambdaConfig, *, token: str | None = None) -> StageRuntime:
        import boto3

        from fanout_aws.s3_storage import S3Storage

        settings = config.settings
        if token is None:
            if config.token:
                token = check_token(config.token, f"${ENV_TOKEN}")
            else:
                token = read_secret(boto3.client("secretsmanager"), config.token_secret or "")
        stats = CallStats()
        hermes = hermes_client(
            settings,
            url=settings.hermes_url,
            token=token,
            pacer=instance_pacer(settings, config.stage.name),
            stats=stats,
            pool_size=4,
        )
        queue = SqsRetryQueue(config.retry_queue_url, boto3.client("sqs")) if config.retry_queue_url else None
        return cls(
            config=config,
            storage=S3Storage(config.bucket),
            hermes=hermes,
            retry_queue=queue,
            policy=retry_policy(settings),
            token=token,
            stats=stats,
        )

    @property
    def scope(self) -> Scope:
        return Scope(
            bucket=self.config.bucket, stage=self.config.stage, max_attempts=self.policy.max_attempts
        )

    def handle(self, event: object, context: Any) -> dict[str, Any] | None:
        decoded = decode_event(event, self.scope)
        failed_ids: list[str] = []
        unreported: list[Exception] = []

        def failed(message_id: str | None, error: Exception) -> None:
            if decoded.from_sqs and message_id is not None:
                if message_id not in failed_ids:
                    failed_ids.append(message_id)
            else:
                unreported.append(error)

        for refusal in decoded.refusals:
            if (error := self._refuse(refusal)) is not None:
                failed(refusal.message_id, error)
        for item in decoded.attempts:
            if (error := self._run(item.attempt, context)) is not None:
                failed(item.message_id, error)
        if unreported:  # Lambda retries the event; finished tasks are skipped then
            first = unreported[0]
            raise InvocationFailed(self._scrub(f"{type(first).__name__}: {first}")) from None
        if decoded.from_sqs:
            return {"batchItemFailures": [{"itemIdentifier": i} for i in failed_ids]}
        return None

    def _scrub(self, text: str) -> str:
        return redact(text, self.token)

    def _refuse(self, refusal: Refusal) -> Exception | None:
        """Log a refusal once; record it as the task's failure if it says so. Returns the
        exception if writing that record failed (the delivery is then retried)."""
        line: dict[str, Any] = {"refused": True, "reason": refusal.reason}
        if refusal.key is not None:
            line["key"] = refusal.key
        line["stage"] = self.config.stage.name
        if refusal.message_id is not None:
            line["message_id"] = refusal.message_id
        try:
            if refusal.fails_task and refusal.key is not None:
                line["failure_record"] = self._record_refusal(refusal, refusal.key)
            return None
        except Exception as exc:
            line["error"] = self._scrub(f"{type(exc).__name__}: {exc}")[:500]
            return exc
        finally:
            log.warning(self._scrub(json.dumps(line, ensure_ascii=False)))

    def _record_refusal(self, refusal: Refusal, key: str) -> bool:
        """Write the refusal as the task's failure record, unless the task has already
        finished or failed (a forged message must not overwrite its real outcome)."""
        if self.storage.exists(keys.done_key(key)) or self.storage.exists(keys.failed_key(key)):
            return False
        record = failure_record_for(
            key,
            BadTask(refusal.reason),
            attempts=refusal.attempts,
            first_attempt_at=refusal.first_attempt_at or now_iso(),
        )
        write_failure(self.storage, record)
        return True

    def _run(self, attempt: Attempt, context: Any) -> Exception | None:
        """One attempt of one task; returns the exception if its bookkeeping failed."""
        before = self.stats.snapshot()
        remaining = context.get_remaining_time_in_millis() / 1000 if context is not None else 900.0
        self.hermes.set_deadline(task_deadline(remaining))
        ctx = TaskContext(storage=self.storage, hermes=self.hermes, settings=self.config.settings)

        def work(a: Attempt) -> TaskResult:
            return run_task(a.key, ctx, attempts=a.number, first_attempt_at=a.first_attempt_at)

        counts = {"Tasks": 1.0, "Retries": 0.0, "Failures": 0.0, "RecordsWritten": 0.0}
        try:
            outcome = attempt_task(attempt, work, self.storage, self.policy)
            if isinstance(outcome, RetryLater):
                if self.retry_queue is None:
                    raise outcome.error
                self.retry_queue.send(outcome.attempt, outcome.delay_s)
                counts["Retries"] = 1.0
                self._log(
                    logging.WARNING,
                    task=attempt.key,
                    attempt=attempt.number,
                    retry_in_s=outcome.delay_s,
                    error=str(outcome.error),
                )
            elif isinstance(outcome, GaveUp):
                counts["Failures"] = 1.0
                self._log(
                    logging.ERROR,
                    task=attempt.key,
                    gave_up=outcome.record.error_class,
                    attempts=attempt.number,
                )
            elif isinstance(outcome, Finished):
                result: TaskResult = outcome.result
                counts["RecordsWritten"] = float(result.records)
                counts["Failures"] = float(bool(result.failed_units))
            return None
        except Exception as exc:
            self._log(
                logging.ERROR,
                task=attempt.key,
                error=f"could not record its outcome: {type(exc).__name__}: {exc}",
                traceback=traceback.format_exc(),
            )
            return exc
        finally:
            after = self.stats.snapshot()
            counts["ApiCalls"] = after["calls"] - before["calls"]
            counts["Throttled429"] = after["throttled"] - before["throttled"]
            metrics.emit(self.config.stage.name, counts)

    def _log(self, level: int, **fields: Any) -> None:
        """One JSON log line; every string in it scrubbed of the token."""
        for name in ("error", "traceback"):
            if isinstance(fields.get(name), str):
                fields[name] = self._scrub(fields[name])[: 500 if name == "error" else 4000]
        log.log(level, self._scrub(json.dumps(fields, ensure_ascii=False)))


def record_configuration_error(
    config: LambdaConfig, event: object, error: Exception
) -> dict[str, Any] | None:
    """One failure record per task ``event`` names (unless it finished or failed already),
    kind ``task``, error class ``ConfigurationError`` with the cause; the invocation
    succeeds. Raises only if a record cannot be written (Lambda's retries take over)."""
    from fanout_aws.s3_storage import S3Storage

    cause = ConfigurationError(str(error))
    storage = S3Storage(config.bucket)
    scope = Scope(bucket=config.bucket, stage=config.stage, max_attempts=config.settings.max_attempts)
    decoded = decode_event(event, scope)
    recorded = []
    for item in decoded.attempts:
        if storage.exists(keys.done_key(item.key)):
            continue
        record = failure_record_for(
            item.key, cause, attempts=item.attempt.number, first_attempt_at=item.attempt.first_attempt_at
        )
        write_failure(storage, record)
        recorded.append(item.key)
    log.error(json.dumps({"configuration_error": str(cause)[:500], "recorded": recorded}, ensure_ascii=False))
    return {"batchItemFailures": []} if decoded.from_sqs else None


def handler_for(stage_name: str) -> Callable[[Any, Any], dict[str, Any] | None]:
    """The Lambda entrypoint of one stage; the runtime is built (and the configuration
    checked) on the first call, and reused by warm invocations."""
    runtime: list[StageRuntime] = []

    def handler(event: Any, context: Any) -> dict[str, Any] | None:
        if not runtime:
            config = LambdaConfig.from_environ()
            if config.stage.name != stage_name:
                raise SettingsError(
                    f"{ENV_STAGE} is {config.stage.name!r} but this is the {stage_name} handler; "
                    "point the function at its own stage's handler module"
                )
            try:
                runtime.append(StageRuntime.from_config(config))
            except (ConfigurationError, SettingsError) as exc:
                # Nothing can run until an operator fixes this: fail each task now with
                # the cause, instead of hours of Lambda and queue retries ending in a DLQ.
                # The next invocation tries again, so a fixed secret needs no redeploy.
                return record_configuration_error(config, event, exc)
        return runtime[0].handle(event, context)

    handler.__name__ = f"{stage_name}_handler"
    return handler
