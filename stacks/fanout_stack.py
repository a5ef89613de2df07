"""``Fanout-<env>``: the whole chain, from a manifest under the first stage's prefix to
Parquet under ``data/``, composed from the stage table of the environment's API
description and one environment's settings.

The constructs create resources; this class only composes them, wires the bucket's
notifications and the retry queues to the functions, and grants each function the
least it needs. All of that derives from the ``StageTable`` it is given: no prefix or
stage is typed here.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import CfnOutput, Duration, Environment, RemovalPolicy, Stack, Tags
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_notifications as s3n
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from fanout_aws import config as lambda_env
from fanout_core.learned_limit import PREFIX as LIMITS_PREFIX
from fanout_core.learned_limit import kept_on_aws
from fanout_core.settings import EnvironmentSettings, environment_to_json
from fanout_core.stages import (
    ARCHIVE_PREFIX,
    DONE_PREFIX,
    FAILED_PREFIX,
    PLANS_PREFIX,
    TASK_SUFFIX,
    Stage,
    StageTable,
)
from stacks.bundling import bundled_api_path
from stacks.constructs.analytics import Analytics
from stacks.constructs.bucket import PipelineBucket
from stacks.constructs.budget_table import BudgetTable
from stacks.constructs.dead_letters import DeadLetterRecorder
from stacks.constructs.monitoring import (
    RETRY_AGE_SLACK_S,
    MonitoredStage,
    PipelineMonitoring,
    dashboard_url,
    state_machine_monitoring,
)
from stacks.constructs.queue_engine import StageQueue
from stacks.constructs.retry_consumer import RetryConsumer
from stacks.constructs.sfn_engine import StepFunctionsEngine
from stacks.constructs.stage_function import StageFunction
from stacks.nag import (
    LAMBDA_BASIC_EXECUTION,
    acknowledge,
    managed_policy_finding,
    resource_finding,
)

INTERMEDIATE_EXPIRY = Duration.days(30)
"""Task objects and done markers: a run is long over, and ``fanout status`` done, by then."""
FAILURE_EXPIRY = Duration.days(365)
ARCHIVE_EXPIRY = Duration.days(90)
ENGINE_DESCRIPTIONS = {
    "s3_events": "S3-event-chained Lambdas",
    "queue": "S3 events queued in SQS for each stage's Lambda",
    "stepfunctions": "a Step Functions Distributed Map per stage",
}
APP_TAG, ENVIRONMENT_TAG, APP = "app", "environment", "fanout"
"""Must equal ``fanout.bucket_env``'s (a test checks)."""
QUEUE_URL_OUTPUT = "{function_id}QueueUrl"
"""Engine ``queue`` only: the stage queue the bucket notifies."""
RETRY_QUEUE_URL_OUTPUT = "{function_id}RetryQueueUrl"
DLQ_URL_OUTPUT = "{function_id}DeadLetterQueueUrl"
"""Both engines: the stage's retry queue and dead-letter queue. Stack output ids, per
stage; ``fanout.queues`` reads them (``fanout status --queues``, ``fanout redrive
--from-dlq``; a test checks the names agree)."""
STATE_MACHINE_ARN_OUTPUT = "RunStateMachineArn"
"""Engine ``stepfunctions`` only: the run state machine (``fanout status``, ``fanout redrive``)."""


def stack_name(env_name: str) -> str:
    return f"Fanout-{env_name}"


def state_machine_name(env_name: str) -> str:
    """Engine ``stepfunctions``: the run state machine's name (one per environment)."""
    return f"{stack_name(env_name)}-Run"


@dataclass(frozen=True)
class StageAccess:
    """The S3 access one stage's function gets: object-key prefixes, each ending in ``*``,
    and ``s3:ListBucket`` on the whole bucket (see ``stage_access``)."""

    read: tuple[str, ...]
    write: tuple[str, ...]
    limits: tuple[str, ...] = ()
    """Read and written: the learned rate limit's records (``fanout_core.learned_limit``)."""


