"""Alarms and a dashboard per stage: is work failing, piling up, or being held back?

Lambda's own metrics say how the functions run; the ``Fanout`` namespace (CloudWatch
Embedded Metric Format lines the handlers log, dimensions ``Environment`` and ``Stage``)
says what they did: tasks, Hermes calls, 429s, retries, failures, records written,
configuration errors. Every alarm publishes to ``AlarmTopic`` (a key CloudWatch may use).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aws_cdk import Aws, Duration, RemovalPolicy
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from stacks.constructs.alarm_topic import AlarmTopic
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
    "ConfigurationErrors",
)
"""Must equal ``fanout_aws.metrics.METRIC_NAMES`` (a test checks)."""
PERIOD = Duration.minutes(5)
THROTTLED_SHARE = 0.2
"""429s per Hermes call above which, for 15 minutes, the rate limit is set too high."""
RETRY_AGE_SLACK_S = 900
"""How long past its longest delay and a run a retry may wait before it counts as stuck."""


@dataclass(frozen=True, kw_only=True)
class MonitoredStage:
    """What the monitoring needs of one stage."""

    name: str
    function: lambda_.IFunction
    failure_queue: sqs.IQueue | None = None
    """The stage's retry queue; None for engine ``stepfunctions`` (its children retry)."""
    failure_dlq: sqs.IQueue | None = None
    work_queue: sqs.IQueue | None = None
    """Engine ``queue``: the stage's queue (also its ``failure_queue``), whose depth is
    the stage's backlog; None for ``s3_events``, whose backlog Lambda holds."""
    concurrency_cap: int | None = None
    """The stage's cap, drawn on the consumers-in-flight graph."""
    oldest_retry_alarm_s: int = 3600
    """Age of the oldest retry message past which it is stuck, not just delayed."""


@dataclass(frozen=True)
class StageAlarms:
    errors: cw.Alarm
    throttles: cw.Alarm
    failure_queue_depth: cw.Alarm | None
    dead_letters: cw.Alarm | None
    failure_records: cw.Alarm
    configuration_errors: cw.Alarm
    throttled_share: cw.Alarm
    oldest_retry: cw.Alarm | None
    recursion_stopped: cw.Alarm
    """The queue alarms are None for a stage without queues (engine ``stepfunctions``)."""

    def all(self) -> tuple[cw.Alarm, ...]:
        alarms = (
            self.errors,
            self.throttles,
            self.failure_queue_depth,
            self.dead_letters,
            self.failure_records,
            self.configuration_errors,
            self.throttled_share,
            self.oldest_retry,
            self.recursion_stopped,
        )
        return tuple(a for a in alarms if a is not None)


