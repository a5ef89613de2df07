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

Two cases end a task at once, with a failure record, instead of hours of retries:

- a configuration error at cold start (the secret is missing, empty or unreadable,
  the Hermes host does not resolve): every task in the event is recorded with kind
  ``configuration`` and the invocation succeeds; the next event checks again;
- an on-failure destination record saying Lambda's own tries crashed (process exit,
  timeout, out of memory, a loop-detection stop): recorded with kind ``crashed`` and
  what Lambda reported, unless a done marker or a record already exists. Only our own
  bookkeeping failures (``InvocationFailed``) and events that aged out unrun are tried
  again.

Each task attempt logs one line whose fields (``run_id``, ``stage``, ``task_key``,
``attempt``, ``outcome``, ``error_kind``, ``calls``, ``seconds``) are top-level keys of
Lambda's JSON log format (``logging`` ``extra=``).
"""

from __future__ import annotations

import json
import logging
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fanout_aws import metrics
from fanout_aws.config import ENV_STAGE, ENV_TOKEN, LambdaConfig
from fanout_aws.events import Refusal, Scope, TaskAttempt, decode_event
from fanout_aws.log_fields import bounded, log_fields
from fanout_aws.retry_queue import SqsRetryQueue
from fanout_aws.secrets import read_secret
from fanout_core import keys
from fanout_core.api_client import ApiClient, CallStats
from fanout_core.assembly import hermes_client, instance_pacer, retry_policy
from fanout_core.deadlines import task_deadline
from fanout_core.error_kinds import kind_of
from fanout_core.errors import BadTask, ConfigurationError, FanoutError, SettingsError
from fanout_core.failures import (
    failure_record_for,
    lambda_failure_record,
    now_iso,
    record_unless_settled,
    write_failure,
)
from fanout_core.pipeline import TaskContext, TaskResult, run_task
from fanout_core.retry import Attempt, Finished, GaveUp, RetryLater, RetryPolicy, attempt_task
from fanout_core.secrets import check_token, redact
from fanout_core.stages import STAGES, StageTable
from fanout_core.storage import Storage

log = logging.getLogger("fanout")

__all__ = ["InvocationFailed", "StageRuntime", "TasksToRetry", "handler_for", "read_secret"]


class InvocationFailed(Exception):
    """A task's bookkeeping failed in an S3 invocation; Lambda's retries take over.
    Its message is the cause's, with the Hermes token scrubbed (Lambda logs it)."""


class TasksToRetry(Exception):
    """Engine ``stepfunctions``: some tasks of the batch failed transiently (or their
    bookkeeping did); the child's ``Retry`` invokes the batch again after its backoff, and
    the tasks that finished meanwhile are skipped by their done markers."""


class _RetryByCaller(Exception):
    """A transient failure with no retry queue to send it to: the invoker retries."""