def stage_access(stage: Stage, table: StageTable, *, limits: bool = False) -> StageAccess:
    """What ``fanout_core.pipeline.run_task`` and the retry wrapper touch for ``stage``.

    - read its task objects (``<input>*``);
    - write its children (``<output>*``), its done markers and its failure records;
    - a listing stage reads and writes its plans (``plans/<input>*``): the children it
      decided on once, reused by every later attempt; so does the first stage when it is
      also the leaf (a 2-level API), for the parts it splits a seed manifest into;
    - ``s3:GetObject`` on whatever it checks for existence, since ``S3Storage.exists`` is a
      HeadObject: its done markers and failure records (skip a finished task, never replace
      a record; never read otherwise), its task objects and plans, the leaf's Parquet
      output (a retry asks whether it was written, and then reads its footer);
    - ``s3:ListBucket`` on the bucket with no ``s3:prefix`` condition: S3 answers a HEAD or
      GET of a missing key 404 only to a caller that may list for a request without a
      prefix, else 403, which ``exists`` would have to settle with a listing billed at
      12x a HEAD (every task checks its done marker: README, What a run costs). Listing
      shows key names, never contents, and only of this bucket, whose keys hold run ids
      and Hermes ids that the function reads from its task objects anyway. It also
      covers a listing stage listing its children's folders when it reuses a plan
      (``fanout_core.fan_out``) and a missing task object's GetObject (404, not 403);
    - with ``limits`` (the fleet keeps the learned limit: ``learned_limit.kept_on_aws``),
      ``s3:GetObject`` and ``s3:PutObject`` on ``limits/*``, the records every instance's
      pacer reads at its cold start and writes once it found the limit: nothing else there.
    """
    done = f"{DONE_PREFIX}{stage.input_prefix}*"
    failed = f"{FAILED_PREFIX}{stage.input_prefix}*"
    output = table.output_prefix_of(stage)
    read = [f"{stage.input_prefix}*", done, failed]
    write = [f"{output}*", done, failed]
    if stage is table.first:
        # The first stage splits a seed manifest into parts written back under its own
        # input prefix (<prefix>run=<run>/part-NNNNN.json): one deliberate hop of
        # self-triggering, far below Lambda's recursive-loop cut-off.
        write.append(f"{stage.input_prefix}run=*")
    plans = f"{PLANS_PREFIX}{stage.input_prefix}*"
    if stage is table.leaf:
        read.append(f"{output}*")
        if stage is table.first:
            # One stage that is both (a 2-level API): its seed split keeps a plan too.
            read.append(plans)
            write.append(plans)
    else:
        read.append(plans)
        write.append(plans)
    learned = (f"{LIMITS_PREFIX}*",) if limits else ()
    return StageAccess(read=tuple(read), write=tuple(write), limits=learned)


