"""Engine ``stepfunctions``: one Standard execution per run, a Distributed Map per stage.

A seed manifest under the first stage's prefix notifies a small starter function
(``fanout_aws.sfn_starter``), which starts the run's execution named after the run id
(a duplicate notification starts nothing). The execution, built from the stage table:

1. runs the first stage's function on the seed manifest (a plain ``Task``), which
   splits it into parts under the run's first-stage prefix;
2. then, stage after stage (the barrier: a stage's children are all written before the
   next stage's listing), a ``DISTRIBUTED`` Map whose ``ItemReader`` lists the run's
   prefix of that stage (``s3:listObjectsV2``), batches the task keys
   (``ItemBatcher``: one per child for a stage that fans out; for the leaf, the size its
   ``sizing_states`` chose from a count of its tasks, ``fanout_aws.sfn_starter.batch_size``),
   runs at most the stage's cap of children at once
   (``MaxConcurrency`` = ``reserved_concurrency``) and tolerates
   ``tolerated_failure_percentage`` of them failing.

Each child invokes the stage's function on its batch (``fanout_aws.events``'s
``fanout_sfn`` payload); the function runs ``run_task`` per key. A transient failure
makes the invocation raise (``TasksToRetry``) and the child's ``Retry`` invokes the batch
again with backoff and full jitter, ``max_attempts`` tries in all; the last try writes
the failure record of a task that still fails. A batch that crashes on every try (a
timeout, the process dying) is caught and handed back to the function once more, which
records ``crashed`` for each task that has no outcome yet; the child then fails, and
counts against the tolerance. No retry queues, no asynchronous invoke configuration and
no S3 notifications to the stage functions exist in this mode.

The barrier stays: a Map nested in each child (over its own batch's children) would start
the next stage sooner, but ``MaxConcurrency`` is per Map Run, so a stage's cap would be
split among its parents' Map Runs and the last parent's tail would run at its share
(docs/engines.md, "Nested maps"); one Map per stage keeps the whole cap for its children.

Children are Standard workflows: an Express child lives at most 5 minutes, less than one
try of a stage whose timeout is 600-900 s, let alone its retries' backoff (docs/engines.md
gives the figures).
"""

from __future__ import annotations

import json
from typing import Any

from aws_cdk import ArnFormat, Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from fanout_aws import config as lambda_env
from fanout_aws.events import SFN_MARKER
from fanout_aws.sfn_starter import COUNTED_TASKS, RUN_PREFIXES, SEED_ITEMS
from fanout_core.settings import EnvironmentSettings
from fanout_core.stages import STAGES, Stage, StageTable
from stacks.constructs.function_role import function_role
from stacks.constructs.stage_function import ARCHITECTURE, RUNTIME
from stacks.nag import acknowledge, resource_finding

STATES_PRINCIPAL = "states.amazonaws.com"
LAMBDA_INVOKE = "arn:aws:states:::lambda:invoke"
LIST_OBJECTS = "arn:aws:states:::s3:listObjectsV2"
COUNT_OBJECTS = "arn:aws:states:::aws-sdk:s3:listObjectsV2"
LEAF_TASKS = "leaf_tasks"
BATCH = "batch"
"""Where the sizing states put the leaf's task count and its batch size in the
execution's state (beside ``run_prefixes``)."""
BUCKET_VAR = "Bucket"
RUN_TIMEOUT = Duration.days(7)
"""The longest a run may take before its execution times out (and alarms): far beyond a
run's hours of retries, so only a stuck run reaches it."""
INVOKE_SLACK_S = 60
"""A child's wait for its function is bounded by the function's timeout plus this."""
BACKOFF_RATE = 2.0
CRASH_RECORD_ATTEMPTS = 3
"""Tries of the step that records a crashed batch's failures (S3 hiccups only)."""
STARTER_HANDLER = "fanout_aws.handlers.sfn_starter.handler"
STARTER_MEMORY_MB = 256
STARTER_TIMEOUT = Duration.seconds(30)
STARTER_EVENT_AGE = Duration.hours(6)
TASK_FAILED = "TaskCrashed"
"""The error a child fails with after its crash was recorded (counted by the tolerance)."""


def function_var(stage: Stage) -> str:
    """The definition substitution naming a stage function's ARN."""
    return f"{stage.function_id}FunctionArn"


