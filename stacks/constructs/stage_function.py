"""One pipeline stage as a Lambda function, with its failure destination and its logs.

Used once per entry of the stage table. It creates what belongs to the stage alone;
the stack wires it to the bucket and grants it access, so every permission is
visible in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from fanout_core.settings import StageSettings
from fanout_core.stages import Stage
from stacks.constructs.function_role import function_role

RUNTIME = lambda_.Runtime.PYTHON_3_14
"""The newest Python runtime for which every dependency has manylinux aarch64 wheels
(checked with pip; see ``stacks.bundling.LAMBDA_PYTHON_VERSION``, which must match)."""
ARCHITECTURE = lambda_.Architecture.ARM_64
FAILURE_RETENTION = Duration.days(7)
"""Retries and on-failure records wait this long for the function (their delays are at
most 15 minutes). Shorter than the DLQ's: a message moved there keeps its original
enqueue time, so an equal retention would expire it in the DLQ at once."""
DLQ_RETENTION = Duration.days(14)
"""SQS's maximum."""
VISIBILITY_TIMEOUTS = 6
"""AWS's guidance for a queue feeding a function: six times the function's timeout."""


class StageFunction(Construct):
    """A stage's function, its async-invoke settings and its on-failure queue.

    Attributes: ``stage``, ``function``, ``log_group``, ``failure_queue`` (the
    on-failure destination) and ``failure_dlq`` (where unreadable failures end); both
    None when ``asynchronous`` is False (engine ``queue``, ``stacks.constructs.queue_engine``).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: Stage,
        settings: StageSettings,
        code: lambda_.Code,
        environment: Mapping[str, str],
        log_retention: logs.RetentionDays,
        removal_policy: RemovalPolicy,
        max_receives: int,
        tracing: bool = False,
        asynchronous: bool = True,
    ) -> None:
        super().__init__(scope, construct_id)
        self.stage = stage
        # asynchronous=False (engine queue): only the stage queue's event source mapping
        # invokes the function, so it has no async-invoke settings and no failure queue.
        self.failure_queue: sqs.Queue | None = None
        self.failure_dlq: sqs.Queue | None = None
        async_invoke: dict[str, Any] = {}
        if asynchronous:
            self.failure_dlq = sqs.Queue(
                self,
                "FailureDlq",
                encryption=sqs.QueueEncryption.SQS_MANAGED,
                enforce_ssl=True,
                retention_period=DLQ_RETENTION,
                removal_policy=removal_policy,
            )
            # cdk-nag's SQS3 exempts a queue that serves as another queue's DLQ, as this does.
            self.failure_queue = sqs.Queue(
                self,
                "FailureQueue",
                encryption=sqs.QueueEncryption.SQS_MANAGED,
                enforce_ssl=True,
                retention_period=FAILURE_RETENTION,
                # The queue feeds the stage's retry consumer: a message must not
                # reappear while an invocation still holds it.
                visibility_timeout=Duration.seconds(VISIBILITY_TIMEOUTS * settings.timeout_s),
                # EnvironmentSettings.max_receives: the handler counts each receive as an
                # attempt and records the task's failure on the last one.
                dead_letter_queue=sqs.DeadLetterQueue(max_receive_count=max_receives, queue=self.failure_dlq),
                removal_policy=removal_policy,
            )
            # Asynchronous invocation (how S3 calls it): Lambda's own retries and
            # event age, then the event goes to the failure queue, not into the void.
            async_invoke = {
                "retry_attempts": settings.retry_attempts,
                "max_event_age": Duration.seconds(settings.max_event_age_s),
                "on_failure": destinations.SqsDestination(self.failure_queue),
            }

        self.log_group = logs.LogGroup(self, "Logs", retention=log_retention, removal_policy=removal_policy)

        self.function = stage_lambda(
            self,
            stage=stage,
            description=f"fanout {stage.name}: {stage.description}",
            code=code,
            settings=settings,
            reserved=settings.reserved_concurrency,
            environment=environment,
            log_group=self.log_group,
            role=function_role(self, "Role", self.log_group, f"fanout {stage.name} function"),
            tracing=tracing,
            **async_invoke,
        )


def stage_lambda(
    scope: Construct,
    *,
    stage: Stage,
    description: str,
    code: lambda_.Code,
    settings: StageSettings,
    reserved: int,
    environment: Mapping[str, str],
    log_group: logs.ILogGroup,
    role: iam.IRole,
    tracing: bool,
    **extra: Any,
) -> lambda_.Function:
    """A function running the stage's handler: the stage function and its retry consumer
    differ only in reservation, environment, role and what invokes them."""
    return lambda_.Function(
        scope,
        "Function",
        description=description[:256],
        runtime=RUNTIME,
        architecture=ARCHITECTURE,
        handler=stage.handler,
        code=code,
        memory_size=settings.memory_mb,
        timeout=Duration.seconds(settings.timeout_s),
        reserved_concurrent_executions=reserved,
        environment=dict(environment),
        logging_format=lambda_.LoggingFormat.JSON,
        application_log_level_v2=lambda_.ApplicationLogLevel.INFO,
        system_log_level_v2=lambda_.SystemLogLevel.WARN,
        log_group=log_group,
        role=role,
        tracing=lambda_.Tracing.ACTIVE if tracing else lambda_.Tracing.DISABLED,
        **extra,
    )
