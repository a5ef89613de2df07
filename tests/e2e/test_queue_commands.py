"""``fanout status --queues`` and ``fanout redrive --from-dlq`` through the real CLI, against
a moto server standing in for a deployed stack of either engine: its bucket (tagged with its
environment), its queues (engine ``queue``: stage queues; both: retry queues) and dead-letter
queues, and a CloudFormation stack whose outputs name them as ``stacks.fanout_stack`` does."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
import task_keys
from moto.server import ThreadedMotoServer

from fanout import aws_clients, queues
from fanout_aws.retry_queue import retry_message
from fanout_core.retry import Attempt
from fanout_core.stages import STAGES
from tests.core.raw_http import Conn, Request, raw_server

from .conftest import fanout_cli
from .doc_blocks import schemas, violations

BUCKET = "fanout-queue-stack"
ENV = "dev-queue"
RUN, OTHER = "qrun", "other"
CREDS = {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass
class Stack:
    endpoint: str
    clients: dict[str, Any]
    urls: dict[str, queues.StageQueueUrls]

    def flags(self) -> list[str]:
        """What a user gives: the bucket, and where S3 and the rest of AWS answer."""
        return ["--bucket", BUCKET, "--s3-endpoint-url", self.endpoint, "--aws-endpoint-url", self.endpoint]


def _cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = fanout_cli(*args, env={**CREDS, **(env or {})})
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


@pytest.fixture(scope="module")
def aws() -> Iterator[tuple[str, dict[str, Any]]]:
    """A moto server with the deployed bucket (tagged with its environment, two runs seeded)
    and an ``s3_events`` stack, which has no queue outputs."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        clients = {
            name: boto3.client(
                name,
                endpoint_url=endpoint,
                region_name="us-east-1",
                aws_access_key_id="x",
                aws_secret_access_key="x",
            )
            for name in ("s3", "sqs", "cloudformation", "cloudwatch")
        }
        s3 = clients["s3"]
        s3.create_bucket(Bucket=BUCKET)
        s3.put_bucket_tagging(
            Bucket=BUCKET,
            Tagging={"TagSet": [{"Key": "app", "Value": "fanout"}, {"Key": "environment", "Value": ENV}]},
        )
        for run in (RUN, OTHER):
            s3.put_object(Bucket=BUCKET, Key=task_keys.manifest_key(run), Body=b'{"warriors": "all"}')
        clients["cloudformation"].create_stack(StackName="Fanout-dev", TemplateBody=json.dumps(TOPIC))
        yield endpoint, clients
    finally:
        server.stop()


TOPIC = {"Resources": {"Topic": {"Type": "AWS::SNS::Topic"}}}
_made = itertools.count()


@pytest.fixture
def stack(aws: tuple[str, dict[str, Any]]) -> Stack:
    """The environment's ``queue``-engine stack with empty queues of its own (SQS allows one
    purge a minute, so each test gets new ones): outputs named as ``queue_engine`` names them."""
    endpoint, clients = aws
    n = next(_made)
    urls, outputs = {}, {}
    for stage in STAGES:
        queue = clients["sqs"].create_queue(QueueName=f"{stage.function_id}-q{n}")["QueueUrl"]
        dlq = clients["sqs"].create_queue(QueueName=f"{stage.function_id}-dlq{n}")["QueueUrl"]
        urls[stage.name] = queues.StageQueueUrls(stage.name, queue, dlq)
        outputs[queues.QUEUE_URL_OUTPUT.format(function_id=stage.function_id)] = {"Value": queue}
        outputs[queues.DLQ_URL_OUTPUT.format(function_id=stage.function_id)] = {"Value": dlq}
    cfn, name = clients["cloudformation"], queues.STACK_NAME.format(env=ENV)
    cfn.delete_stack(StackName=name)
    cfn.create_stack(StackName=name, TemplateBody=json.dumps({**TOPIC, "Outputs": outputs}))
    return Stack(endpoint, clients, urls)


def _dead_letter(key: str) -> str:
    return retry_message(Attempt(key=key, number=1, first_attempt_at="2026-01-01T00:00:00Z"))


