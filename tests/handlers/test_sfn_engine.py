"""Engine ``stepfunctions`` at the handler tier: the real entrypoints given the batches a
Distributed Map child hands them, and the starter on real S3 notifications, on moto.

``run_batches`` is the small model of what AWS does and moto's interpreter does not:
``ItemBatcher`` (keys listed by ``ListObjectsV2``, cut into batches; here of one size in
every stage, so that batches of several keys reach every stage's function, whereas the
definition gives a stage that fans out one task a child: ``sfn_starter.batch_size``) and
the child's ``Retry`` (``$$.State.RetryCount`` counting up, the same batch each time).
Whole runs on the synthesized state machine are ``tests/cloud``'s.
"""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
import task_keys

from fanout.sfn_runs import STATE_MACHINE_ARN_OUTPUT, StepFunctionsError, execution_arn, redrive_run
from fanout_aws.events import SFN_MARKER
from fanout_aws.s3_event import s3_event_for
from fanout_aws.sfn_starter import execution_input, seed_runs, start_run
from fanout_aws.stage_handler import TasksToRetry
from fanout_core import keys
from fanout_core.bodies import manifest_body
from fanout_core.failures import FailureRecord
from fanout_core.stages import STAGES

from .conftest import BUCKET, REGION, Deployment, invoke
from .test_handlers import _rows, _truth

STARTED_AT = "2026-12-07T10:00:00.000Z"


def _batch(keys_: list[str], retry_count: int = 0, bucket: str = BUCKET) -> dict[str, Any]:
    return {
        SFN_MARKER: {
            "Bucket": bucket,
            "Items": [{"Key": k} for k in keys_],
            "RetryCount": retry_count,
            "StartedAt": STARTED_AT,
        }
    }


def _listed(dep: Deployment, prefix: str) -> list[str]:
    """What the ItemReader's ListObjectsV2 yields: keys as stored, never URL-encoded."""
    pages = dep.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def run_batches(dep: Deployment, monkeypatch: pytest.MonkeyPatch, run_id: str, per_batch: int) -> None:
    """One execution, as AWS runs it: the seed task, then per stage its run prefix listed
    once the stage above has finished, cut into batches, each batch retried (the same
    batch, ``RetryCount`` counting up) until an invocation succeeds."""
    doc = execution_input(run_id)
    work = [(STAGES.first.name, [i["Key"] for i in doc["seed"]])]
    work += [(s.name, None) for s in STAGES]
    for name, given in work:
        keys_ = given if given is not None else _listed(dep, doc["run_prefixes"][name])
        for start in range(0, len(keys_), per_batch):
            for retry in range(dep_max_attempts(dep)):
                try:
                    invoke(name, _batch(keys_[start : start + per_batch], retry), monkeypatch, dep)
                    break
                except TasksToRetry:
                    continue


def dep_max_attempts(_dep: Deployment) -> int:
    return 4  # the deployment fixture's default max_attempts


def _seed(dep: Deployment, run_id: str) -> str:
    key = task_keys.manifest_key(run_id)
    dep.storage.put(key, manifest_body(None))
    return key


def test_batches_of_listed_keys_crawl_awkward_ids_to_exactly_the_truth(deployment, monkeypatch, sim_config):
    dep = deployment(with_queues=False)
    _seed(dep, "s1")
    run_batches(dep, monkeypatch, "s1", per_batch=3)
    assert _rows(dep, "s1") == _truth(sim_config)
    assert dep.objects("failed/") == []


def test_a_listed_key_is_used_as_stored_not_url_decoded(deployment, monkeypatch):
    dep = deployment(with_queues=False)
    _seed(dep, "s2")
    invoke("warriors", _batch([task_keys.manifest_key("s2")]), monkeypatch, dep)
    part = _listed(dep, STAGES.first.run_prefix("s2"))[0]
    invoke("warriors", _batch([part]), monkeypatch, dep)
    troops = _listed(dep, STAGES[1].run_prefix("s2"))
    assert any("%" in k for k in troops)  # the awkward ids' segments
    invoke("troops", _batch(troops), monkeypatch, dep)
    assert all(dep.storage.exists(keys.done_key(k)) for k in troops)


def test_a_transient_failure_raises_for_the_childs_retry_and_sends_nothing(deployment, monkeypatch):
    dep = deployment(with_queues=False)
    seed = _seed(dep, "s3")
    dep.sim.stop()  # connection refused: transient
    with pytest.raises(TasksToRetry, match="1 task\\(s\\) to retry"):
        invoke("warriors", _batch([seed], retry_count=0), monkeypatch, dep)
    assert dep.objects("failed/") == []
    assert boto3.client("sqs", region_name=REGION).list_queues().get("QueueUrls", []) == []


