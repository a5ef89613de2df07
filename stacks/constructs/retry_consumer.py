"""A stage's retry consumer: a second function with the stage's code, fed only by the
stage's retry queue, with a small reservation of its own.

Why a second function: reserved concurrency cannot be split between a function's
invokers. While the stage's own function runs at its cap (S3's asynchronous
invocations, or its stage queue's mapping), a mapping on the same function that feeds
it retries is throttled, and a throttled receive stays invisible for the whole
visibility timeout (30-90 minutes here) and counts towards the DLQ. The retry
consumer's mapping has ``MaximumConcurrency`` equal to its function's whole
reservation and nothing else invokes it, so its receives are never throttled: a retry
runs within its delay plus a poll, however busy the stage is, and only a delivery
that really died is received again.

Same handler, same role, same settings as the stage's function (one stage's work,
one set of grants); its own retries go back to the same retry queue.
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from fanout_aws import config as lambda_env
from fanout_core.settings import StageSettings
from fanout_core.stages import Stage
from stacks.constructs.stage_function import stage_lambda

BATCH_SIZE = 1
"""One task attempt per invocation: a task may use the whole timeout."""


class RetryConsumer(Construct):
    """Attributes: ``function``, ``log_group``, ``queue`` (what it consumes), ``max_concurrency``."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: Stage,
        settings: StageSettings,
        code: lambda_.Code,
        role: iam.IRole,
        environment: Mapping[str, str],
        queue: sqs.Queue,
        log_retention: logs.RetentionDays,
        removal_policy: RemovalPolicy,
        tracing: bool = False,
    ) -> None:
        super().__init__(scope, construct_id)
        self.queue = queue
        self.max_concurrency = settings.retry_concurrency
        self.log_group = logs.LogGroup(self, "Logs", retention=log_retention, removal_policy=removal_policy)
        self.function = stage_lambda(
            self,
            stage=stage,
            description=f"fanout {stage.name} retries: {stage.description}",
            code=code,
            settings=settings,
            reserved=settings.retry_concurrency,
            environment={**environment, lambda_env.ENV_RETRY_QUEUE_URL: queue.queue_url},
            log_group=self.log_group,
            role=role,
            tracing=tracing,
        )
        self.function.add_event_source(
            sources.SqsEventSource(
                queue,
                batch_size=BATCH_SIZE,
                report_batch_item_failures=True,
                # The whole reservation: nothing else invokes this function, so no
                # receive of this mapping is ever throttled.
                max_concurrency=settings.retry_concurrency,
            )
        )