class FanoutStack(Stack):
    """One environment's pipeline.

    Attributes: ``settings``, ``table`` (the stage table of the environment's API
    description), ``storage`` (``PipelineBucket``), ``bucket``,
    ``token_secret``, ``stage_functions`` (stage name -> ``StageFunction``),
    ``retry_consumers`` (stage name -> ``RetryConsumer``), ``monitoring``, ``budget``
    (``BudgetTable`` with pacing ``shared``, else None).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: EnvironmentSettings,
        table: StageTable,
        code: lambda_.Code,
        tracing: bool = False,
    ) -> None:
        env = (
            Environment(account=settings.account, region=settings.region)
            if settings.account or settings.region
            else None
        )
        super().__init__(
            scope,
            construct_id,
            env=env,
            description=(
                f"fanout pipeline, environment {settings.name} ({ENGINE_DESCRIPTIONS[settings.engine]})"
            ),
        )
        self.settings = settings
        self.table = table
        self._api_path = bundled_api_path(table.api)
        """Every function's ``FANOUT_API``: the description's JSON in the bundle."""
        # Cost allocation, and how `fanout status --bucket B` finds B's environment
        # (fanout.bucket_env reads the bucket's tags): on every taggable resource.
        Tags.of(self).add(APP_TAG, APP)
        Tags.of(self).add(ENVIRONMENT_TAG, settings.name)
        retain = settings.removal_policy == "retain"
        removal = RemovalPolicy.RETAIN if retain else RemovalPolicy.DESTROY
        self._removal = removal
        self.stage_queues: dict[str, StageQueue] = {}
        """Engine ``queue`` only: stage name -> its ``StageQueue``."""
        self.retry_consumers: dict[str, RetryConsumer] = {}
        self._log_retention = logs.RetentionDays.THREE_MONTHS if retain else logs.RetentionDays.TWO_WEEKS
        self._tracing = tracing
        self._code = code

        self.storage = PipelineBucket(
            self,
            "Storage",
            intermediate_prefixes=[
                *(s.input_prefix for s in table),
                DONE_PREFIX,
                PLANS_PREFIX,
            ],
            intermediate_expiry=INTERMEDIATE_EXPIRY,
            failure_prefix=FAILED_PREFIX,
            failure_expiry=FAILURE_EXPIRY,
            archive_prefix=ARCHIVE_PREFIX,
            archive_expiry=ARCHIVE_EXPIRY,
            never_expire=[table.output_prefix],
            removal_policy=removal,
        )
        self.bucket: s3.Bucket = self.storage.bucket

        # Created by hand before the first deploy (docs/deploying.md); looked up by name
        # so the token never passes through CloudFormation.
        self.token_secret = secretsmanager.Secret.from_secret_name_v2(
            self, "HermesToken", settings.token_secret_name
        )

        # Pacing shared: the fleet's one Hermes budget (stacks.constructs.budget_table).
        self.budget = (
            BudgetTable(self, "HermesBudget", removal_policy=removal) if settings.pacing == "shared" else None
        )

        settings_json = environment_to_json(settings)
        self.stage_functions: dict[str, StageFunction] = {}
        for stage in table:
            environment = {
                lambda_env.ENV_NAME: settings.name,
                lambda_env.ENV_SETTINGS: settings_json,
                lambda_env.ENV_BUCKET: self.bucket.bucket_name,
                lambda_env.ENV_STAGE: stage.name,
                lambda_env.ENV_API: self._api_path,
                lambda_env.ENV_TOKEN_SECRET: settings.token_secret_name,
            }
            if self.budget is not None:
                environment[lambda_env.ENV_BUDGET_TABLE] = self.budget.table.table_name
            stage_fn = StageFunction(
                self,
                stage.function_id,
                stage=stage,
                settings=settings.stage(stage.name),
                code=code,
                environment=environment,
                log_retention=self._log_retention,
                removal_policy=removal,
                max_receives=settings.max_receives,
                tracing=tracing,
                asynchronous=settings.engine == "s3_events",
            )
            self.stage_functions[stage.name] = stage_fn
            self._wire(stage, stage_fn, environment)

        self.sfn_engine: StepFunctionsEngine | None = None
        """Engine ``stepfunctions`` only: the run state machine and its starter."""
        if settings.engine == "stepfunctions":
            self._wire_step_functions()
        monitored = [self._monitored(name, sf) for name, sf in self.stage_functions.items()]
        dead_letter_queues = {m.name: m.failure_dlq for m in monitored if m.failure_dlq is not None}
        self.dead_letters: DeadLetterRecorder | None = None
        if dead_letter_queues:  # engine stepfunctions has none: a child's crash is recorded in place
            self.dead_letters = DeadLetterRecorder(
                self,
                "DeadLetters",
                code=code,
                bucket=self.bucket,
                bucket_logical_arn=f"<{self.resolve(self.storage.data_logical_id)}.Arn>",
                env_name=settings.name,
                max_attempts=settings.max_attempts,
                dead_letter_queues=dead_letter_queues,
                api_path=self._api_path,
                log_retention=logs.RetentionDays.THREE_MONTHS if retain else logs.RetentionDays.TWO_WEEKS,
                removal_policy=removal,
            )
        self.monitoring = PipelineMonitoring(
            self,
            "Monitoring",
            dashboard_name=stack_name(settings.name),
            env_name=settings.name,
            stages=monitored,
            alarm_email=settings.alarm_email,
            removal_policy=removal,
        )
        if self.sfn_engine is not None:
            self.run_alarms = state_machine_monitoring(
                self.monitoring,
                self.sfn_engine.state_machine,
                starter=self.sfn_engine.starter,
                stage_labels=[s.function_id for s in table],
                tolerated_failure_percentage=settings.tolerated_failure_percentage,
            )
        self.analytics = Analytics(
            self,
            "Analytics",
            env_name=settings.name,
            data_bucket=self.bucket,
            access_logs=self.storage.access_logs,
            removal_policy=removal,
            table=table,
        )
        self._acknowledge_cdk_helpers()

        CfnOutput(self, "BucketName", value=self.bucket.bucket_name)
        dashboard_name = stack_name(settings.name)
        CfnOutput(self, "DashboardName", value=dashboard_name)
        CfnOutput(self, "DashboardUrl", value=dashboard_url(dashboard_name))
        CfnOutput(self, "AlarmTopicArn", value=self.monitoring.topic.topic_arn)

    def _monitored(self, name: str, sf: StageFunction) -> MonitoredStage:
        stuck_after = (
            int(self.settings.retry_max_delay_s) + self.settings.stage(name).timeout_s + RETRY_AGE_SLACK_S
        )
        if self.settings.engine == "stepfunctions":  # no queues: the state machine retries
            return MonitoredStage(
                name=name,
                function=sf.function,
                concurrency_cap=self.settings.stage(name).reserved_concurrency,
                oldest_retry_alarm_s=stuck_after,
            )
        sq = self.stage_queues.get(name)
        if sq is not None:  # engine queue: the stage queue is the work and retry queue
            return MonitoredStage(
                name=name,
                function=sf.function,
                failure_queue=sq.retry_queue,
                failure_dlq=sq.dlq,
                work_queue=sq.queue,
                concurrency_cap=sq.max_concurrency,
                oldest_retry_alarm_s=stuck_after,
            )
        assert sf.failure_queue is not None and sf.failure_dlq is not None
        return MonitoredStage(
            name=name,
            function=sf.function,
            failure_queue=sf.failure_queue,
            failure_dlq=sf.failure_dlq,
            concurrency_cap=self.settings.stage(name).reserved_concurrency,
            oldest_retry_alarm_s=stuck_after,
        )

    def _wire(self, stage: Stage, stage_fn: StageFunction, environment: dict[str, str]) -> None:
        fn = stage_fn.function
        if self.settings.engine == "stepfunctions":
            # Only the run state machine invokes the function (synchronously), so no
            # notification, retry queue or retry consumer: its children's Retry retries.
            self._grant_stage(stage, fn)
            return
        if self.settings.engine == "queue":
            retry_queue = self._wire_queue(stage, stage_fn)
        else:
            retry_queue = self._wire_s3_events(stage, stage_fn)
        self._retry_consumer(stage, stage_fn, environment, retry_queue)
        sq = self.stage_queues.get(stage.name)
        dlq = sq.dlq if sq is not None else stage_fn.failure_dlq
        assert dlq is not None
        CfnOutput(
            self, RETRY_QUEUE_URL_OUTPUT.format(function_id=stage.function_id), value=retry_queue.queue_url
        )
        CfnOutput(self, DLQ_URL_OUTPUT.format(function_id=stage.function_id), value=dlq.queue_url)
        self._grant_stage(stage, fn)

    def _grant_stage(self, stage: Stage, fn: lambda_.Function) -> None:
        """What a stage's function may do whatever the engine: its secret, its budget,
        its prefixes."""
        self.token_secret.grant_read(fn)
        if self.budget is not None:  # the retry consumer shares the role
            self.budget.grant_reserve(fn)
        self._grant_s3(stage, fn)

    def _retry_consumer(
        self, stage: Stage, stage_fn: StageFunction, environment: dict[str, str], queue: sqs.Queue
    ) -> None:
        """The stage's retry queue -> its own function (same code and role), so a due
        retry never waits behind the stage's cap (``stacks.constructs.retry_consumer``)."""
        role = stage_fn.function.role
        assert role is not None
        self.retry_consumers[stage.name] = RetryConsumer(
            self,
            f"{stage.function_id}Retries",
            stage=stage,
            settings=self.settings.stage(stage.name),
            code=self._code,
            role=role,
            environment=environment,
            queue=queue,
            log_retention=self._log_retention,
            removal_policy=self._removal,
            tracing=self._tracing,
        )
        # The shared role writes only its functions' own log groups (function_role.py).
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="RetryConsumerLogStreams",
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[self.retry_consumers[stage.name].log_group.log_group_arn],
            )
        )

    def _wire_step_functions(self) -> None:
        """The run state machine over the stage functions, and its starter, which the
        bucket notifies of the first stage's objects (a seed starts its run)."""
        engine = StepFunctionsEngine(
            self,
            "Runs",
            settings=self.settings,
            bucket=self.bucket,
            functions={name: sf.function for name, sf in self.stage_functions.items()},
            code=self._code,
            state_machine_name=state_machine_name(self.settings.name),
            table=self.table,
            api_path=self._api_path,
            log_retention=self._log_retention,
            removal_policy=self._removal,
            tracing=self._tracing,
        )
        self.sfn_engine = engine
        self.bucket.add_event_notification(
            s3.EventType.OBJECT_CREATED,
            s3n.LambdaDestination(engine.starter),
            s3.NotificationKeyFilter(prefix=self.table.first.input_prefix, suffix=TASK_SUFFIX),
        )
        CfnOutput(self, STATE_MACHINE_ARN_OUTPUT, value=engine.state_machine.state_machine_arn)

    def _wire_queue(self, stage: Stage, stage_fn: StageFunction) -> sqs.Queue:
        sq = StageQueue(
            self,
            f"{stage.function_id}Queue",
            stage=stage,
            settings=self.settings.stage(stage.name),
            max_receives=self.settings.max_receives,
            removal_policy=self._removal,
        )
        sq.connect(self.bucket, stage_fn.function)
        self.stage_queues[stage.name] = sq
        CfnOutput(self, QUEUE_URL_OUTPUT.format(function_id=stage.function_id), value=sq.queue.queue_url)
        return sq.retry_queue

    def _wire_s3_events(self, stage: Stage, stage_fn: StageFunction) -> sqs.Queue:
        fn = stage_fn.function
        assert stage_fn.failure_queue is not None
        # S3 -> function, filtered to this stage's input prefix. The stage table
        # guarantees no two stages' prefixes overlap (S3 would reject the config).
        self.bucket.add_event_notification(
            s3.EventType.OBJECT_CREATED,
            s3n.LambdaDestination(fn),
            s3.NotificationKeyFilter(prefix=stage.input_prefix, suffix=TASK_SUFFIX),
        )
        # The retry extension: transient failures are re-sent to the stage's queue
        # with a delivery delay, and Lambda's on-failure records land there too; the
        # stage's retry consumer runs them (partial batch failures keep the rest).
        fn.add_environment(lambda_env.ENV_RETRY_QUEUE_URL, stage_fn.failure_queue.queue_url)
        # Also what the on-failure destination needs (Lambda sends with this role); CDK's
        # grant adds GetQueueAttributes and GetQueueUrl, as its SqsDestination does.
        stage_fn.failure_queue.grant_send_messages(fn)
        return stage_fn.failure_queue

    def _grant_s3(self, stage: Stage, fn: lambda_.Function) -> None:
        access = stage_access(stage, self.table, limits=kept_on_aws(self.settings))
        fn.add_to_role_policy(
            iam.PolicyStatement(
                sid="ReadOwnPrefixes",
                actions=["s3:GetObject"],
                resources=[self.bucket.arn_for_objects(p) for p in access.read],
            )
        )
        fn.add_to_role_policy(
            iam.PolicyStatement(
                sid="WriteOwnPrefixes",
                actions=["s3:PutObject"],
                resources=[self.bucket.arn_for_objects(p) for p in access.write],
            )
        )
        if access.limits:
            fn.add_to_role_policy(
                iam.PolicyStatement(
                    sid="KeepLearnedLimit",
                    actions=["s3:GetObject", "s3:PutObject"],
                    resources=[self.bucket.arn_for_objects(p) for p in access.limits],
                )
            )
        # Unconditioned: a HEAD of a missing key answers 404, not 403, only so (stage_access).
        fn.add_to_role_policy(
            iam.PolicyStatement(
                sid="ListPipelineBucket",
                actions=["s3:ListBucket"],
                resources=[self.bucket.bucket_arn],
            )
        )
        role = fn.role
        assert role is not None
        bucket_arn = f"<{self.resolve(self.storage.data_logical_id)}.Arn>"
        for prefix in sorted({*access.read, *access.write}):
            acknowledge(
                role,
                resource_finding("IAM5", f"{bucket_arn}/{prefix}"),
                f"{prefix} is a key prefix owned by the {stage.name} stage's work; its "
                "task keys are created at run time, so the prefix is the narrowest grant.",
            )
        for prefix in access.limits:
            acknowledge(
                role,
                resource_finding("IAM5", f"{bucket_arn}/{prefix}"),
                f"{prefix} holds one learned rate-limit record per API base URL, keyed by a "
                "hash of that URL; the prefix is the narrowest grant that names it.",
            )

    def _acknowledge_cdk_helpers(self) -> None:
        """Findings on the helper functions CDK itself adds, acknowledged on each helper."""
        notifications = self.node.try_find_child("BucketNotificationsHandler050a0587b7544547bf325f094a3db834")
        if notifications is not None:
            acknowledge(
                notifications,
                managed_policy_finding("IAM4", LAMBDA_BASIC_EXECUTION),
                "CDK's bucket-notifications helper runs once per deploy with the "
                "AWSLambdaBasicExecutionRole managed policy for its own logs.",
            )