def test_the_last_try_records_the_failure_and_the_invocation_succeeds(deployment, monkeypatch):
    dep = deployment(with_queues=False, max_attempts=3)
    seed = _seed(dep, "s4")
    dep.sim.stop()
    assert invoke("warriors", _batch([seed], retry_count=2), monkeypatch, dep) is None
    record = FailureRecord.from_bytes(dep.storage.get(keys.failed_key(seed)))
    assert (record.attempts, record.transient, record.first_attempt_at) == (3, True, STARTED_AT)


def test_a_retried_batch_skips_the_tasks_that_finished(deployment, monkeypatch):
    dep = deployment(with_queues=False)
    _seed(dep, "s5")
    invoke("warriors", _batch([task_keys.manifest_key("s5")]), monkeypatch, dep)
    part = _listed(dep, STAGES.first.run_prefix("s5"))[0]
    invoke("warriors", _batch([part]), monkeypatch, dep)
    done = dep.storage.get(keys.done_key(part))
    requests = dep.sim.stats.requests
    invoke("warriors", _batch([part], retry_count=1), monkeypatch, dep)
    assert dep.storage.get(keys.done_key(part)) == done
    assert dep.sim.stats.requests == requests  # no Hermes call for a finished task


def test_a_batch_that_crashed_on_every_try_records_crashed_for_unfinished_tasks_only(deployment, monkeypatch):
    dep = deployment(with_queues=False, max_attempts=3)
    _seed(dep, "s6")
    invoke("warriors", _batch([task_keys.manifest_key("s6")]), monkeypatch, dep)
    part = _listed(dep, STAGES.first.run_prefix("s6"))[0]
    invoke("warriors", _batch([part]), monkeypatch, dep)
    troops = _listed(dep, STAGES[1].run_prefix("s6"))[:2]
    invoke("troops", _batch(troops[:1]), monkeypatch, dep)  # the first one finished
    crash = {
        SFN_MARKER: {
            "Bucket": BUCKET,
            "Items": [{"Key": k} for k in troops],
            "Attempts": 3,
            "Crash": {"Error": "Sandbox.Timedout", "Cause": "Task timed out after 300.00 seconds"},
        }
    }
    assert invoke("troops", crash, monkeypatch, dep) is None
    assert not dep.storage.exists(keys.failed_key(troops[0]))
    record = FailureRecord.from_bytes(dep.storage.get(keys.failed_key(troops[1])))
    assert (record.error_kind, record.attempts, record.condition) == (
        "crashed",
        3,
        "StepFunctionsRetriesExhausted",
    )
    assert record.error_type == "Sandbox.Timedout"


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (
            _batch([task_keys.troops_task_key("s7", "w", 0)], bucket="another-bucket"),
            "not this function's bucket",
        ),
        (_batch([task_keys.data_groups_task_key("s7", "w", "t", 0)]), "a data_groups task key"),
        ({SFN_MARKER: {"Bucket": BUCKET, "Items": [], "RetryCount": 0}}, "Items must be a list of 1 to"),
        ({SFN_MARKER: {"Bucket": BUCKET, "Items": [{"Key": "x"}], "RetryCount": -1}}, "RetryCount is -1"),
    ],
    ids=["bucket", "stage", "empty", "count"],
)
def test_a_batch_that_is_no_task_of_this_function_is_refused_without_work(
    deployment, monkeypatch, caplog, event, reason
):
    dep = deployment(with_queues=False)
    with caplog.at_level("WARNING", logger="fanout"):
        assert invoke("troops", event, monkeypatch, dep) is None
    lines = [json.loads(r.getMessage()) for r in caplog.records if '"refused"' in r.getMessage()]
    assert lines and reason in lines[0]["reason"]
    assert dep.objects("done/") == [] and dep.objects("failed/") == []


# --- the starter --------------------------------------------------------------------