class PipelineMonitoring(Construct):
    """Per-stage alarms (to an SNS topic) and one dashboard.

    Attributes: ``topic``, ``alarm_topic`` (``AlarmTopic``), ``dashboard``, ``alarms``
    (stage name -> ``StageAlarms``).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        dashboard_name: str,
        env_name: str,
        stages: Sequence[MonitoredStage],
        alarm_email: str | None = None,
        sustained_throttle_periods: int = 6,
        removal_policy: RemovalPolicy = RemovalPolicy.RETAIN,
    ) -> None:
        super().__init__(scope, construct_id)
        self.env_name = env_name
        self.alarm_topic = AlarmTopic(
            self,
            "Alarms",
            display_name=f"{dashboard_name} alarms",
            email=alarm_email,
            removal_policy=removal_policy,
        )
        self.topic = self.alarm_topic.topic
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
                    f"(`{NAMESPACE}` namespace, dimensions `Environment` = `{env_name}` and `Stage`)."
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
        errors = self._at_least_one(
            f"{stage.name}Errors",
            (
                f"{stage.name}: invocations have been failing for 15 minutes. The wrapper turns "
                "task errors into retries or failure records, so a raising invocation means "
                "its bookkeeping (S3, SQS, the secret) is failing."
            ),
            fn.metric_errors(period=PERIOD, statistic="Sum"),
            periods=3,
        )
        throttles = self._at_least_one(
            f"{stage.name}Throttles",
            (
                f"{stage.name}: throttled in every 5-minute period for "
                f"{throttle_periods * 5} minutes. Throttling is how the reserved concurrency "
                "paces a run, but sustained throttling means events wait in Lambda's "
                "internal queue and may reach the maximum event age."
            ),
            fn.metric_throttles(period=PERIOD, statistic="Sum"),
            periods=throttle_periods,
        )
        depth: cw.Alarm | None = None
        dead: cw.Alarm | None = None
        if stage.work_queue is not None:
            depth = self._stalled_alarm(stage.name, stage.work_queue)
        elif stage.failure_queue is not None:
            depth = self._at_least_one(
                f"{stage.name}FailureQueueDepth",
                (
                    f"{stage.name}: messages wait in the failure/retry queue (due retries or events "
                    "Lambda gave up on) and the function is not draining them."
                ),
                stage.failure_queue.metric_approximate_number_of_messages_visible(
                    period=PERIOD, statistic="Maximum"
                ),
                periods=3,
            )
        if stage.failure_dlq is not None:
            dead = self._at_least_one(
                f"{stage.name}DeadLetters",
                (
                    f"{stage.name}: a retry message could not be processed after repeated receives "
                    "and sits in the dead-letter queue; its task needs a redrive."
                ),
                stage.failure_dlq.metric_approximate_number_of_messages_visible(
                    period=PERIOD, statistic="Maximum"
                ),
            )
        return StageAlarms(
            errors,
            throttles,
            depth,
            dead,
            *self._outcome_alarms(stage),
        )

    def _at_least_one(
        self, construct_id: str, description: str, metric: cw.IMetric, *, periods: int = 1
    ) -> cw.Alarm:
        """An alarm on at least one of something per period, for ``periods`` periods in a row
        (one period: it rings at the first)."""
        return cw.Alarm(
            self,
            construct_id,
            alarm_description=description,
            metric=metric,
            threshold=1,
            evaluation_periods=periods,
            datapoints_to_alarm=periods if periods > 1 else None,
            comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
        )

    def _emf(self, stage: str, name: str, statistic: str = "Sum") -> cw.Metric:
        return cw.Metric(
            namespace=NAMESPACE,
            metric_name=name,
            dimensions_map={"Environment": self.env_name, "Stage": stage},
            statistic=statistic,
            period=PERIOD,
            label=name,
        )

    def _outcome_alarms(
        self, stage: MonitoredStage
    ) -> tuple[cw.Alarm, cw.Alarm, cw.Alarm, cw.Alarm | None, cw.Alarm]:
        """What the tasks did: failure records, configuration errors, 429 share, a stuck
        retry, and Lambda's recursive-loop detection stopping the function."""
        name = stage.name
        failures = self._at_least_one(
            f"{name}FailureRecords",
            (
                f"{name}: tasks wrote failure records (failed/<task key>); `fanout failures` "
                "lists them, `fanout redrive` re-runs them once the cause is fixed."
            ),
            self._emf(name, "Failures"),
        )
        configuration = self._at_least_one(
            f"{name}ConfigurationErrors",
            (
                f"{name}: a configuration error (missing or unreadable secret, a Hermes URL "
                "that does not resolve) failed tasks without retries; fix it, then redrive."
            ),
            self._emf(name, "ConfigurationErrors"),
        )
        share = cw.Alarm(
            self,
            f"{name}Throttled429Share",
            alarm_description=(
                f"{name}: more than {THROTTLED_SHARE:.0%} of Hermes calls answered 429 for 15 "
                "minutes: hermes_rate_limit is above what Hermes allows the token."
            ),
            metric=cw.MathExpression(
                expression="IF(calls > 0, throttled / calls, 0)",
                using_metrics={
                    "calls": self._emf(name, "ApiCalls"),
                    "throttled": self._emf(name, "Throttled429"),
                },
                period=PERIOD,
                label="429 share",
            ),
            threshold=THROTTLED_SHARE,
            evaluation_periods=3,
            datapoints_to_alarm=3,
            comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
        )
        oldest = (
            cw.Alarm(
                self,
                f"{name}OldestRetry",
                alarm_description=(
                    f"{name}: a retry message has waited over {stage.oldest_retry_alarm_s} s, past "
                    "its longest delay and a run: retries are not being delivered."
                ),
                metric=stage.failure_queue.metric_approximate_age_of_oldest_message(
                    period=PERIOD, statistic="Maximum"
                ),
                threshold=stage.oldest_retry_alarm_s,
                evaluation_periods=1,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            )
            if stage.failure_queue is not None
            else None
        )
        recursion = self._at_least_one(
            f"{name}RecursionStopped",
            (
                f"{name}: Lambda's recursive-loop detection stopped an invocation; its event "
                "went to the on-failure path and is recorded as a failure."
            ),
            stage.function.metric("RecursiveInvocationsDropped", period=PERIOD, statistic="Sum"),
        )
        return failures, configuration, share, oldest, recursion

    def _stalled_alarm(self, name: str, queue: sqs.IQueue) -> cw.Alarm:
        """Engine ``queue``: a backlog is how a run is paced, so depth alone is no alarm;
        messages waiting while none is consumed for 15 minutes is."""
        return self._at_least_one(
            f"{name}QueueStalled",
            (
                f"{name}: tasks wait in the stage queue and none has been consumed for 15 "
                "minutes: the function is not draining it (failing, disabled mapping, or "
                "concurrency taken)."
            ),
            cw.MathExpression(
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
            periods=3,
        )

    def _widgets(self, stage: MonitoredStage, alarms: StageAlarms) -> list[cw.IWidget]:
        fn = stage.function
        title = stage.name
        emf = [self._emf(stage.name, name) for name in EMF_METRICS]
        if stage.failure_queue is None or stage.failure_dlq is None:
            # Engine stepfunctions: no queues; the Map Runs' row shows what waits.
            return [
                cw.GraphWidget(
                    title=f"{title}: invocations, errors, throttles, concurrency",
                    left=[
                        fn.metric_invocations(period=PERIOD, statistic="Sum"),
                        fn.metric_errors(period=PERIOD, statistic="Sum"),
                        fn.metric_throttles(period=PERIOD, statistic="Sum"),
                    ],
                    right=[fn.metric("ConcurrentExecutions", period=PERIOD, statistic="Maximum")],
                    right_annotations=(
                        [cw.HorizontalAnnotation(value=stage.concurrency_cap, label="MaxConcurrency")]
                        if stage.concurrency_cap
                        else None
                    ),
                    width=8,
                ),
                cw.GraphWidget(
                    title=f"{title}: duration",
                    left=[
                        fn.metric_duration(period=PERIOD, statistic="Average"),
                        fn.metric_duration(period=PERIOD, statistic="Maximum"),
                    ],
                    width=8,
                ),
                cw.GraphWidget(
                    title=f"{title}: pipeline metrics ({NAMESPACE})",
                    left=[m for m in emf if m.metric_name != "RecordsWritten"],
                    right=[m for m in emf if m.metric_name == "RecordsWritten"],
                    width=8,
                ),
                cw.AlarmStatusWidget(title=f"{title}: alarms", alarms=list(alarms.all()), width=24, height=2),
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


STATES_NAMESPACE = "AWS/States"


def state_machine_monitoring(
    monitoring: PipelineMonitoring,
    machine: sfn.IStateMachine,
    *,
    starter: lambda_.IFunction,
    stage_labels: Sequence[str],
    tolerated_failure_percentage: float,
) -> list[cw.Alarm]:
    """Engine ``stepfunctions``: alarms on a failed run, on children failing past the
    tolerance and on the starter failing; a dashboard row with each stage's Map Run."""
    action = cw_actions.SnsAction(monitoring.topic)
    failed = monitoring._at_least_one(
        "RunFailed",
        (
            "A run's execution failed, timed out or was aborted: a stage's children failed past "
            f"the tolerance ({tolerated_failure_percentage:g}%), or a seed crashed. "
            "`fanout status --bucket B` shows the Map Runs; `fanout redrive RUN --bucket B` "
            "redrives it once the cause is fixed."
        ),
        cw.MathExpression(
            expression="failed + timedout + aborted",
            using_metrics={
                "failed": machine.metric_failed(period=PERIOD, statistic="Sum"),
                "timedout": machine.metric_timed_out(period=PERIOD, statistic="Sum"),
                "aborted": machine.metric_aborted(period=PERIOD, statistic="Sum"),
            },
            period=PERIOD,
            label="runs failed",
        ),
    )

    def child(label: str, name: str) -> cw.Metric:
        """Child executions emit metrics under ``<machine ARN>/<Map Run label>``."""
        return cw.Metric(
            namespace=STATES_NAMESPACE,
            metric_name=name,
            dimensions_map={"StateMachineArn": f"{machine.state_machine_arn}/{label}"},
            statistic="Sum",
            period=PERIOD,
            label=f"{label} {name.removeprefix('Executions').lower()}",
        )

    children: dict[str, cw.IMetric] = {}
    for index, label in enumerate(stage_labels):
        children[f"f{index}"] = child(label, "ExecutionsFailed")
        children[f"s{index}"] = child(label, "ExecutionsStarted")
    failed_sum = " + ".join(f"f{i}" for i in range(len(stage_labels)))
    started_sum = " + ".join(f"s{i}" for i in range(len(stage_labels)))
    share = cw.Alarm(
        monitoring,
        "ChildFailuresAboveTolerance",
        alarm_description=(
            f"More than {tolerated_failure_percentage:g}% of the child executions started in 5 "
            "minutes failed (the Maps' tolerance): each failed child's tasks crashed on every "
            "try and are recorded under failed/; `fanout failures` lists them."
        ),
        metric=cw.MathExpression(
            expression=f"IF(({started_sum}) > 0, 100 * ({failed_sum}) / ({started_sum}), 0)",
            using_metrics=children,
            period=PERIOD,
            label="failed children %",
        ),
        threshold=tolerated_failure_percentage,
        evaluation_periods=1,
        comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
        treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
    )
    starter_errors = monitoring._at_least_one(
        "StarterErrors",
        (
            "The starter could not start a run's execution (after Lambda's retries the seed "
            "event is dropped): `fanout redrive RUN --bucket B` starts it."
        ),
        starter.metric_errors(period=PERIOD, statistic="Sum"),
    )
    alarms = [failed, share, starter_errors]
    for alarm in alarms:
        alarm.add_alarm_action(action)
    monitoring.dashboard.add_widgets(
        cw.TextWidget(
            markdown=(
                "## Runs (Step Functions)\nEach stage is a Map Run (labels "
                f"{', '.join(stage_labels)}): its children started, succeeded and failed; "
                "`fanout status --bucket B` gives each Map Run's counts."
            ),
            width=24,
            height=2,
        ),
        cw.GraphWidget(
            title="Run executions",
            left=[
                machine.metric_started(period=PERIOD, statistic="Sum"),
                machine.metric_succeeded(period=PERIOD, statistic="Sum"),
                machine.metric_failed(period=PERIOD, statistic="Sum"),
            ],
            width=6,
        ),
        *(
            cw.GraphWidget(
                title=f"Map Run {label}: children",
                left=[
                    child(label, n) for n in ("ExecutionsStarted", "ExecutionsSucceeded", "ExecutionsFailed")
                ],
                width=6,
            )
            for label in stage_labels
        ),
        cw.AlarmStatusWidget(title="Runs: alarms", alarms=alarms, width=24, height=2),
    )
    return alarms


def dashboard_url(dashboard_name: str) -> str:
    """Console link to the dashboard, in the stack's own region."""
    return (
        f"https://{Aws.REGION}.console.aws.amazon.com/cloudwatch/home"
        f"?region={Aws.REGION}#dashboards:name={dashboard_name}"
    )