def _fill(stack: Stack) -> None:
    """troops: 2 waiting, 1 delayed, its oldest message 1234 s old; data_groups: 1 dead letter."""
    sqs, troops = stack.clients["sqs"], stack.urls["troops"]
    for i in range(2):
        sqs.send_message(QueueUrl=troops.queue_url, MessageBody=json.dumps({"n": i}))
    sqs.send_message(QueueUrl=troops.queue_url, MessageBody="{}", DelaySeconds=600)
    sqs.send_message(
        QueueUrl=stack.urls["data_groups"].dlq_url,
        MessageBody=_dead_letter(task_keys.data_groups_task_key(RUN, "w 1", "t+1", 0)),
    )
    stack.clients["cloudwatch"].put_metric_data(
        Namespace="AWS/SQS",
        MetricData=[
            {
                "MetricName": "ApproximateAgeOfOldestMessage",
                "Dimensions": [{"Name": "QueueName", "Value": troops.queue_url.rsplit("/", 1)[-1]}],
                "Timestamp": datetime.now(UTC),
                "Value": 1234.0,
            }
        ],
    )


def test_status_queues_prints_each_stage_queues_depth_and_oldest_age(stack: Stack) -> None:
    _fill(stack)
    code, out, err = _cli("status", RUN, *stack.flags(), "--queues")
    assert code == 3, err  # the run's seed is pending: not complete
    assert f"queues of stack Fanout-{ENV}" in out
    rows = {
        line.split()[0]: line.split()[1:]
        for line in out.splitlines()
        if line.startswith("  ") and line.split()
    }
    assert rows["troops"] == ["2", "0", "1", "0", "1234", "s"]
    assert rows["data_groups"] == ["0", "0", "0", "1", "-"]


def test_status_queues_json_keeps_to_its_documented_shape(stack: Stack) -> None:
    _fill(stack)
    code, out, err = _cli("status", RUN, *stack.flags(), "--queues", "--json")
    assert code == 3, err
    doc = json.loads(out)
    shapes = schemas()
    assert violations(doc, shapes["status_queues"], shapes) == []
    assert doc["stack"] == f"Fanout-{ENV}"
    assert doc["queues"]["troops"] == {
        "waiting": 2,
        "in_flight": 0,
        "delayed": 1,
        "dead_letters": 0,
        "oldest_age_s": 1234.0,
    }
    assert doc["queues"]["data_groups"]["dead_letters"] == 1


@pytest.mark.parametrize(
    ("extra", "env", "says"),
    [
        (
            ["--env", ENV, "--stack-name", "Fanout-nowhere"],
            {},
            "no AWS access to stack Fanout-nowhere (ValidationError",
        ),
        (["--env", "dev"], {}, "stack Fanout-dev has no stage queues"),
        (
            ["--env", ENV, "--aws-endpoint-url", "http://127.0.0.1:9"],
            {"AWS_MAX_ATTEMPTS": "1"},
            "no AWS access to stack",
        ),
    ],
)
def test_without_access_to_the_stage_queues_status_says_so_in_one_line(
    stack: Stack, extra: list[str], env: dict[str, str], says: str
) -> None:
    code, out, err = _cli("status", RUN, *stack.flags(), "--queues", *extra, env=env)
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and says in err
    assert "Traceback" not in err


def test_redrive_from_dlq_moves_the_runs_dead_letters_back_and_leaves_other_runs(stack: Stack) -> None:
    sqs, u = stack.clients["sqs"], stack.urls["troops"]
    mine = [_dead_letter(task_keys.troops_task_key(RUN, f"w{i}", 0)) for i in range(12)]
    theirs = _dead_letter(task_keys.troops_task_key(OTHER, "w0", 0))
    for body in [*mine, theirs]:
        sqs.send_message(QueueUrl=u.dlq_url, MessageBody=body)
    code, out, err = _cli("redrive", RUN, *stack.flags(), "--from-dlq")
    assert code == 0, err
    assert "12 message(s) moved back" in out
    moved = _drain(sqs, u.queue_url)
    assert sorted(moved) == sorted(mine)
    assert _drain(sqs, u.dlq_url) == [theirs]


def test_redrive_from_dlq_with_nothing_of_the_run_exits_1(stack: Stack) -> None:
    u = stack.urls["data_groups"]
    stack.clients["sqs"].send_message(
        QueueUrl=u.dlq_url, MessageBody=_dead_letter(task_keys.data_groups_task_key(RUN, "w", "t", 0))
    )
    code, _out, err = _cli("redrive", RUN, *stack.flags(), "--from-dlq", "--stage", "troops")
    assert code == 1
    assert f"no dead letter of run {RUN}" in err
    assert len(_drain(stack.clients["sqs"], u.dlq_url)) == 1  # another stage's: untouched