def _machine() -> tuple[Any, str]:
    client = boto3.client("stepfunctions", region_name=REGION)
    arn = client.create_state_machine(
        name="Fanout-test-Run",
        definition=json.dumps({"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}),
        roleArn="arn:aws:iam::123456789012:role/sfn",
    )["stateMachineArn"]
    return client, arn


def test_a_seed_notification_names_its_run_and_a_part_names_none():
    seed = task_keys.manifest_key("r-1")
    part = task_keys.warriors_part_key("r-1", 0)
    event = s3_event_for(BUCKET, [seed, part, seed])
    assert seed_runs(event, BUCKET) == ["r-1"]
    assert seed_runs(s3_event_for("other", [seed]), BUCKET) == []


def test_a_duplicate_seed_event_starts_no_second_execution(deployment):
    deployment(with_queues=False)
    client, arn = _machine()
    first = start_run(client, arn, "run-1")
    assert first is not None and first.endswith(":run-1")
    client.stop_execution(executionArn=first)  # closed: the name stays taken
    assert start_run(client, arn, "run-1") is None
    executions = client.list_executions(stateMachineArn=arn)["executions"]
    assert [e["name"] for e in executions] == ["run-1"]


def test_an_execution_reads_the_seed_and_each_stages_run_prefix():
    doc = execution_input("r-2")
    assert doc["seed"] == [{"Key": task_keys.manifest_key("r-2")}]
    assert doc["run_prefixes"] == {s.name: task_keys.run_prefix(s.name, "r-2") for s in STAGES}


# --- operations: status and redrive of a run's execution ------------------------------


def test_redrive_refuses_while_the_runs_execution_still_runs(deployment):
    deployment(with_queues=False)
    client, arn = _machine()
    start_run(client, arn, "run-2")  # moto leaves it RUNNING
    with pytest.raises(StepFunctionsError, match="still running"):
        redrive_run(client, arn, "run-2", rewrote_tasks=True)


def test_redrive_of_a_run_whose_start_was_lost_starts_it_under_its_own_name(deployment):
    deployment(with_queues=False)
    client, arn = _machine()
    outcome = redrive_run(client, arn, "run-3", rewrote_tasks=False)
    assert (outcome.action, outcome.execution_arn) == ("started", execution_arn(arn, "run-3"))
    assert "has no execution" in outcome.describe()


def test_redrive_of_a_closed_execution_starts_a_fresh_one_named_for_the_redrive(deployment):
    deployment(with_queues=False)
    client, arn = _machine()
    client.stop_execution(executionArn=start_run(client, arn, "run-4"))
    first = redrive_run(client, arn, "run-4", rewrote_tasks=True)
    client.stop_execution(executionArn=first.execution_arn)
    second = redrive_run(client, arn, "run-4", rewrote_tasks=True)
    assert [first.action, second.action] == ["started", "started"]
    assert [first.execution_arn, second.execution_arn] == [
        execution_arn(arn, "run-4-redrive-1"),
        execution_arn(arn, "run-4-redrive-2"),
    ]
    started = client.describe_execution(executionArn=second.execution_arn)
    assert json.loads(started["input"]) == execution_input("run-4")


class _FailedExecution:
    """A Step Functions client whose run failed and may be redriven (moto has no redrive)."""

    class exceptions:
        ExecutionDoesNotExist = KeyError
        ExecutionAlreadyExists = ValueError

    def __init__(self) -> None:
        self.redriven: list[str] = []
        self.started: list[str] = []

    def describe_execution(self, executionArn: str) -> dict[str, Any]:
        return {"status": "FAILED", "redriveStatus": "REDRIVABLE", "redriveCount": 0}

    def list_map_runs(self, executionArn: str) -> dict[str, Any]:
        return {"mapRuns": []}

    def redrive_execution(self, executionArn: str) -> dict[str, Any]:
        self.redriven.append(executionArn)
        return {}

    def start_execution(self, **kwargs: Any) -> dict[str, Any]:
        self.started.append(kwargs["name"])
        return {"executionArn": f"arn:x:{kwargs['name']}"}


def test_a_failed_redrivable_execution_with_nothing_rewritten_is_redriven():
    client = _FailedExecution()
    arn = "arn:aws:states:us-east-1:123456789012:stateMachine:Fanout-x-Run"
    outcome = redrive_run(client, arn, "run-5", rewrote_tasks=False)
    assert outcome.action == "redrove" and client.redriven == [execution_arn(arn, "run-5")]
    assert client.started == []


def test_rewritten_failed_tasks_need_a_fresh_listing_not_a_redrive():
    client = _FailedExecution()
    arn = "arn:aws:states:us-east-1:123456789012:stateMachine:Fanout-x-Run"
    outcome = redrive_run(client, arn, "run-6", rewrote_tasks=True)
    assert outcome.action == "started" and client.started == ["run-6-redrive-1"]
    assert client.redriven == [] and "written again" in outcome.why


def test_the_cli_reads_the_machine_from_the_output_the_stack_writes():
    from stacks.fanout_stack import STATE_MACHINE_ARN_OUTPUT as STACK_OUTPUT

    assert STACK_OUTPUT == STATE_MACHINE_ARN_OUTPUT


def test_a_task_that_failed_for_good_is_not_run_again_by_a_retried_batch(deployment, monkeypatch):
    dep = deployment(with_queues=False, max_attempts=3)
    seed = _seed(dep, "s8")
    dep.sim.stop()  # every try fails transiently
    invoke("warriors", _batch([seed], retry_count=2), monkeypatch, dep)  # the last: recorded
    record = dep.storage.get(keys.failed_key(seed))
    # The same batch again (another task of it to retry, or a fresh execution's listing):
    # settled, so neither run (it would fail transiently and raise) nor re-recorded.
    assert invoke("warriors", _batch([seed], retry_count=0), monkeypatch, dep) is None
    assert dep.storage.get(keys.failed_key(seed)) == record
    assert not dep.storage.exists(keys.done_key(seed))
