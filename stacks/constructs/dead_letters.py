"""The dead-letter recorder: one small function consuming every stage's dead-letter
queue, turning each message into the task's failure record (``fanout_aws.dead_letters``).

It has no secret and no Hermes access, so what kills a stage's function (a crash, a
missing secret, a broken bundle import aside) does not stop it. Its own access is two
S3 calls on two prefixes: is the task done (``done/``), and create its record
(``failed/``, ``If-None-Match``).
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from fanout_aws import config as lambda_env
from fanout_core.stages import DONE_PREFIX, FAILED_PREFIX
from stacks.constructs.function_role import function_role
from stacks.constructs.stage_function import ARCHITECTURE, RUNTIME
from stacks.nag import acknowledge, resource_finding

HANDLER = "fanout_aws.handlers.dead_letters.handler"
TIMEOUT = Duration.seconds(25)
"""Two S3 calls per message, ten messages a batch; under the DLQs' default visibility
timeout (30 s), so a batch is never visible again while the recorder still holds it. A
batch cut short is delivered again, which writes nothing twice."""
BATCH_SIZE = 10
MEMORY_MB = 256
BATCH_WINDOW = Duration.seconds(0)
"""Record at once: the bound on a task's failure record is the DLQ's path plus seconds."""


class DeadLetterRecorder(Construct):
    """Attributes: ``function``, ``log_group``."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        code: lambda_.Code,
        bucket: s3.IBucket,
        bucket_logical_arn: str,
        env_name: str,
        max_attempts: int,
        dead_letter_queues: Mapping[str, sqs.IQueue],
        api_path: str,
        log_retention: logs.RetentionDays,
        removal_policy: RemovalPolicy,
    ) -> None:
        super().__init__(scope, construct_id)
        self.log_group = logs.LogGroup(self, "Logs", retention=log_retention, removal_policy=removal_policy)
        self.function = lambda_.Function(
            self,
            "Function",
            description="fanout: turns every dead-letter message into its task's failure record",
            runtime=RUNTIME,
            architecture=ARCHITECTURE,
            handler=HANDLER,
            code=code,
            memory_size=MEMORY_MB,
            timeout=TIMEOUT,
            environment={
                lambda_env.ENV_NAME: env_name,
                lambda_env.ENV_BUCKET: bucket.bucket_name,
                # The description whose stage table names the queues' tasks.
                lambda_env.ENV_API: api_path,
                # How many receives a dead letter had (every source queue's maxReceiveCount
                # is max_attempts + 1), so its record can say how often the task ran.
                lambda_env.ENV_MAX_ATTEMPTS: str(max_attempts),
            },
            logging_format=lambda_.LoggingFormat.JSON,
            application_log_level_v2=lambda_.ApplicationLogLevel.INFO,
            system_log_level_v2=lambda_.SystemLogLevel.WARN,
            log_group=self.log_group,
            role=function_role(self, "Role", self.log_group, "fanout dead-letter recorder"),
        )
        for queue in dead_letter_queues.values():
            self.function.add_event_source(
                sources.SqsEventSource(
                    queue,
                    batch_size=BATCH_SIZE,
                    max_batching_window=BATCH_WINDOW,
                    report_batch_item_failures=True,
                )
            )
        done, failed = f"{DONE_PREFIX}*", f"{FAILED_PREFIX}*"
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                sid="CreateFailureRecords",
                actions=["s3:PutObject"],
                resources=[bucket.arn_for_objects(failed)],
            )
        )
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                sid="CheckDoneAndFailed",
                actions=["s3:ListBucket"],
                resources=[bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [done, failed]}},
            )
        )
        role = self.function.role
        assert role is not None
        acknowledge(
            role,
            resource_finding("IAM5", f"{bucket_logical_arn}/{failed}"),
            "failed/* holds one record per task key, created at run time by whichever "
            "task reached a dead-letter queue; the prefix is the narrowest grant.",
        )
