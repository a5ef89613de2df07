"""``fanout status`` and ``fanout redrive`` on a bucket of engine ``stepfunctions`` (its
tag names ``dev-sfn``), against moto: the run's execution beside the bucket's counts, and
a redrive that says what it did; every AWS problem one line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from fanout.cli import main
from fanout.sfn_runs import STATE_MACHINE_ARN_OUTPUT
from fanout_core.bodies import manifest_body
from fanout_core.stages import STAGES

BUCKET = "fanout-dev-sfn-data"
RUN = "r1"


@pytest.fixture
def deployed(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        tags = [{"Key": "app", "Value": "fanout"}, {"Key": "environment", "Value": "dev-sfn"}]
        s3.put_bucket_tagging(Bucket=BUCKET, Tagging={"TagSet": tags})
        s3.put_object(Bucket=BUCKET, Key=STAGES.seed(RUN).key, Body=manifest_body(None))
        sfn = boto3.client("stepfunctions", region_name="us-east-1")
        machine = sfn.create_state_machine(
            name="Fanout-dev-sfn-Run",
            definition=json.dumps({"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}),
            roleArn="arn:aws:iam::123456789012:role/sfn",
        )["stateMachineArn"]
        yield {"s3": s3, "sfn": sfn, "machine": machine}


def _stack(machine: str) -> None:
    template = {
        "Resources": {"Placeholder": {"Type": "AWS::SQS::Queue"}},
        "Outputs": {STATE_MACHINE_ARN_OUTPUT: {"Value": machine}},
    }
    boto3.client("cloudformation", region_name="us-east-1").create_stack(
        StackName="Fanout-dev-sfn", TemplateBody=json.dumps(template)
    )


def _start(deployed: dict[str, Any]) -> str:
    sfn = deployed["sfn"]
    return str(sfn.start_execution(stateMachineArn=deployed["machine"], name=RUN, input="{}")["executionArn"])


def test_status_adds_the_runs_execution_from_the_stacks_machine(deployed, capsys) -> None:
    _stack(deployed["machine"])
    _start(deployed)
    main(["status", RUN, "--bucket", BUCKET])
    out = capsys.readouterr().out
    assert f"execution {RUN}: RUNNING" in out and "map run" in out


def test_status_json_carries_the_execution(deployed, capsys) -> None:
    _stack(deployed["machine"])
    _start(deployed)
    main(["status", RUN, "--bucket", BUCKET, "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert doc["execution"]["status"] == "RUNNING" and doc["execution"]["map_runs"] == {}
    assert doc["execution_note"] is None


def test_status_without_the_stack_says_so_in_one_line_and_still_counts(deployed, capsys) -> None:
    main(["status", RUN, "--bucket", BUCKET])
    out = capsys.readouterr().out
    (line,) = [x for x in out.splitlines() if "execution:" in x]
    assert "no AWS access to the run's execution in stack Fanout-dev-sfn" in line
    assert "warriors" in out  # the bucket's counts are there regardless


def test_redrive_while_the_execution_runs_is_refused_in_one_line(deployed, capsys) -> None:
    _stack(deployed["machine"])
    _start(deployed)
    code = main(["redrive", RUN, "--bucket", BUCKET])
    err = capsys.readouterr().err
    assert code == 2 and "still running" in err and "Traceback" not in err


def test_redrive_of_a_closed_execution_starts_a_fresh_one_and_says_which(deployed, capsys) -> None:
    _stack(deployed["machine"])
    deployed["sfn"].stop_execution(executionArn=_start(deployed))
    code = main(["redrive", RUN, "--bucket", BUCKET])
    out = capsys.readouterr().out
    assert code == 0
    assert (
        f"started execution {deployed['machine'].replace(':stateMachine:', ':execution:')}:{RUN}-redrive-1"
        in out
    )


@pytest.mark.parametrize("argv", [["status", RUN, "--queues"], ["redrive", RUN, "--from-dlq"]])
def test_the_queue_options_say_this_engine_has_none_in_one_line(deployed, capsys, argv) -> None:
    code = main([*argv, "--bucket", BUCKET])
    err = capsys.readouterr().err
    assert code == 2 and "engine stepfunctions has no stage queues" in err and "Traceback" not in err
