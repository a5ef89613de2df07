"""What every stage's Lambda entrypoint does, once: configure at cold start, turn
the event into task attempts, hand each to the core's retry wrapper.

A transient failure goes to the stage's retry queue with its backoff as delivery
delay (no sleeping function); a permanent one, or the last attempt, leaves its
failure record and the invocation succeeds. Only when even that bookkeeping fails
does the invocation raise, handing the event to Lambda's own retries and then to
the on-failure destination, which is the same retry queue.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fanout_aws import metrics
from fanout_aws.config import LambdaConfig
from fanout_aws.retry_queue import SqsRetryQueue, attempts_in_event, attempts_in_message
from fanout_core.hermes import CallStats, HermesClient
from fanout_core.pacing import Pacer
from fanout_core.pipeline import TaskContext, TaskResult, run_task
from fanout_core.retry import Attempt, Finished, GaveUp, RetryLater, RetryPolicy, attempt_task
from fanout_core.storage import Storage

log = logging.getLogger("fanout")
SAFETY_MARGIN_S = 10.0
"""Time kept back from the Lambda timeout to write a retry message or failure record."""


@dataclass
class StageRuntime:
    """Everything built once per cold start and reused by warm invocations."""

    config: LambdaConfig
    storage: Storage
    hermes: HermesClient
    retry_queue: SqsRetryQueue | None
    policy: RetryPolicy
    stats: CallStats = field(default_factory=CallStats)

    @classmethod
    def from_config(cls, config: LambdaConfig, *, token: str | None = None) -> StageRuntime:
        import boto3

        from fanout_aws.s3_storage import S3Storage

        settings = config.settings
        if token is None:
            token = config.token or read_secret(boto3.client("secretsmanager"), config.token_secret or "")
        stats = CallStats()
        hermes = HermesClient(
            settings.hermes_url,
            token,
            page_size=settings.hermes_page_size,
            read_timeout=settings.hermes_timeout_s,
            pacer=Pacer(settings.instance_rate(config.stage.name)),
            stats=stats,
            pool_size=4,
        )
        queue = SqsRetryQueue(config.retry_queue_url, boto3.client("sqs")) if config.retry_queue_url else None
        return cls(
            config=config,
            storage=S3Storage(config.bucket),
            hermes=hermes,
            retry_queue=queue,
            policy=RetryPolicy(
                max_attempts=settings.max_attempts,
                base_delay_s=settings.retry_base_delay_s,
                max_delay_s=settings.retry_max_delay_s,
            ),
            stats=stats,
        )

    def handle(self, event: Mapping[str, Any], context: Any) -> dict[str, Any] | None:
        if isinstance(event.get("Records"), list) and any(
            r.get("eventSource") == "aws:sqs" for r in event["Records"] if isinstance(r, Mapping)
        ):
            return self._handle_sqs(event, context)
        errors = [e for e in (self._run(a, context) for a in attempts_in_event(event)) if e]
        if errors:  # S3-invoked: Lambda retries the event; finished tasks are skipped then
            raise errors[0]
        return None

    def _handle_sqs(self, event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        failures = []
        for record in event["Records"]:
            try:
                attempts = attempts_in_message(record["body"])
            except (ValueError, KeyError, TypeError) as exc:
                log.error(
                    "unreadable retry message %s dropped to the DLQ path: %s", record.get("messageId"), exc
                )
                failures.append({"itemIdentifier": record.get("messageId", "")})
                continue
            if any(self._run(a, context) for a in attempts):
                failures.append({"itemIdentifier": record["messageId"]})
        return {"batchItemFailures": failures}

    def _run(self, attempt: Attempt, context: Any) -> Exception | None:
        """One attempt of one task; returns the exception if its bookkeeping failed."""
        before = self.stats.snapshot()
        remaining = context.get_remaining_time_in_millis() / 1000 if context is not None else 900.0
        self.hermes.set_deadline(time.monotonic() + max(remaining - SAFETY_MARGIN_S, 1.0))
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
                log.warning(
                    json.dumps(
                        {
                            "task": attempt.key,
                            "attempt": attempt.number,
                            "retry_in_s": outcome.delay_s,
                            "error": str(outcome.error)[:500],
                        }
                    )
                )
            elif isinstance(outcome, GaveUp):
                counts["Failures"] = 1.0
                log.error(
                    json.dumps(
                        {
                            "task": attempt.key,
                            "gave_up": outcome.record.error_class,
                            "attempts": attempt.number,
                        }
                    )
                )
            elif isinstance(outcome, Finished):
                result: TaskResult = outcome.result
                counts["RecordsWritten"] = float(result.records)
                counts["Failures"] = float(bool(result.failed_units))
            return None
        except Exception as exc:
            log.exception("task %s: could not record its outcome", attempt.key)
            return exc
        finally:
            after = self.stats.snapshot()
            counts["ApiCalls"] = after["calls"] - before["calls"]
            counts["Throttled429"] = after["throttled"] - before["throttled"]
            metrics.emit(self.config.stage.name, counts)


def read_secret(client: Any, secret_id: str) -> str:
    """The Hermes token: the secret's string, or its ``token`` field if it is JSON."""
    value = client.get_secret_value(SecretId=secret_id)["SecretString"]
    try:
        doc = json.loads(value)
    except ValueError:
        return str(value).strip()
    if isinstance(doc, dict) and isinstance(doc.get("token"), str):
        return str(doc["token"])
    return str(value).strip()


def handler_for(stage_name: str) -> Callable[[Mapping[str, Any], Any], dict[str, Any] | None]:
    """The Lambda entrypoint of one stage; the runtime is built on the first call."""
    runtime: list[StageRuntime] = []

    def handler(event: Mapping[str, Any], context: Any) -> dict[str, Any] | None:
        if not runtime:
            config = LambdaConfig.from_environ()
            if config.stage.name != stage_name:
                raise RuntimeError(
                    f"FANOUT_STAGE is {config.stage.name!r} but this is the {stage_name} handler"
                )
            runtime.append(StageRuntime.from_config(config))
        return runtime[0].handle(event, context)

    handler.__name__ = f"{stage_name}_handler"
    return handler