def _retry(settings: EnvironmentSettings, attempts: int) -> list[dict[str, Any]]:
    """Every error is retried: the function raises only for what another try may cure
    (``TasksToRetry``, its bookkeeping, a crash); a task's permanent failure is a record
    and a successful invocation."""
    interval = max(1, round(settings.retry_base_delay_s))
    return [
        {
            "ErrorEquals": ["States.ALL"],
            "IntervalSeconds": interval,
            "BackoffRate": BACKOFF_RATE,
            "MaxAttempts": attempts,
            "MaxDelaySeconds": max(interval, round(settings.retry_max_delay_s)),
            "JitterStrategy": "FULL",
        }
    ]


def _invoke(stage: Stage, payload: dict[str, Any], timeout_s: int) -> dict[str, Any]:
    return {
        "Type": "Task",
        "Resource": LAMBDA_INVOKE,
        "Parameters": {"FunctionName": f"${{{function_var(stage)}}}", "Payload": {SFN_MARKER: payload}},
        "TimeoutSeconds": timeout_s + INVOKE_SLACK_S,
    }


def _batch_steps(stage: Stage, settings: EnvironmentSettings, items: str, prefix: str) -> dict[str, Any]:
    """The states that run one batch (``items`` is its JSONPath): the try with its
    retries, the recording of a crash, and the failure that counts it."""
    timeout_s = settings.stage(stage.name).timeout_s
    run = _invoke(
        stage,
        {
            "Bucket": f"${{{BUCKET_VAR}}}",
            "Items.$": items,
            "RetryCount.$": "$$.State.RetryCount",
            "StartedAt.$": "$$.Execution.StartTime",
        },
        timeout_s,
    )
    run.update(
        Retry=_retry(settings, settings.max_attempts - 1),
        Catch=[{"ErrorEquals": ["States.ALL"], "ResultPath": "$.Crash", "Next": f"{prefix}RecordCrash"}],
        ResultPath=None,
        OutputPath=None,
        End=True,
    )
    record = _invoke(
        stage,
        {
            "Bucket": f"${{{BUCKET_VAR}}}",
            "Items.$": items,
            "Attempts": settings.max_attempts,
            "Crash.$": "$.Crash",
        },
        timeout_s,
    )
    record.update(
        Retry=_retry(settings, CRASH_RECORD_ATTEMPTS),
        ResultPath=None,
        Next=f"{prefix}Crashed",
    )
    crashed = {
        "Type": "Fail",
        "Error": TASK_FAILED,
        "Cause": f"a {stage.name} batch crashed on every try; its tasks are recorded under failed/",
    }
    return {f"{prefix}Run": run, f"{prefix}RecordCrash": record, f"{prefix}Crashed": crashed}


def sizing_states(stage: Stage, settings: EnvironmentSettings) -> dict[str, Any]:
    """The states before the leaf's Map that size its batches as ``batch_size`` does:
    count the stage's tasks (one listing page, ``COUNTED_TASKS`` at most), then
    ``ceil(tasks / MaxConcurrency)`` (``States.ArrayPartition`` of a range counts it),
    between 1 and ``items_per_batch``; ``items_per_batch`` if the count fails."""
    fid, most = stage.function_id, settings.items_per_batch
    cap = settings.stage(stage.name).reserved_concurrency
    tasks = f"$.{LEAF_TASKS}.n"

    def size(result: dict[str, Any]) -> dict[str, Any]:
        return {"Type": "Pass", **result, "ResultPath": f"$.{BATCH}", "Next": fid}

    count = {
        "Type": "Task",
        "Resource": COUNT_OBJECTS,
        "Parameters": {
            "Bucket": f"${{{BUCKET_VAR}}}",
            "Prefix.$": f"$.{RUN_PREFIXES}.{stage.name}",
            "MaxKeys": COUNTED_TASKS,
        },
        "ResultSelector": {"n.$": "$.KeyCount"},
        "ResultPath": f"$.{LEAF_TASKS}",
        "Retry": [
            {"ErrorEquals": ["States.ALL"], "IntervalSeconds": 1, "MaxAttempts": 2, "JitterStrategy": "FULL"}
        ],
        "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": None, "Next": f"{fid}MostPerChild"}],
        "Next": f"{fid}BatchSize",
    }
    choose = {
        "Type": "Choice",
        "Choices": [
            {"Variable": tasks, "NumericLessThanEquals": cap, "Next": f"{fid}OnePerChild"},
            {"Variable": tasks, "NumericGreaterThan": cap * (most - 1), "Next": f"{fid}MostPerChild"},
        ],
        "Default": f"{fid}OneWave",
    }
    wave = f"States.ArrayLength(States.ArrayPartition(States.ArrayRange(1, {tasks}, 1), {cap}))"
    return {
        f"{fid}Count": count,
        f"{fid}BatchSize": choose,
        f"{fid}OnePerChild": size({"Result": {"n": 1}}),
        f"{fid}MostPerChild": size({"Result": {"n": most}}),
        f"{fid}OneWave": size({"Parameters": {"n.$": wave}}),
    }


