"""Engine ``stepfunctions``: the synthesized ``dev-sfn`` state machine run for real on
moto's Step Functions interpreter, its Lambda tasks routed to the real handlers, Hermes
simulated (``sfn_emulation``). Rows exact with awkward ids under 5xx and 429s, a task
that always crashes recorded (the run going on within the tolerance), and a duplicate
seed notification starting no second execution."""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import task_keys

from fanout.sfn_runs import run_execution
from fanout.simulator import HermesSimulator, SimConfig, Universe
from fanout_aws import stage_handler
from fanout_aws.s3_storage import S3Storage
from fanout_core import keys
from fanout_core.bodies import manifest_body
from fanout_core.failures import FailureRecord
from fanout_core.stages import STAGES

from .sfn_emulation import MapRunModel, SfnEmulation, machine_of, to_moto
from .test_deployed_wiring import _rows, _truth, _unfinished

ENV = "dev-sfn"
BUCKET = "fanout-emulated"
TOKEN = "emulated-token"
RUN = "r1"
DEADLINE_S = 600
"""The longest a run may take on moto's interpreter before the test gives up."""


@dataclasses.dataclass
class SfnOutcome:
    emulation: SfnEmulation
    storage: S3Storage
    execution: dict[str, Any]
    executions: list[dict[str, Any]]
    starts: list[Any]
    sim: HermesSimulator


def _config(**faults: Any) -> SimConfig:
    return dataclasses.replace(SimConfig.from_size("tiny", token=TOKEN, awkward_ids=True), **faults)


def _with_tolerance(doc: dict[str, Any], percentage: float) -> dict[str, Any]:
    """The template with every Map's tolerance set to ``percentage``."""
    doc = copy.deepcopy(doc)
    _, props = machine_of(doc)
    definition = json.loads(props["DefinitionString"])
    for stage in STAGES:
        definition["States"][stage.function_id]["ToleratedFailurePercentage"] = percentage
    props["DefinitionString"] = json.dumps(definition)  # type: ignore[index]
    return doc


