"""Engine ``queue``: each stage's tasks reach its function through an SQS queue.

The bucket's notifications for a stage's prefix go to that stage's queue (not to the
function), and the function consumes the queue through an event source mapping whose
``MaximumConcurrency`` is the stage's cap (``reserved_concurrency``); the function's
reserved concurrency, the same number, stays as the hard ceiling, so the mapping never
asks for an execution the reservation would throttle (AWS: reserved concurrency at
least the sum of the function's mappings' maximum concurrency; this is its only one).

Retries have a queue of their own per stage (``FANOUT_RETRY_QUEUE_URL``): the handler
sends a transient failure there with its backoff as ``DelaySeconds``, and the stage's
retry consumer (``stacks.constructs.retry_consumer``, a second function with its own
reservation) runs it when it is due, not after the backlog queued ahead of it in the
stage queue. Lambda's asynchronous path is not used at all: no event age, no
on-failure destination. A message whose deliveries keep dying (a crash, a timeout)
is counted an attempt per receive by the handler, which records its failure on the
last one; only if that fails too does it move, after ``max_receives`` receives, to the
stage's dead-letter queue (shared by both queues), whose retention is longer.
"""

from __future__ import annotations

import jsii
from aws_cdk import Aws, Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from fanout_aws import config as lambda_env
from fanout_core.settings import StageSettings
from fanout_core.stages import TASK_SUFFIX, Stage

QUEUE_RETENTION = Duration.days(7)
"""How long a task may wait for its stage: a run that the cap drains in days, or an
outage of the functions, still loses nothing. Shorter than the DLQ's, because a message
moved there keeps its original enqueue time."""
DLQ_RETENTION = Duration.days(14)
"""SQS's maximum."""
RETRY_RETENTION = Duration.days(7)
"""A retry waits at most 15 minutes (SQS's longest delay) plus its consumer's backlog."""
VISIBILITY_TIMEOUTS = 6
"""AWS's guidance for a queue feeding a function: six times the function's timeout."""
BATCH_SIZE = 1
"""One task per invocation: a task may use the whole timeout, and a redelivery repeats
one task, not a batch."""
S3_PRINCIPAL = "s3.amazonaws.com"


@jsii.implements(s3.IBucketNotificationDestination)
class _QueueDestination:
    """A notification destination that leaves the queue policy to ``StageQueue`` (CDK's
    ``SqsDestination`` adds a statement conditioned on the bucket ARN alone)."""

    def __init__(self, queue: sqs.Queue) -> None:
        self.queue = queue

    def bind(self, _scope: Construct, _bucket: s3.IBucket) -> s3.BucketNotificationDestinationConfig:
        return s3.BucketNotificationDestinationConfig(
            arn=self.queue.queue_arn,
            type=s3.BucketNotificationDestinationType.QUEUE,
            # S3 checks that it may send to the queue when the configuration is put:
            # the queue's policy (a child of the queue) must exist first.
            dependencies=[self.queue],
        )


class StageQueue(Construct):
    """A stage's queue and dead-letter queue, and what connects them to the bucket and
    the function.

    Attributes: ``stage``, ``queue``, ``retry_queue``, ``dlq``, ``max_concurrency``,
    ``visibility_timeout_s``, ``max_receives``.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: Stage,
        settings: StageSettings,
        max_receives: int,
        removal_policy: RemovalPolicy,
    ) -> None:
        super().__init__(scope, construct_id)
        self.stage = stage
        self.max_receives = max_receives
        """``EnvironmentSettings.max_receives``: at least ``max_attempts`` + 1, since the
        handler counts every receive as an attempt and records the failure on the last."""
        self.max_concurrency = settings.reserved_concurrency
        self.visibility_timeout_s = VISIBILITY_TIMEOUTS * settings.timeout_s
        self.dlq = sqs.Queue(
            self,
            "Dlq",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=DLQ_RETENTION,
            removal_policy=removal_policy,
        )
        self.queue = sqs.Queue(
            self,
            "Queue",
            # SSE-SQS: S3 may send to it without a KMS key policy (SSE-KMS with the
            # AWS-managed aws/sqs key would refuse S3).
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=QUEUE_RETENTION,
            visibility_timeout=Duration.seconds(self.visibility_timeout_s),
            dead_letter_queue=sqs.DeadLetterQueue(max_receive_count=max_receives, queue=self.dlq),
            removal_policy=removal_policy,
        )
        self.retry_queue = sqs.Queue(
            self,
            "RetryQueue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=RETRY_RETENTION,
            visibility_timeout=Duration.seconds(self.visibility_timeout_s),
            dead_letter_queue=sqs.DeadLetterQueue(max_receive_count=max_receives, queue=self.dlq),
            removal_policy=removal_policy,
        )

    def connect(self, bucket: s3.Bucket, function: lambda_.Function) -> None:
        """Notifications for the stage's prefix -> the queue -> the function; the
        function's retries -> the retry queue (which ``RetryConsumer`` consumes)."""
        self.queue.add_to_resource_policy(
            iam.PolicyStatement(
                sid="ThisBucketsNotificationsOnly",
                principals=[iam.ServicePrincipal(S3_PRINCIPAL)],  # type: ignore[list-item]
                actions=["sqs:SendMessage"],
                resources=[self.queue.queue_arn],
                conditions={
                    "ArnEquals": {"aws:SourceArn": bucket.bucket_arn},
                    # A bucket ARN names no account: a bucket of the same name in another
                    # account (after this one is deleted) must not reach the queue.
                    "StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID},
                },
            )
        )
        bucket.add_event_notification(
            s3.EventType.OBJECT_CREATED,
            _QueueDestination(self.queue),
            s3.NotificationKeyFilter(prefix=self.stage.input_prefix, suffix=TASK_SUFFIX),
        )
        function.add_environment(lambda_env.ENV_RETRY_QUEUE_URL, self.retry_queue.queue_url)
        self.retry_queue.grant_send_messages(function)
        function.add_event_source(
            sources.SqsEventSource(
                self.queue,
                batch_size=BATCH_SIZE,
                report_batch_item_failures=True,
                max_concurrency=self.max_concurrency,
            )
        )