def _entry(stage: Stage) -> str:
    """The first state of a stage's part of the run: its Map, or the leaf's sizing."""
    return f"{stage.function_id}Count" if stage.writes_parquet else stage.function_id


def map_state(stage: Stage, settings: EnvironmentSettings, next_state: str | None) -> dict[str, Any]:
    """A stage's Distributed Map over the run's task objects of that stage: one task a
    child in a stage that fans out, the size ``sizing_states`` chose in the leaf."""
    steps = _batch_steps(stage, settings, "$.Items", "")
    fans_out = not stage.writes_parquet
    batcher = {"MaxItemsPerBatch": 1} if fans_out else {"MaxItemsPerBatchPath": f"$.{BATCH}.n"}
    state: dict[str, Any] = {
        "Type": "Map",
        "Label": stage.function_id,
        "ItemReader": {
            "Resource": LIST_OBJECTS,
            "Parameters": {"Bucket": f"${{{BUCKET_VAR}}}", "Prefix.$": f"$.{RUN_PREFIXES}.{stage.name}"},
        },
        "ItemSelector": {"Key.$": "$$.Map.Item.Value.Key"},
        "ItemBatcher": batcher,
        "MaxConcurrency": settings.stage(stage.name).reserved_concurrency,
        "ToleratedFailurePercentage": float(settings.tolerated_failure_percentage),
        "ItemProcessor": {
            "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
            "StartAt": "Run",
            "States": steps,
        },
        # A child's output is {} (OutputPath null), and the Map's is dropped: a run's
        # thousands of children must not approach the 256 KiB payload limit.
        "ResultPath": None,
    }
    state.update({"Next": next_state} if next_state else {"End": True})
    return state


def run_definition(settings: EnvironmentSettings, table: StageTable = STAGES) -> dict[str, Any]:
    """The run state machine's definition (Amazon States Language), with substitutions
    ``${Bucket}`` and ``${<FunctionId>FunctionArn}`` for the template to fill in."""
    first = table.first
    seed = f"{first.function_id}Seed"
    states: dict[str, Any] = {}
    seed_steps = _batch_steps(first, settings, f"$.{SEED_ITEMS}", seed)
    seed_steps[f"{seed}Run"].pop("End")
    seed_steps[f"{seed}Run"].pop("OutputPath")
    seed_steps[f"{seed}Run"]["Next"] = _entry(first)
    states.update(seed_steps)
    for index, stage in enumerate(table):
        following = _entry(table[index + 1]) if index + 1 < len(table) else None
        states[stage.function_id] = map_state(stage, settings, following)
        if stage.writes_parquet:
            states.update(sizing_states(stage, settings))
    return {
        "Comment": f"fanout {settings.name}: one run, stage after stage ({', '.join(table.names)})",
        "StartAt": f"{seed}Run",
        "TimeoutSeconds": int(RUN_TIMEOUT.to_seconds()),
        "States": states,
    }