def test_redrive_from_dlq_json_keeps_to_its_documented_shape(stack: Stack) -> None:
    u = stack.urls["warriors"]
    stack.clients["sqs"].send_message(
        QueueUrl=u.dlq_url, MessageBody=_dead_letter(task_keys.manifest_key(RUN))
    )
    code, out, err = _cli("redrive", RUN, *stack.flags(), "--from-dlq", "--json")
    assert code == 0, err
    doc = json.loads(out)
    shapes = schemas()
    assert violations(doc, shapes["redrive_dead_letters"], shapes) == []
    assert doc["moved"] == {"warriors": 1, "troops": 0, "data_groups": 0}


def _drain(sqs: Any, url: str) -> list[str]:
    """Every body in a queue (bounded: the test queues hold a few dozen at most)."""
    bodies: list[str] = []
    for _ in range(20):
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=300).get(
            "Messages", []
        )
        if not got:
            break
        bodies += [m["Body"] for m in got]
    return bodies


@pytest.mark.parametrize("extra", [["--stale"], ["--error-class", "not_found"]])
def test_redrive_from_dlq_refuses_what_only_a_rewrite_of_objects_means(
    stack: Stack, extra: list[str]
) -> None:
    stack.clients["sqs"].send_message(
        QueueUrl=stack.urls["troops"].dlq_url,
        MessageBody=_dead_letter(task_keys.troops_task_key(RUN, "w", 0)),
    )
    code, _out, err = _cli("redrive", RUN, *stack.flags(), "--from-dlq", *extra)
    assert code == 2
    assert f"it takes no {extra[0]}" in err
    assert len(_drain(stack.clients["sqs"], stack.urls["troops"].dlq_url)) == 1  # nothing moved


# --- engine s3_events: the retry queues and their dead-letter queues -----------------

S3_EVENTS_STACK = "Fanout-s3-events"


@pytest.fixture
def s3_stack(aws: tuple[str, dict[str, Any]]) -> Stack:
    """An ``s3_events`` stack: per stage a retry queue and its DLQ in the outputs, no stage queue."""
    endpoint, clients = aws
    n = next(_made)
    urls, outputs = {}, {}
    for stage in STAGES:
        retry = clients["sqs"].create_queue(QueueName=f"{stage.function_id}-retry{n}")["QueueUrl"]
        dlq = clients["sqs"].create_queue(QueueName=f"{stage.function_id}-fdlq{n}")["QueueUrl"]
        urls[stage.name] = queues.StageQueueUrls(stage.name, None, dlq, retry)
        outputs[queues.RETRY_QUEUE_URL_OUTPUT.format(function_id=stage.function_id)] = {"Value": retry}
        outputs[queues.DLQ_URL_OUTPUT.format(function_id=stage.function_id)] = {"Value": dlq}
    cfn = clients["cloudformation"]
    cfn.delete_stack(StackName=S3_EVENTS_STACK)
    cfn.create_stack(StackName=S3_EVENTS_STACK, TemplateBody=json.dumps({**TOPIC, "Outputs": outputs}))
    return Stack(endpoint, clients, urls)


def _s3_flags(stack: Stack) -> list[str]:
    return [*stack.flags(), "--env", "dev", "--stack-name", S3_EVENTS_STACK]


def test_status_queues_of_s3_events_prints_each_retry_queues_depth_and_dead_letters(s3_stack: Stack) -> None:
    sqs, troops = s3_stack.clients["sqs"], s3_stack.urls["troops"]
    retry = troops.consumed_from
    sqs.send_message(QueueUrl=retry, MessageBody="{}")
    sqs.send_message(QueueUrl=retry, MessageBody="{}", DelaySeconds=600)  # a retry in its backoff
    sqs.send_message(
        QueueUrl=s3_stack.urls["data_groups"].dlq_url,
        MessageBody=_dead_letter(task_keys.data_groups_task_key(RUN, "w 1", "t+1", 0)),
    )
    s3_stack.clients["cloudwatch"].put_metric_data(
        Namespace="AWS/SQS",
        MetricData=[
            {
                "MetricName": "ApproximateAgeOfOldestMessage",
                "Dimensions": [{"Name": "QueueName", "Value": retry.rsplit("/", 1)[-1]}],
                "Timestamp": datetime.now(UTC),
                "Value": 77.0,
            }
        ],
    )
    code, out, err = _cli("status", RUN, *_s3_flags(s3_stack), "--queues")
    assert code == 3, err
    assert f"queues of stack {S3_EVENTS_STACK} (all runs; retry queues, dead-letter queues)" in out
    rows = {
        line.split()[0]: line.split()[1:]
        for line in out.splitlines()
        if line.startswith("  ") and line.split()
    }
    assert rows["troops"] == ["1", "0", "1", "0", "77", "s"]
    assert rows["data_groups"] == ["0", "0", "0", "1", "-"]
    code, out, err = _cli("status", RUN, *_s3_flags(s3_stack), "--queues", "--json")
    doc = json.loads(out)
    shapes = schemas()
    assert violations(doc, shapes["status_queues"], shapes) == []
    assert doc["queues"]["troops"] == {
        "waiting": 1,
        "in_flight": 0,
        "delayed": 1,
        "dead_letters": 0,
        "oldest_age_s": 77.0,
    }