@pytest.fixture
def sfn_run(aws: None, template: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from moto.core.config import default_user_config

    monkeypatch.setitem(default_user_config["stepfunctions"], "execute_state_machine", True)
    original = stage_handler.hermes_client

    def quick_client(*args: Any, **kwargs: Any) -> Any:
        client = original(*args, **kwargs)
        client._sleep = lambda _s: None  # the client's in-task backoff: not what this tests
        return client

    monkeypatch.setattr(stage_handler, "hermes_client", quick_client)
    sims: list[HermesSimulator] = []

    def run(
        config: SimConfig,
        *,
        crash_keys: frozenset[str] = frozenset(),
        tolerance: float | None = None,
        without_sid: str | None = None,
    ) -> SfnOutcome:
        doc, wiring = template(ENV)
        if without_sid is not None:  # the template with one grant taken out
            statements = {
                role: tuple(st for st in sts if st.get("Sid") != without_sid)
                for role, sts in wiring.raw_statements.items()
            }
            assert statements != wiring.raw_statements
            wiring = dataclasses.replace(wiring, raw_statements=statements)
        if tolerance is not None:
            doc = _with_tolerance(doc, tolerance)
        sim = HermesSimulator(config)
        url = sim.start()
        sims.append(sim)
        client = {n: boto3.client(n, region_name="us-east-1") for n in ("s3", "sqs", "stepfunctions")}
        client["s3"].create_bucket(Bucket=BUCKET)
        emulation = SfnEmulation(
            doc,
            wiring,
            s3=client["s3"],
            sfn=client["stepfunctions"],
            iam=boto3.client("iam", region_name="us-east-1"),
            awslambda=boto3.client("lambda", region_name="us-east-1"),
            secrets=boto3.client("secretsmanager", region_name="us-east-1"),
            dynamodb=boto3.client("dynamodb", region_name="us-east-1"),
            bucket=BUCKET,
            hermes_url=url,
            token=TOKEN,
            crash_keys=crash_keys,
        )
        # The bucket's notification for the starter, as the template configures it,
        # delivered to a queue: the body moto's S3 really writes (keys URL-encoded).
        (notification,) = wiring.notifications
        queue = client["sqs"].create_queue(QueueName="starter-events")["QueueUrl"]
        arn = client["sqs"].get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        rules = [
            {"Name": "prefix", "Value": notification.prefix},
            {"Name": "suffix", "Value": notification.suffix},
        ]
        client["s3"].put_bucket_notification_configuration(
            Bucket=BUCKET,
            NotificationConfiguration={
                "QueueConfigurations": [
                    {
                        "QueueArn": arn,
                        "Events": ["s3:ObjectCreated:*"],
                        "Filter": {"Key": {"FilterRules": rules}},
                    }
                ]
            },
        )
        client["sqs"].purge_queue(QueueUrl=queue)
        storage = S3Storage(BUCKET, client=client["s3"])
        storage.put(task_keys.manifest_key(RUN), manifest_body(None))
        (message,) = client["sqs"].receive_message(QueueUrl=queue)["Messages"]
        sfn = client["stepfunctions"]
        with emulation.routed(monkeypatch):
            starts = [emulation.start_from(message["Body"]) for _ in range(2)]  # delivered twice
            executions = sfn.list_executions(stateMachineArn=emulation.machine_arn)["executions"]
            assert len(executions) == 1
            deadline = time.monotonic() + DEADLINE_S
            while True:
                execution = sfn.describe_execution(executionArn=executions[0]["executionArn"])
                if execution["status"] != "RUNNING" or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            emulation.count_map_runs(execution["executionArn"])
            # Everything the interpreter runs has ended: a start now (a seed uploaded
            # again) meets a closed execution of that name.
            starts.append(emulation.start_from(message["Body"]))
            executions = sfn.list_executions(stateMachineArn=emulation.machine_arn)["executions"]
        return SfnOutcome(emulation, storage, execution, executions, starts, sim)

    yield run
    for sim in sims:
        sim.stop()


def test_an_awkward_tree_under_5xx_and_429_is_row_exact_from_one_execution(sfn_run: Any) -> None:
    config = _config(error_rate_5xx=0.25, error_rate_429=0.05, fault_seed=11)
    outcome = sfn_run(config)
    assert outcome.execution["status"] == "SUCCEEDED", outcome.execution
    assert outcome.execution["name"] == RUN
    assert outcome.emulation.figures.denied_calls == []
    checked = outcome.emulation.figures.checked_calls  # the roles were really held to
    assert checked["state machine"] > 0 and checked["starter"] > 0
    assert all(checked[fid] > 0 for fid in outcome.emulation.handlers)
    assert _rows(outcome.storage) == _truth(config)
    # the leaf's count ran under the machine's role and was used (a failed count's Catch
    # goes straight to the most per child, past the choice)
    history = outcome.emulation.sfn.get_execution_history(
        executionArn=outcome.execution["executionArn"], maxResults=1000
    )["events"]
    entered = [e["stateEnteredEventDetails"]["name"] for e in history if "stateEnteredEventDetails" in e]
    leaf = STAGES.leaf.function_id
    assert entered[entered.index(f"{leaf}Count") + 1] == f"{leaf}BatchSize", entered
    assert _unfinished(outcome.storage) == [] and list(outcome.storage.list("failed/")) == []
    assert outcome.sim.stats.injected_5xx > 0 and outcome.sim.stats.injected_429 > 0
    runs = outcome.emulation.figures.map_runs
    assert {label: m.children > 0 for label, m in runs.items()} == {s.function_id: True for s in STAGES}


def test_status_reads_the_runs_execution_and_each_map_runs_counts(sfn_run: Any) -> None:
    outcome = sfn_run(_config())
    found = run_execution(outcome.emulation.sfn, outcome.emulation.machine_arn, RUN)
    assert found is not None and (found.name, found.status) == (RUN, "SUCCEEDED")
    assert [m.label for m in found.map_runs] == [s.function_id for s in STAGES]
    for m in found.map_runs:
        assert m.total > 0 and (m.succeeded, m.failed, m.pending, m.running) == (m.total, 0, 0, 0)
    assert run_execution(outcome.emulation.sfn, outcome.emulation.machine_arn, "no-such-run") is None


def test_a_duplicate_seed_notification_starts_no_second_execution(sfn_run: Any) -> None:
    outcome = sfn_run(_config())
    assert [e["name"] for e in outcome.executions] == [RUN]
    # While it ran, the second delivery met the running execution (same name and input:
    # that execution); once it closed, the name answers ExecutionAlreadyExists.
    assert outcome.starts[0] == outcome.starts[1] == {"running": [RUN], "already_exists": []}
    assert outcome.starts[2] == {"running": [], "already_exists": [RUN]}


def test_a_task_that_always_crashes_is_recorded_and_the_run_goes_on_within_tolerance(sfn_run: Any) -> None:
    config = _config()
    universe = Universe(config)
    warrior = universe.warriors()[0]["warrior_id"]
    troop = universe.troops(warrior)[0]["troop_id"]
    crashing = task_keys.data_groups_task_key(RUN, warrior, troop, 0)
    outcome = sfn_run(config, crash_keys=frozenset({crashing}), tolerance=20.0)
    assert outcome.execution["status"] == "SUCCEEDED", outcome.execution
    record = FailureRecord.from_bytes(outcome.storage.get(keys.failed_key(crashing)))
    assert (record.error_kind, record.error_type) == ("crashed", "Runtime.ExitError")
    assert record.attempts == outcome.emulation.settings.max_attempts
    assert list(outcome.storage.list("failed/")) == [keys.failed_key(crashing)]
    assert _rows(outcome.storage) == _truth(config, without_troop=(warrior, troop))
    assert _unfinished(outcome.storage) == []
    leaf = outcome.emulation.figures.map_runs[STAGES.leaf.function_id]
    assert leaf.failed == 1 and not leaf.fails  # 1 of 9 children, under 20%: AWS goes on


def test_a_grant_missing_from_the_machines_role_is_denied_and_fails_the_run(sfn_run: Any) -> None:
    """The IAM check holds: without its listing grant the first Map cannot read its items."""
    outcome = sfn_run(_config(), without_sid="ListStagePrefixes")
    assert outcome.execution["status"] == "FAILED"
    denied = outcome.emulation.figures.denied_calls
    assert denied and all(d.startswith("state machine: s3:ListBucket") for d in denied)


def test_the_same_crash_exceeds_the_templates_tolerance_on_aws() -> None:
    """dev-sfn tolerates 5%: one failed child of the tiny tree's 9 leaf children fails
    the Map Run on AWS (moto ignores the tolerance; this is AWS's rule)."""
    leaf = MapRunModel(STAGES.leaf.function_id, 5.0, children=9, failed=1)
    assert leaf.fails
    assert not MapRunModel(STAGES.leaf.function_id, 5.0, children=20, failed=1).fails


def test_the_moto_definition_differs_from_the_template_only_where_moto_does(template: Any) -> None:
    doc, _ = template(ENV)
    definition = json.loads(machine_of(doc)[1]["DefinitionString"])
    moto_form = to_moto(definition)
    for stage in STAGES:
        ours, theirs = definition["States"][stage.function_id], moto_form["States"][stage.function_id]
        removed = set(ours) - set(theirs)
        assert removed == {"ItemBatcher", "ToleratedFailurePercentage"}
        kinds = {n: c["Type"] for n, c in theirs["ItemProcessor"]["States"].items()}
        assert kinds == {
            n: "Succeed" if c["Type"] == "Fail" else c["Type"]
            for n, c in ours["ItemProcessor"]["States"].items()
        }
        assert theirs["ItemReader"] == ours["ItemReader"]
        assert theirs["MaxConcurrency"] == ours["MaxConcurrency"]
        assert theirs["ItemProcessor"]["ProcessorConfig"] == ours["ItemProcessor"]["ProcessorConfig"]