class StepFunctionsEngine(Construct):
    """The run state machine, its role, and the starter function the bucket notifies.

    Attributes: ``state_machine``, ``state_machine_name``, ``role``, ``starter``,
    ``definition`` (the ASL before substitution), ``log_group``.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: EnvironmentSettings,
        bucket: s3.Bucket,
        functions: dict[str, lambda_.IFunction],
        code: lambda_.Code,
        state_machine_name: str,
        log_retention: logs.RetentionDays,
        removal_policy: RemovalPolicy,
        api_path: str,
        tracing: bool = False,
        table: StageTable = STAGES,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self.state_machine_name = state_machine_name
        # Named by hand: the role's grant on the machine's own ARN (children start
        # executions of it) must not depend on the machine itself.
        machine_arn = stack.format_arn(
            service="states",
            resource="stateMachine",
            resource_name=state_machine_name,
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        executions_arn = stack.format_arn(
            service="states",
            resource="execution",
            resource_name=f"{state_machine_name}/*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal(STATES_PRINCIPAL),  # type: ignore[arg-type]
            description=f"fanout {settings.name} run state machine",
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="InvokeStageFunctions",
                actions=["lambda:InvokeFunction"],
                resources=[functions[stage.name].function_arn for stage in table],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="StartOwnChildren", actions=["states:StartExecution"], resources=[machine_arn]
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="ManageOwnChildren",
                actions=["states:DescribeExecution", "states:StopExecution", "states:RedriveExecution"],
                resources=[executions_arn],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="ListStagePrefixes",
                actions=["s3:ListBucket"],
                resources=[bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{stage.input_prefix}*" for stage in table]}},
            )
        )
        self.definition = run_definition(settings, table)
        substitutions = {BUCKET_VAR: bucket.bucket_name}
        substitutions.update({function_var(s): functions[s.name].function_arn for s in table})
        self.log_group = logs.LogGroup(self, "Logs", retention=log_retention, removal_policy=removal_policy)
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_name=state_machine_name,
            state_machine_type=sfn.StateMachineType.STANDARD,
            definition_body=sfn.DefinitionBody.from_string(json.dumps(self.definition, sort_keys=True)),
            definition_substitutions=substitutions,
            role=self.role,  # type: ignore[arg-type]
            timeout=RUN_TIMEOUT,
            logs=sfn.LogOptions(
                destination=self.log_group,  # type: ignore[arg-type]
                level=sfn.LogLevel.ERROR,
                include_execution_data=False,
            ),
            tracing_enabled=tracing,
            removal_policy=removal_policy,
        )
        acknowledge(
            self.role,
            resource_finding("IAM5", "*"),
            "Step Functions log delivery to CloudWatch Logs (logs:CreateLogDelivery and its "
            "kin) accepts only Resource '*' (AWS documents no narrower resource).",
        )
        acknowledge(
            self.role,
            resource_finding(
                "IAM5",
                f"arn:<AWS::Partition>:states:<AWS::Region>:<AWS::AccountId>:execution:{state_machine_name}/*",
            ),
            "A Distributed Map's child executions are named by the service at run time "
            "(<machine>/<map run>:<child>); the machine's own executions are the narrowest grant.",
        )
        if not tracing:
            acknowledge(
                self.state_machine,
                "SF2",
                "X-Ray tracing is opt-in (stack tracing=True), as for the stage functions: "
                "tens of thousands of child executions per run would dominate the trace cost.",
            )
        acknowledge(
            self.state_machine,
            "SF1",
            "The machine logs at level ERROR: ALL would log every event of every child "
            "execution (tens of thousands per run); the functions log each task's outcome.",
        )
        self.starter = self._starter(
            settings, bucket, code, machine_arn, log_retention, removal_policy, api_path
        )

    def _starter(
        self,
        settings: EnvironmentSettings,
        bucket: s3.Bucket,
        code: lambda_.Code,
        machine_arn: str,
        log_retention: logs.RetentionDays,
        removal_policy: RemovalPolicy,
        api_path: str,
    ) -> lambda_.Function:
        log_group = logs.LogGroup(self, "StarterLogs", retention=log_retention, removal_policy=removal_policy)
        starter = lambda_.Function(
            self,
            "Starter",
            description=f"fanout {settings.name}: a seed manifest starts its run's execution",
            runtime=RUNTIME,
            architecture=ARCHITECTURE,
            handler=STARTER_HANDLER,
            code=code,
            memory_size=STARTER_MEMORY_MB,
            timeout=STARTER_TIMEOUT,
            environment={
                lambda_env.ENV_BUCKET: bucket.bucket_name,
                lambda_env.ENV_STATE_MACHINE_ARN: machine_arn,
                lambda_env.ENV_API: api_path,  # the seeds' stage, from the description
            },
            logging_format=lambda_.LoggingFormat.JSON,
            application_log_level_v2=lambda_.ApplicationLogLevel.INFO,
            system_log_level_v2=lambda_.SystemLogLevel.WARN,
            log_group=log_group,
            role=function_role(self, "StarterRole", log_group, f"fanout {settings.name} run starter"),
            retry_attempts=2,
            max_event_age=STARTER_EVENT_AGE,
        )
        starter.add_to_role_policy(
            iam.PolicyStatement(sid="StartRuns", actions=["states:StartExecution"], resources=[machine_arn])
        )
        return starter