@dataclass
class StageRuntime:
    """Everything built once per cold start and reused by warm invocations."""

    config: LambdaConfig
    storage: Storage
    hermes: ApiClient
    retry_queue: SqsRetryQueue | None
    policy: RetryPolicy
    token: str = ""
    stats: CallStats = field(default_factory=CallStats)

    @classmethod
    def from_config(cls, config: LambdaConfig, *, token: str | None = None) -> StageRuntime:
        import boto3

        from fanout_aws.s3_storage import S3Storage

        settings = config.settings
        check_hermes_host(settings.hermes_url)
        if token is None:
            token = cls.secret(config)
        stats = CallStats()
        storage = S3Storage(config.bucket)
        budget = None
        if config.budget_table:
            from botocore.config import Config

            from fanout_aws.budget_table import CLIENT_CONFIG, DynamoBudgetStore

            budget = DynamoBudgetStore(
                boto3.client("dynamodb", config=Config(**CLIENT_CONFIG)), config.budget_table
            )
        hermes = hermes_client(
            settings,
            api=config.table.api,
            url=settings.hermes_url,
            token=token,
            # The bucket also keeps the limit pacing learned (read here once, written once).
            pacer=instance_pacer(settings, config.stage.name, budget=budget, limits=storage),
            stats=stats,
            pool_size=4,
        )
        queue = SqsRetryQueue(config.retry_queue_url, boto3.client("sqs")) if config.retry_queue_url else None
        return cls(
            config=config,
            storage=storage,
            hermes=hermes,
            retry_queue=queue,
            policy=retry_policy(settings),
            token=token,
            stats=stats,
        )

    @staticmethod
    def secret(config: LambdaConfig) -> str:
        """The API's secret for its description's auth (a bearer token, an API key or
        ``user:password``), checked once: from Secrets Manager, or ``$HERMES_TOKEN``
        outside AWS; none at all for an API whose auth is ``none``."""
        if not config.needs_secret:
            return ""
        if config.token:
            return check_token(config.token, f"${ENV_TOKEN}")
        import boto3

        return read_secret(boto3.client("secretsmanager"), config.token_secret or "")

    @property
    def scope(self) -> Scope:
        return Scope(
            bucket=self.config.bucket,
            stage=self.config.stage,
            max_attempts=self.policy.max_attempts,
            table=self.config.table,
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
            if (error := self._run(item, context)) is not None:
                failed(item.message_id, error)
        if unreported and decoded.from_sfn:  # the child's Retry invokes the batch again
            first = unreported[0]
            raise TasksToRetry(
                self._scrub(f"{len(unreported)} task(s) to retry; first: {type(first).__name__}: {first}")
            ) from None
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
            scrubbed = {k: self._scrub(v) if isinstance(v, str) else v for k, v in line.items()}
            log.warning(json.dumps(bounded(scrubbed), ensure_ascii=False))

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
            table=self.config.table,
        )
        write_failure(self.storage, record)
        return True

    def _run(self, item: TaskAttempt, context: Any) -> Exception | None:
        """One attempt of one task; returns the exception if its bookkeeping failed."""
        report = item.report
        if report is not None and not (report.is_bookkeeping or report.never_ran):
            return self._record_lambda_failure(item)
        if item.source == "sfn" and self._failed_for_good(item):
            return None
        attempt = item.attempt
        started = time.monotonic()
        before = self.stats.snapshot()
        remaining = context.get_remaining_time_in_millis() / 1000 if context is not None else 900.0
        self.hermes.set_deadline(task_deadline(remaining))
        ctx = TaskContext(
            storage=self.storage, client=self.hermes, settings=self.config.settings, table=self.config.table
        )

        def work(a: Attempt) -> TaskResult:
            return run_task(a.key, ctx, attempts=a.number, first_attempt_at=a.first_attempt_at)

        counts = {"Tasks": 1.0, "Retries": 0.0, "Failures": 0.0, "RecordsWritten": 0.0}
        line: dict[str, Any] = {"task_key": attempt.key, "attempt": attempt.number}
        level = logging.INFO
        try:
            outcome = attempt_task(attempt, work, self.storage, self.policy, table=self.config.table)
            if isinstance(outcome, RetryLater) and self.retry_queue is None and item.source != "sfn":
                raise outcome.error
            if isinstance(outcome, RetryLater):
                counts["Retries"] = 1.0
                level = logging.WARNING
                if self.retry_queue is None:  # engine stepfunctions: the child's Retry
                    line.update(
                        outcome="retry",
                        error_kind=kind_of(outcome.error),
                        retry_by="state machine",
                        error=str(outcome.error),
                    )
                    return _RetryByCaller(f"{kind_of(outcome.error)}: {outcome.error}")
                self.retry_queue.send(outcome.attempt, outcome.delay_s)
                line.update(
                    outcome="retry",
                    error_kind=kind_of(outcome.error),
                    retry_in_s=round(outcome.delay_s, 1),
                    error=str(outcome.error),
                )
            elif isinstance(outcome, GaveUp):
                counts["Failures"] = 1.0
                level = logging.ERROR
                line.update(
                    outcome="failed", error_kind=outcome.record.error_kind, error=outcome.record.message
                )
            elif isinstance(outcome, Finished):
                result: TaskResult = outcome.result
                counts["RecordsWritten"] = float(result.records)
                counts["Failures"] = float(bool(result.failed_units))
                line.update(outcome="finished_with_failed_units" if result.failed_units else "finished")
            return None
        except Exception as exc:
            level = logging.ERROR
            line.update(
                outcome="error",
                error_kind=kind_of(exc),
                error=f"could not record its outcome: {type(exc).__name__}: {exc}",
                traceback=traceback.format_exc(),
            )
            return exc
        finally:
            after = self.stats.snapshot()
            counts["ApiCalls"] = after["calls"] - before["calls"]
            counts["Throttled429"] = after["throttled"] - before["throttled"]
            line.update(calls=int(counts["ApiCalls"]), seconds=round(time.monotonic() - started, 3))
            self._log(level, **line)
            metrics.emit(self.config.settings.name, self.config.stage.name, counts)

    def _failed_for_good(self, item: TaskAttempt) -> bool:
        """Engine ``stepfunctions``: a listed task with a failure record is settled. A
        batch is retried whole, and a fresh execution lists every task of the run, but
        only ``fanout redrive`` (which removes the record) may run such a task again."""
        if not self.storage.exists(keys.failed_key(item.key)):
            return False
        self._log(logging.INFO, task_key=item.key, attempt=item.attempt.number, outcome="already_settled")
        return True

    def _record_lambda_failure(self, item: TaskAttempt) -> Exception | None:
        """Lambda's own tries of this task crashed: its one failure record, now."""
        report = item.report
        assert report is not None
        # An on-failure record's count was added to the next try; a Step Functions crash
        # batch names the last try itself.
        tried = item.attempt.number if item.source == "sfn" else item.attempt.number - 1
        message = self._scrub(
            f"Lambda gave up after {report.invoke_count} invocation(s) ({report.condition}): "
            f"{report.error_type or 'no error type'}: {report.error_message or 'no message'}"
        )
        record = lambda_failure_record(
            item.key,
            error_kind=report.error_kind,
            message=message[:1000],
            attempts=tried,
            first_attempt_at=item.attempt.first_attempt_at,
            condition=report.condition,
            invoke_count=report.invoke_count,
            error_type=report.error_type,
            error_message=self._scrub(report.error_message)[:1000] if report.error_message else None,
            table=self.config.table,
        )
        try:
            written = record_unless_settled(self.storage, record)
        except Exception as exc:
            self._log(logging.ERROR, task_key=item.key, outcome="error", error=f"{type(exc).__name__}: {exc}")
            return exc
        self._log(
            logging.ERROR,
            task_key=item.key,
            attempt=tried,
            outcome="failed" if written else "already_settled",
            error_kind=record.error_kind,
            condition=report.condition,
            error=message,
        )
        failures = 1.0 if written else 0.0
        counts = {"Tasks": 1.0, "Failures": failures}
        if record.error_kind == "configuration":
            counts["ConfigurationErrors"] = failures
        metrics.emit(self.config.settings.name, self.config.stage.name, counts)
        return None

    def _log(self, level: int, **fields: Any) -> None:
        """One log line; its fields are top-level keys of Lambda's JSON log (``extra=``),
        every string scrubbed of the token."""
        for name in ("error", "traceback"):
            if isinstance(fields.get(name), str):
                fields[name] = self._scrub(fields[name])  # then cut, with its length, by log_task
        log_task(level, self.config.stage.name, fields, self.config.table)


