"""Alarms and a dashboard per stage: is work failing, piling up, or being held back?

Lambda's own metrics say how the functions run; the ``Fanout`` namespace (CloudWatch
Embedded Metric Format lines the handlers log, dimension ``Stage``) says what they
did: tasks, Hermes calls, 429s, retries, failures, records written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aws_cdk import Aws, Duration
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from stacks.constructs.backpressure import backpressure_widgets

NAMESPACE = "Fanout"
"""Must equal ``fanout_aws.metrics.NAMESPACE`` (a test checks)."""
EMF_METRICS: tuple[str, ...] = (
    "Tasks",
    "ApiCalls",
    "Throttled429",
    "Retries",
    "Failures",
    "RecordsWritten",
)
"""Must equal ``fanout_aws.metrics.METRIC_NAMES`` (a test checks)."""
PERIOD = Duration.minutes(5)


@dataclass(frozen=True, kw_only=True)
class MonitoredStage:
    """What the monitoring needs of one stage."""

    name: str
    function: lambda_.IFunction
    failure_queue: sqs.IQueue
    failure_dlq: sqs.IQueue
    work_queue: sqs.IQueue | None = None
    """Engine ``queue``: the stage's queue (also its ``failure_queue``), whose depth is
    the stage's backlog; None for ``s3_events``, whose backlog Lambda holds."""
    concurrency_cap: int | None = None
    """The stage's cap, drawn on the consumers-in-flight graph."""


@dataclass(frozen=True)
class StageAlarms:
    errors: cw.Alarm
    throttles: cw.Alarm
    failure_queue_depth: cw.Alarm
    dead_letters: cw.Alarm

    def all(self) -> tuple[cw.Alarm, ...]:
        return (self.errors, self.throttles, self.failure_queue_depth, self.dead_letters)