def test_redrive_from_dlq_of_s3_events_moves_the_runs_dead_letters_to_the_retry_queue(
    s3_stack: Stack,
) -> None:
    sqs, u = s3_stack.clients["sqs"], s3_stack.urls["troops"]
    mine = [_dead_letter(task_keys.troops_task_key(RUN, f"w{i}", 0)) for i in range(3)]
    theirs = _dead_letter(task_keys.troops_task_key(OTHER, "w0", 0))
    for body in [*mine, theirs]:
        sqs.send_message(QueueUrl=u.dlq_url, MessageBody=body)
    code, out, err = _cli("redrive", RUN, *_s3_flags(s3_stack), "--from-dlq", "--json")
    assert code == 0, err
    assert json.loads(out)["moved"] == {"warriors": 0, "troops": 3, "data_groups": 0}
    assert sorted(_drain(sqs, u.consumed_from)) == sorted(mine)
    assert _drain(sqs, u.dlq_url) == [theirs]


# -- an AWS endpoint that misbehaves: bounded, one line, exit 2 ("no AWS access") ---------


def _not_aws(_request: Request, conn: Conn) -> None:
    conn.reply(200, b"<html>hello, this is not AWS</html>" * 100)


def _silent(_request: Request, _conn: Conn) -> None:
    """Takes the request and never answers (the connection stays open)."""


@pytest.mark.parametrize(
    "command", [["status", RUN, "--queues"], ["redrive", RUN, "--from-dlq"]], ids=["status", "redrive"]
)
def test_an_endpoint_answering_200_with_no_aws_body_is_one_line_exit_2(stack: Stack, command) -> None:
    with raw_server(_not_aws) as garbage:
        code, out, err = _cli(*command, *_flags_with_aws_at(stack, garbage.url))
    assert code == 2, err
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert "answered with something that is not an AWS response" in err
    assert "Traceback" not in err


def test_an_endpoint_that_never_answers_ends_within_the_clients_bounds(stack: Stack) -> None:
    with raw_server(_silent) as silent:
        # Before the bounds: still running at 150 s; _cli's 120 s catches a hang.
        code, _out, err = _cli("status", RUN, "--queues", *_flags_with_aws_at(stack, silent.url))
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert f"no answer from the endpoint within {aws_clients.READ_TIMEOUT_S} s" in err
    assert "Traceback" not in err


def _flags_with_aws_at(stack: Stack, aws_url: str) -> list[str]:
    """The bucket where it is; CloudFormation, SQS and CloudWatch at ``aws_url``."""
    return [
        "--bucket",
        BUCKET,
        "--env",
        ENV,
        "--s3-endpoint-url",
        stack.endpoint,
        "--aws-endpoint-url",
        aws_url,
    ]


def _not_xml(_request: Request, conn: Conn) -> None:
    conn.reply(200, b"hello {")


@pytest.mark.parametrize("command", [["runs"], ["status", RUN, "--env", ENV]], ids=["runs", "status"])
def test_an_s3_endpoint_answering_garbage_is_one_line_exit_2(command) -> None:
    with raw_server(_not_xml) as garbage:
        code, out, err = _cli(*command, "--bucket", BUCKET, "--s3-endpoint-url", garbage.url)
    assert code == 2, err
    assert out == "" and "Traceback" not in err
    [line] = err.strip().splitlines()
    assert f"cannot read the bucket s3://{BUCKET}/" in line