def log_task(level: int, stage: str, fields: dict[str, Any], table: StageTable = STAGES) -> None:
    """``fields`` as one log line's keys, with the stage and the task's run id."""
    fields = {"stage": stage, **fields}
    key = fields.get("task_key")
    if isinstance(key, str) and "run_id" not in fields:
        try:
            fields["run_id"] = table.parse(key).run_id
        except FanoutError:
            fields["run_id"] = None
    message = f"{stage} {fields.get('outcome', '')} {key or ''}".strip()
    log_fields(log, level, message, fields)


def check_hermes_host(url: str) -> None:
    """Raise ``SettingsError`` if the Hermes URL's host name does not exist: no retry can
    make it resolve, so every task would spend hours of retries on it. A temporary
    resolver failure (``EAI_AGAIN``) is left to the tasks' own retries."""
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname
    if not host:
        raise SettingsError(f"hermes_url {url!r} has no host name")
    try:
        socket.getaddrinfo(host, None)
    except socket.gaierror as exc:
        if exc.errno in NAME_NOT_FOUND:
            raise SettingsError(
                f"hermes_url host {host!r} does not resolve ({exc.strerror}); fix hermes_url in "
                "cdk.json and redeploy, then redrive"
            ) from None


NAME_NOT_FOUND = {
    socket.EAI_NONAME,
    *(getattr(socket, n) for n in ("EAI_NODATA", "EAI_ADDRFAMILY") if hasattr(socket, n)),
}