class PipelineMonitoring(Construct):
    """Per-stage alarms (to an SNS topic) and one dashboard.

    Attributes: ``topic``, ``dashboard``, ``alarms`` (stage name -> ``StageAlarms``).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        dashboard_name: str,
        stages: Sequence[MonitoredStage],
        sustained_throttle_periods: int = 6,
    ) -> None:
        super().__init__(scope, construct_id)
        self.topic = sns.Topic(
            self,
            "AlarmTopic",
            display_name=f"{dashboard_name} alarms",
            enforce_ssl=True,
            # The AWS-managed key: encrypted at rest without a key policy to maintain
            # (CloudWatch alarms may publish to topics encrypted with it).
            master_key=kms.Alias.from_alias_name(self, "SnsKey", "alias/aws/sns"),
        )
        action = cw_actions.SnsAction(self.topic)
        self.alarms: dict[str, StageAlarms] = {}
        self.dashboard = cw.Dashboard(
            self,
            "Dashboard",
            dashboard_name=dashboard_name,
            default_interval=Duration.hours(3),
        )
        self.dashboard.add_widgets(
            cw.TextWidget(
                markdown=(
                    f"# {dashboard_name}\nPer stage: Lambda invocations, errors, throttles, "
                    "duration and concurrency; then the pipeline's own metrics "
                    f"(`{NAMESPACE}` namespace, dimension `Stage`)."
                ),
                width=24,
                height=2,
            )
        )
        for stage in stages:
            alarms = self._alarms(stage, sustained_throttle_periods)
            for alarm in alarms.all():
                alarm.add_alarm_action(action)
            self.alarms[stage.name] = alarms
            self.dashboard.add_widgets(*self._widgets(stage, alarms))

    def _alarms(self, stage: MonitoredStage, throttle_periods: int) -> StageAlarms:
        fn = stage.function
        prefix = f"{stage.name}"
        errors = cw.Alarm(
            self,
            f"{stage.name}Errors",
            alarm_description=(
                f"{prefix}: invocations have been failing for 15 minutes. The wrapper turns "
                "task errors into retries or failure records, so a raising invocation means "
                "its bookkeeping (S3, SQS, the secret) is failing."
            ),
            metric=fn.metric_errors(period=PERIOD, statistic="Sum"),
            threshold=1,
            evaluation_periods=3,
            datapoints_to_alarm=3,
            comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
        )
        throttles = cw.Alarm(
            self,
            f"{stage.name}Throttles",
            alarm_description=(
                f"{prefix}: throttled in every 5-minute period for "
                f"{throttle_periods * 5} minutes. Throttling is how the reserved concurrency "
                "paces a run, but sustained throttling means events wait in Lambda's "
                "internal queue and may reach the maximum event age."
            ),
            metric=fn.metric_throttles(period=PERIOD, statistic="Sum"),
            threshold=1,
            evaluation_periods=throttle_periods,
            datapoints_to_alarm=throttle_periods,
            comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
        )
        if stage.work_queue is not None:
            depth = self._stalled_alarm(stage.name, stage.work_queue)
        else:
            depth = cw.Alarm(
                self,
                f"{stage.name}FailureQueueDepth",
                alarm_description=(
                    f"{prefix}: messages wait in the failure/retry queue (due retries or events "
                    "Lambda gave up on) and the function is not draining them."
                ),
                metric=stage.failure_queue.metric_approximate_number_of_messages_visible(
                    period=PERIOD, statistic="Maximum"
                ),
                threshold=1,
                evaluation_periods=3,
                datapoints_to_alarm=3,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            )
        dead = cw.Alarm(
            self,
            f"{stage.name}DeadLetters",
            alarm_description=(
                f"{prefix}: a retry message could not be processed after repeated receives "
                "and sits in the dead-letter queue; its task needs a redrive."
            ),
            metric=stage.failure_dlq.metric_approximate_number_of_messages_visible(
                period=PERIOD, statistic="Maximum"
            ),
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
        )
        return StageAlarms(errors, throttles, depth, dead)

    def _stalled_alarm(self, name: str, queue: sqs.IQueue) -> cw.Alarm:
        """Engine ``queue``: a backlog is how a run is paced, so depth alone is no alarm;
        messages waiting while none is consumed for 15 minutes is."""
        return cw.Alarm(
            self,
            f"{name}QueueStalled",
            alarm_description=(
                f"{name}: tasks wait in the stage queue and none has been consumed for 15 "
                "minutes: the function is not draining it (failing, disabled mapping, or "
                "concurrency taken)."
            ),
            metric=cw.MathExpression(
                expression="IF(waiting >= 1 AND consumed == 0, 1, 0)",
                using_metrics={
                    "waiting": queue.metric_approximate_number_of_messages_visible(
                        period=PERIOD, statistic="Maximum"
                    ),
                    "consumed": queue.metric_number_of_messages_deleted(period=PERIOD, statistic="Sum"),
                },
                period=PERIOD,
                label="stalled",
            ),
            threshold=1,
            evaluation_periods=3,
            datapoints_to_alarm=3,
            comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
        )

    def _widgets(self, stage: MonitoredStage, alarms: StageAlarms) -> list[cw.IWidget]:
        fn = stage.function
        title = stage.name
        emf = [
            cw.Metric(
                namespace=NAMESPACE,
                metric_name=name,
                dimensions_map={"Stage": stage.name},
                statistic="Sum",
                period=PERIOD,
                label=name,
            )
            for name in EMF_METRICS
        ]
        return [
            cw.GraphWidget(
                title=f"{title}: invocations, errors, throttles",
                left=[
                    fn.metric_invocations(period=PERIOD, statistic="Sum"),
                    fn.metric_errors(period=PERIOD, statistic="Sum"),
                    fn.metric_throttles(period=PERIOD, statistic="Sum"),
                ],
                width=6,
            ),
            cw.GraphWidget(
                title=f"{title}: duration",
                left=[
                    fn.metric_duration(period=PERIOD, statistic="Average"),
                    fn.metric_duration(period=PERIOD, statistic="p99"),
                    fn.metric_duration(period=PERIOD, statistic="Maximum"),
                ],
                width=6,
            ),
            cw.GraphWidget(
                title=f"{title}: concurrent executions, queues",
                left=[fn.metric("ConcurrentExecutions", period=PERIOD, statistic="Maximum")],
                right=[
                    stage.failure_queue.metric_approximate_number_of_messages_visible(
                        period=PERIOD, statistic="Maximum", label="retry queue visible"
                    ),
                    stage.failure_queue.metric(
                        "ApproximateNumberOfMessagesDelayed",
                        period=PERIOD,
                        statistic="Maximum",
                        label="retry queue delayed",
                    ),
                    stage.failure_dlq.metric_approximate_number_of_messages_visible(
                        period=PERIOD, statistic="Maximum", label="dead letters"
                    ),
                ],
                width=6,
            ),
            cw.GraphWidget(
                title=f"{title}: pipeline metrics ({NAMESPACE})",
                left=[m for m in emf if m.metric_name != "RecordsWritten"],
                right=[m for m in emf if m.metric_name == "RecordsWritten"],
                width=6,
            ),
            *backpressure_widgets(
                stage.name,
                fn,
                retry_queue=stage.failure_queue,
                dlq=stage.failure_dlq,
                work_queue=stage.work_queue,
                cap=stage.concurrency_cap,
            ),
            cw.AlarmStatusWidget(title=f"{title}: alarms", alarms=list(alarms.all()), width=24, height=2),
        ]


def dashboard_url(dashboard_name: str) -> str:
    """Console link to the dashboard, in the stack's own region."""
    return (
        f"https://{Aws.REGION}.console.aws.amazon.com/cloudwatch/home"
        f"?region={Aws.REGION}#dashboards:name={dashboard_name}"
    )
