"""Engine ``stepfunctions`` seen from outside: a run's execution and its Map Runs, and
its redrive. Everything takes a boto3 Step Functions client, so it runs against AWS or
moto alike; nothing here is deployed.

- ``machine_arn``: the run state machine, from the stack's ``RunStateMachineArn`` output.
- ``run_execution``: the run's execution (named after the run id) and each Map Run's
  child counts (succeeded, failed, pending, running), for ``fanout status --bucket B``.
- ``redrive_run``: after ``fanout.redrive`` wrote the run's failed tasks again as new
  task objects, either redrive the failed execution (Step Functions re-runs its Map Runs'
  failed and unstarted children: nothing else to do) or start a fresh execution, named
  ``<run>-redrive-<n>``, over the run's task objects (done ones are skipped by their done
  markers), and say which.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fanout_aws.sfn_starter import start_run

STATE_MACHINE_ARN_OUTPUT = "RunStateMachineArn"
"""Must equal ``stacks.fanout_stack.STATE_MACHINE_ARN_OUTPUT`` (a test checks)."""
MAX_MAP_RUN_PAGES = 10
"""``ListMapRuns`` pages read at most (a run has one Map Run per stage, plus redrives)."""
MAX_FRESH_NAMES = 100
"""Names ``<run>-redrive-<n>`` tried before a fresh execution gives up."""
ENDED_BADLY = ("FAILED", "TIMED_OUT", "ABORTED")


class StepFunctionsError(Exception):
    """No such execution or stack output, or Step Functions refused: one line."""


@dataclass(frozen=True)
class MapRunCounts:
    label: str
    status: str
    succeeded: int
    failed: int
    pending: int
    running: int
    total: int
    tolerated_failure_percentage: float

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "label"}


@dataclass
class RunExecution:
    name: str
    arn: str
    status: str
    redrive_status: str | None
    redrive_count: int
    map_runs: list[MapRunCounts] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "redrive_status": self.redrive_status,
            "redrive_count": self.redrive_count,
            "map_runs": {m.label: m.as_dict() for m in self.map_runs},
        }


def connect(region: str | None = None, endpoint_url: str | None = None) -> tuple[Any, Any]:
    """(cloudformation, stepfunctions) clients, bounded like every CLI client
    (``fanout.aws_clients``)."""
    from fanout.aws_clients import cli_client

    return (
        cli_client("cloudformation", region=region, endpoint_url=endpoint_url),
        cli_client("stepfunctions", region=region, endpoint_url=endpoint_url),
    )


def machine_arn(cloudformation: Any, stack_name: str) -> str:
    (stack,) = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    arn = outputs.get(STATE_MACHINE_ARN_OUTPUT)
    if not arn:
        raise StepFunctionsError(
            f"stack {stack_name} has no {STATE_MACHINE_ARN_OUTPUT} output (engine stepfunctions)"
        )
    return str(arn)


def execution_arn(state_machine_arn: str, name: str) -> str:
    """An execution's ARN from its machine's and its name."""
    return state_machine_arn.replace(":stateMachine:", ":execution:", 1) + f":{name}"


def run_execution(sfn: Any, state_machine_arn: str, run_id: str) -> RunExecution | None:
    """The run's execution and its Map Runs' counts; None if it has none."""
    arn = execution_arn(state_machine_arn, run_id)
    try:
        described = sfn.describe_execution(executionArn=arn)
    except sfn.exceptions.ExecutionDoesNotExist:
        return None
    found = RunExecution(
        name=run_id,
        arn=arn,
        status=described["status"],
        redrive_status=described.get("redriveStatus"),
        redrive_count=int(described.get("redriveCount", 0)),
    )
    token: str | None = None
    for _ in range(MAX_MAP_RUN_PAGES):
        page = sfn.list_map_runs(executionArn=arn, **({"nextToken": token} if token else {}))
        for item in page.get("mapRuns", []):
            run = sfn.describe_map_run(mapRunArn=item["mapRunArn"])
            counts = run.get("executionCounts", {})
            found.map_runs.append(
                MapRunCounts(
                    label=_label(item["mapRunArn"]),
                    status=run.get("status", "?"),
                    succeeded=int(counts.get("succeeded", 0)),
                    failed=int(counts.get("failed", 0)) + int(counts.get("timedOut", 0)),
                    pending=int(counts.get("pending", 0)),
                    running=int(counts.get("running", 0)),
                    total=int(counts.get("total", 0)),
                    tolerated_failure_percentage=float(run.get("toleratedFailurePercentage", 0.0)),
                )
            )
        token = page.get("nextToken")
        if not token:
            break
    return found


def _label(map_run_arn: str) -> str:
    """``arn:...:mapRun:<machine>/<label>:<id>`` -> ``<label>``."""
    resource = map_run_arn.split(":mapRun:", 1)[-1]
    return resource.split("/", 1)[-1].rsplit(":", 1)[0]


@dataclass(frozen=True)
class RedriveOutcome:
    action: str
    """``redrove`` (the failed execution) or ``started`` (a fresh execution)."""
    execution_arn: str
    why: str

    def describe(self) -> str:
        if self.action == "redrove":
            return f"redrove execution {self.execution_arn} ({self.why})"
        return f"started execution {self.execution_arn} over the run's unfinished tasks ({self.why})"


def redrive_run(sfn: Any, state_machine_arn: str, run_id: str, *, rewrote_tasks: bool) -> RedriveOutcome:
    """Redrive the run's failed execution when Step Functions can and nothing new was
    written; else start a fresh execution (its Maps list the run's prefixes again, the
    rewritten tasks among them). StepFunctionsError while the execution still runs."""
    current = run_execution(sfn, state_machine_arn, run_id)
    if current is not None and current.status == "RUNNING":
        raise StepFunctionsError(
            f"execution {run_id} is still running; redrive once it ends (`fanout status {run_id}`)"
        )
    if current is not None and current.status in ENDED_BADLY and current.redrive_status == "REDRIVABLE":
        if not rewrote_tasks:
            sfn.redrive_execution(executionArn=current.arn)
            return RedriveOutcome(
                "redrove", current.arn, "its Map Runs re-run their failed and unstarted children"
            )
        why = "failed tasks were written again, which only a new listing sees"
    elif current is None:
        why = "the run has no execution (its start was lost)"
    else:
        why = f"execution {run_id} is {current.status}, redrive status {current.redrive_status or 'none'}"
    names = [run_id] if current is None else [f"{run_id}-redrive-{n}" for n in range(1, MAX_FRESH_NAMES + 1)]
    for name in names:
        arn = start_run(sfn, state_machine_arn, run_id, name=name)
        if arn is not None:
            return RedriveOutcome("started", arn, why)
    raise StepFunctionsError(f"no free execution name for run {run_id} after {len(names)} tries")