def fail_fast(config: LambdaConfig, event: object, error: Exception) -> dict[str, Any] | None:
    """A configuration error at cold start: each task in ``event`` gets its failure
    record (kind ``configuration``, naming the cause) and the invocation succeeds, so no
    retry spends hours on what only a fix can change. A task already done is left be."""
    from fanout_aws.s3_storage import S3Storage

    if not isinstance(error, ConfigurationError):
        error = ConfigurationError(str(error))
    storage = S3Storage(config.bucket)
    scope = Scope(
        bucket=config.bucket,
        stage=config.stage,
        max_attempts=config.settings.max_attempts,
        table=config.table,
    )
    decoded = decode_event(event, scope)
    written = 0
    for item in decoded.attempts:
        if storage.exists(keys.done_key(item.key)):
            continue
        tried = item.attempt.number - 1 if item.source == "on-failure" else item.attempt.number
        record = failure_record_for(
            item.key,
            error,
            attempts=max(tried, 1),
            first_attempt_at=item.attempt.first_attempt_at,
            table=config.table,
        )
        write_failure(storage, record)
        written += 1
        log_task(
            logging.ERROR,
            config.stage.name,
            {
                "task_key": item.key,
                "attempt": item.attempt.number,
                "outcome": "failed",
                "error_kind": record.error_kind,
                "error": record.message,
            },
            config.table,
        )
    if not decoded.attempts:
        log_task(
            logging.ERROR,
            config.stage.name,
            {"outcome": "configuration_error", "error": str(error)},
            config.table,
        )
    metrics.emit(
        config.settings.name,
        config.stage.name,
        {"Tasks": float(len(decoded.attempts)), "Failures": float(written), "ConfigurationErrors": 1.0},
    )
    return {"batchItemFailures": []} if decoded.from_sqs else None


def handler_for(stage_name: str | None = None) -> Callable[[Any, Any], dict[str, Any] | None]:
    """The Lambda entrypoint of the stage ``FANOUT_STAGE`` names (of the description
    ``FANOUT_API`` names); the runtime is built (and the configuration checked) on the
    first call, and reused by warm invocations. ``stage_name``, if given, must be that
    stage (a caller that means one stage only)."""
    runtime: list[StageRuntime] = []

    def handler(event: Any, context: Any) -> dict[str, Any] | None:
        if not runtime:
            config = LambdaConfig.from_environ()
            if stage_name is not None and config.stage.name != stage_name:
                raise SettingsError(
                    f"{ENV_STAGE} is {config.stage.name!r} but this is the {stage_name} handler; "
                    "point the function at its own stage's handler module"
                )
            try:
                runtime.append(StageRuntime.from_config(config))
            except (ConfigurationError, SettingsError) as exc:
                # Nothing can run until an operator fixes this: fail each task now with
                # the cause, instead of hours of Lambda and queue retries ending in a DLQ.
                # Not cached: the next invocation checks again, so a fixed secret needs no
                # redeploy.
                return fail_fast(config, event, exc)
        return runtime[0].handle(event, context)

    handler.__name__ = f"{stage_name or 'stage'}_handler"
    return handler
