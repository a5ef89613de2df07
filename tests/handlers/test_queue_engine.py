"""Engine ``queue`` on moto: real S3 -> SQS notification bodies into the real handlers,
and the status and redrive library (``fanout.queues``), for both engines' queues. Whole
runs under the deployed wiring, in both engines, are ``tests/cloud``'s."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
import task_keys

from fanout import queues
from fanout.redrive import redrive
from fanout_aws.retry_queue import retry_message
from fanout_core import keys
from fanout_core.bodies import manifest_body
from fanout_core.retry import Attempt
from fanout_core.stages import STAGES

from .conftest import BUCKET, REGION, Deployment, invoke
from .test_handlers import _rows, _truth

MAX_RECEIVES = 5


def _queue_arn(sqs: Any, url: str) -> str:
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


def _wire_queues(dep: Deployment, *, visibility_s: int = 1800) -> dict[str, queues.StageQueueUrls]:
    """The queue engine's wiring on moto: each stage queue with a DLQ, the bucket's
    notifications per stage prefix to its queue (as ``StageQueue.connect`` configures)."""
    urls = {}
    configs = []
    for stage in STAGES:
        url = dep.queues[stage.name]
        dlq = dep.sqs.create_queue(QueueName=f"fanout-{stage.name}-dlq")["QueueUrl"]
        dep.sqs.set_queue_attributes(
            QueueUrl=url,
            Attributes={
                "VisibilityTimeout": str(visibility_s),
                "RedrivePolicy": json.dumps(
                    {"deadLetterTargetArn": _queue_arn(dep.sqs, dlq), "maxReceiveCount": str(MAX_RECEIVES)}
                ),
            },
        )
        urls[stage.name] = queues.StageQueueUrls(stage.name, url, dlq)
        configs.append(
            {
                "QueueArn": _queue_arn(dep.sqs, url),
                "Events": ["s3:ObjectCreated:*"],
                "Filter": {
                    "Key": {
                        "FilterRules": [
                            {"Name": "prefix", "Value": stage.input_prefix},
                            {"Name": "suffix", "Value": ".json"},
                        ]
                    }
                },
            }
        )
    dep.s3.put_bucket_notification_configuration(
        Bucket=BUCKET, NotificationConfiguration={"QueueConfigurations": configs}
    )
    return urls


@pytest.fixture
def queue_deployment(deployment: Callable[..., Deployment]) -> Callable[..., tuple[Deployment, dict]]:
    def make(**settings: Any) -> tuple[Deployment, dict[str, queues.StageQueueUrls]]:
        dep = deployment(engine="queue", **settings)
        return dep, _wire_queues(dep)

    return make


def _receive(dep: Deployment, stage: str) -> list[dict[str, Any]]:
    return dep.sqs.receive_message(
        QueueUrl=dep.queues[stage], MaxNumberOfMessages=10, AttributeNames=["All"]
    ).get("Messages", [])


def _lambda_sqs_event(message: dict[str, Any], queue_arn: str) -> dict[str, Any]:
    """A received message as Lambda's event source mapping hands it to a function."""
    return {
        "Records": [
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": dict(message.get("Attributes", {})),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": REGION,
            }
        ]
    }


def _deliver(dep: Deployment, stage: str, message: dict[str, Any], monkeypatch: Any) -> Any:
    """What the event source mapping does with one message: invoke, then delete unless reported."""
    event = _lambda_sqs_event(message, _queue_arn(dep.sqs, dep.queues[stage]))
    result = invoke(stage, event, monkeypatch, dep)
    if not result["batchItemFailures"]:
        dep.sqs.delete_message(QueueUrl=dep.queues[stage], ReceiptHandle=message["ReceiptHandle"])
    return result


def _drain_queues(dep: Deployment, monkeypatch: Any) -> list[str]:
    """Deliver every message of every stage queue until all are empty; the bodies seen."""
    bodies = []
    while True:
        delivered = 0
        for stage in STAGES:
            for message in _receive(dep, stage.name):
                bodies.append(message["Body"])
                _deliver(dep, stage.name, message, monkeypatch)
                delivered += 1
        if not delivered:
            return bodies


# --- the handlers with real S3-in-SQS bodies ---------------------------------------


def test_configuring_notifications_sends_a_test_event_that_is_consumed(queue_deployment, monkeypatch):
    dep, _urls = queue_deployment()
    for stage in STAGES:
        (message,) = _receive(dep, stage.name)
        assert json.loads(message["Body"])["Event"] == "s3:TestEvent"
        assert _deliver(dep, stage.name, message, monkeypatch) == {"batchItemFailures": []}
    assert dep.objects() == []


def test_a_whole_run_through_real_notification_bodies_writes_exactly_the_truth(
    queue_deployment, monkeypatch, sim_config
):
    dep, _urls = queue_deployment()
    dep.storage.put(task_keys.manifest_key("q1"), manifest_body(None))
    bodies = _drain_queues(dep, monkeypatch)
    assert _rows(dep, "q1") == _truth(sim_config)
    notifications = [json.loads(b) for b in bodies if "Records" in json.loads(b)]
    # One notification per task object, each an S3 record as moto writes it (keys
    # URL-encoded, "/" as %2F), decoded by the same path as a direct S3 invocation.
    tasks = [k for s in STAGES for k in dep.objects(s.input_prefix)]
    assert len(notifications) == len(tasks)
    assert all(n["Records"][0]["eventSource"] == "aws:s3" for n in notifications)
    assert any("%2F" in n["Records"][0]["s3"]["object"]["key"] for n in notifications)
    assert all(dep.storage.exists(keys.done_key(k)) for k in tasks)
    for stage in STAGES:
        dlq = dep.sqs.get_queue_attributes(
            QueueUrl=_urls[stage.name].dlq_url, AttributeNames=["ApproximateNumberOfMessages"]
        )
        assert dlq["Attributes"]["ApproximateNumberOfMessages"] == "0"


def test_a_transient_failure_goes_back_onto_the_same_queue_with_its_delay(queue_deployment, monkeypatch):
    dep, _urls = queue_deployment(retry_base_delay_s=4, retry_max_delay_s=4)
    for stage in STAGES:
        for message in _receive(dep, stage.name):  # the test events
            dep.sqs.delete_message(QueueUrl=dep.queues[stage.name], ReceiptHandle=message["ReceiptHandle"])
    seed = task_keys.manifest_key("q2")
    dep.storage.put(seed, manifest_body(None))
    dep.sim.stop()  # connection refused: transient
    (message,) = _receive(dep, "warriors")
    assert _deliver(dep, "warriors", message, monkeypatch) == {"batchItemFailures": []}
    attrs = dep.sqs.get_queue_attributes(QueueUrl=dep.queues["warriors"], AttributeNames=["All"])[
        "Attributes"
    ]
    assert attrs["ApproximateNumberOfMessagesDelayed"] == "1"  # the retry, on the stage queue itself
    assert attrs["ApproximateNumberOfMessages"] == "0"
    assert not dep.storage.exists(keys.done_key(seed))


def test_a_failed_bookkeeping_reports_the_message_for_redelivery(queue_deployment, monkeypatch):
    dep, _urls = queue_deployment()
    for message in _receive(dep, "warriors"):
        dep.sqs.delete_message(QueueUrl=dep.queues["warriors"], ReceiptHandle=message["ReceiptHandle"])
    seed = task_keys.manifest_key("q3")
    dep.storage.put(seed, manifest_body(None))
    dep.sim.stop()
    (message,) = _receive(dep, "warriors")
    dep.sqs.delete_queue(QueueUrl=dep.queues["warriors"])  # the retry cannot be sent
    event = _lambda_sqs_event(message, "arn:aws:sqs:us-east-1:123456789012:gone")
    result = invoke("warriors", event, monkeypatch, dep)
    assert result == {"batchItemFailures": [{"itemIdentifier": message["MessageId"]}]}


# --- fanout.queues: status and redrive ---------------------------------------------


def _stack_with_queue_outputs(urls: dict[str, queues.StageQueueUrls]) -> Any:
    cfn = boto3.client("cloudformation", region_name=REGION)
    outputs = {}
    for stage in STAGES:
        u = urls[stage.name]
        outputs[queues.QUEUE_URL_OUTPUT.format(function_id=stage.function_id)] = {"Value": u.queue_url}
        outputs[queues.DLQ_URL_OUTPUT.format(function_id=stage.function_id)] = {"Value": u.dlq_url}
    template = {
        "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
        "Outputs": outputs,
    }
    cfn.create_stack(StackName="Fanout-q", TemplateBody=json.dumps(template))
    return cfn


def test_stage_queue_urls_come_from_the_stack_outputs(queue_deployment):
    _dep, urls = queue_deployment()
    cfn = _stack_with_queue_outputs(urls)
    assert queues.stage_queue_urls(cfn, "Fanout-q") == urls
    cfn.create_stack(
        StackName="Fanout-plain", TemplateBody=json.dumps({"Resources": {"T": {"Type": "AWS::SNS::Topic"}}})
    )
    with pytest.raises(queues.QueueEngineError, match="has no stage queues in its outputs"):
        queues.stage_queue_urls(cfn, "Fanout-plain")


def test_queue_status_counts_waiting_in_flight_delayed_and_dead(queue_deployment):
    dep, urls = queue_deployment()
    sqs = dep.sqs
    troops = urls["troops"]
    for message in _receive(dep, "troops"):  # the test event
        sqs.delete_message(QueueUrl=troops.queue_url, ReceiptHandle=message["ReceiptHandle"])
    for i in range(3):
        sqs.send_message(QueueUrl=troops.queue_url, MessageBody=f'{{"n": {i}}}')
    sqs.send_message(QueueUrl=troops.queue_url, MessageBody="{}", DelaySeconds=600)
    sqs.receive_message(QueueUrl=troops.queue_url, MaxNumberOfMessages=1)
    sqs.send_message(QueueUrl=troops.dlq_url, MessageBody="{}")
    cloudwatch = boto3.client("cloudwatch", region_name=REGION)
    now = datetime.now(UTC)
    cloudwatch.put_metric_data(
        Namespace="AWS/SQS",
        MetricData=[
            {
                "MetricName": "ApproximateAgeOfOldestMessage",
                "Dimensions": [{"Name": "QueueName", "Value": troops.queue_url.rsplit("/", 1)[-1]}],
                "Timestamp": now,
                "Value": 1234.0,
            }
        ],
    )
    asked_at = now + timedelta(seconds=30)
    depths = {d.stage: d for d in queues.queue_status(sqs, urls, cloudwatch=cloudwatch, now=asked_at)}
    assert list(depths) == list(STAGES.names)
    t = depths["troops"]
    assert (t.waiting, t.in_flight, t.delayed, t.dead_letters) == (2, 1, 1, 1)
    assert t.queued == 4
    assert t.oldest_age_s == 1234.0
    assert depths["data_groups"].oldest_age_s is None
    assert queues.queue_status(sqs, urls)[0].oldest_age_s is None  # no CloudWatch access: no age
    assert t.as_dict()["waiting"] == 2


def test_an_age_published_this_very_second_is_seen(queue_deployment):
    """CloudWatch's EndTime is exclusive and taken to the whole second: a window ending at
    now would miss a point published earlier in the same second (a flaky status test)."""
    _, urls = queue_deployment()
    cloudwatch = boto3.client("cloudwatch", region_name=REGION)
    published = datetime.now(UTC).replace(microsecond=500_000)
    name = urls["troops"].queue_url.rsplit("/", 1)[-1]
    cloudwatch.put_metric_data(
        Namespace="AWS/SQS",
        MetricData=[
            {
                "MetricName": "ApproximateAgeOfOldestMessage",
                "Dimensions": [{"Name": "QueueName", "Value": name}],
                "Timestamp": published,
                "Value": 77.0,
            }
        ],
    )
    asked_at = published + timedelta(milliseconds=200)
    assert queues.oldest_message_age_s(cloudwatch, urls["troops"].queue_url, now=asked_at) == 77.0


def test_send_tasks_runs_them_as_first_attempts(queue_deployment, monkeypatch):
    dep, urls = queue_deployment()
    _drain_queues(dep, monkeypatch)  # the test events
    seed = task_keys.manifest_key("q4")
    dep.storage.put(seed, manifest_body(None))
    for message in _receive(dep, "warriors"):  # lose the notification
        dep.sqs.delete_message(QueueUrl=dep.queues["warriors"], ReceiptHandle=message["ReceiptHandle"])
    result = queues.send_tasks(dep.sqs, urls, [seed, "nowhere/x.json"])
    assert result.sent == [seed]
    assert result.skipped == [("nowhere/x.json", "not a task key of any stage")]
    (message,) = _receive(dep, "warriors")
    assert json.loads(message["Body"])["fanout_retry"]["attempt"] == 1
    _deliver(dep, "warriors", message, monkeypatch)
    assert dep.storage.exists(keys.done_key(seed))


def test_redrive_by_writing_task_objects_works_unchanged_in_queue_mode(queue_deployment, monkeypatch):
    dep, _urls = queue_deployment(max_attempts=1)
    _drain_queues(dep, monkeypatch)
    seed = task_keys.manifest_key("q5")
    dep.storage.put(seed, manifest_body(None))
    dep.sim.stop()
    _drain_queues(dep, monkeypatch)  # one attempt: a failure record
    assert dep.storage.exists(keys.failed_key(seed))
    result = redrive(dep.storage, "q5")
    assert result.retriggered == [seed]
    # The task object written again is notified to the stage queue: nothing else to do.
    (message,) = _receive(dep, "warriors")
    assert json.loads(message["Body"])["Records"][0]["eventName"].startswith("ObjectCreated")


def test_send_stale_resends_pending_tasks_only_once_their_queue_is_empty(queue_deployment, monkeypatch):
    dep, urls = queue_deployment(retry_base_delay_s=0, retry_max_delay_s=0, max_attempts=1)
    _drain_queues(dep, monkeypatch)
    seed = task_keys.manifest_key("q6")
    dep.storage.put(seed, manifest_body(None))
    later = datetime.now(UTC).timestamp() + 10_000
    # Its notification still waits in the queue: not lost.
    assert queues.send_stale(dep.storage, dep.sqs, urls, "q6", _settings(dep), now=later).sent == []
    for message in _receive(dep, "warriors"):
        dep.sqs.delete_message(QueueUrl=dep.queues["warriors"], ReceiptHandle=message["ReceiptHandle"])
    # Queue empty, task pending past the retry window: lost, so sent again.
    assert queues.send_stale(dep.storage, dep.sqs, urls, "q6", _settings(dep), now=later).sent == [seed]
    assert queues.send_stale(dep.storage, dep.sqs, urls, "q6", _settings(dep)).sent == []  # too recent


def _settings(dep: Deployment) -> Any:
    import os

    from fanout_aws.config import ENV_SETTINGS
    from fanout_core.settings import environment_from_json

    return environment_from_json("test", os.environ[ENV_SETTINGS])


def test_redrive_dead_letters_moves_them_back(queue_deployment):
    dep, urls = queue_deployment()
    u = urls["data_groups"]
    for i in range(13):
        dep.sqs.send_message(QueueUrl=u.dlq_url, MessageBody=json.dumps({"n": i}))
    assert queues.redrive_dead_letters(dep.sqs, u, limit=3) == 3
    assert queues.redrive_dead_letters(dep.sqs, u) == 10
    depth = {d.stage: d for d in queues.queue_status(dep.sqs, urls)}["data_groups"]
    assert depth.dead_letters == 0
    assert depth.waiting == 13 + 1  # and the test event


def _s3_record(key: str) -> dict[str, Any]:
    from urllib.parse import quote_plus

    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": BUCKET}, "object": {"key": quote_plus(key), "size": 10}},
    }


def _notification(key: str) -> str:
    return json.dumps({"Records": [_s3_record(key)]})


def _retry(key: str) -> str:
    return retry_message(Attempt(key=key, number=2, first_attempt_at="2026-01-01T00:00:00Z"))


@pytest.mark.parametrize(
    ("body", "runs"),
    [
        (_notification(task_keys.troops_task_key("r-1", "w 1+=", 0)), {"r-1"}),
        (_retry(task_keys.manifest_key("seed.run")), {"seed.run"}),
        (_retry("elsewhere/x.json"), set()),
        ("not json", set()),
    ],
)
def test_runs_of_message_reads_the_run_of_the_task_a_dead_letter_names(body: str, runs: set[str]) -> None:
    assert queues.runs_of_message(body) == runs


# --- the same for engine s3_events: its retry queues and their dead-letter queues ------


def _s3_events_queues(dep: Deployment) -> dict[str, queues.StageQueueUrls]:
    """The ``s3_events`` wiring's queues on moto: each stage's retry queue (the
    Deployment's) with a dead-letter queue behind it, as ``StageFunction`` builds them."""
    urls = {}
    for stage in STAGES:
        retry = dep.queues[stage.name]
        dlq = dep.sqs.create_queue(QueueName=f"fanout-{stage.name}-failure-dlq")["QueueUrl"]
        target = _queue_arn(dep.sqs, dlq)
        redrive_policy = {"deadLetterTargetArn": target, "maxReceiveCount": str(MAX_RECEIVES)}
        dep.sqs.set_queue_attributes(QueueUrl=retry, Attributes={"RedrivePolicy": json.dumps(redrive_policy)})
        urls[stage.name] = queues.StageQueueUrls(stage.name, None, dlq, retry)
    return urls


def _s3_events_stack(urls: dict[str, queues.StageQueueUrls]) -> Any:
    """A CloudFormation stack whose outputs are an ``s3_events`` stack's: no stage queue."""
    cfn = boto3.client("cloudformation", region_name=REGION)
    outputs = {}
    for stage in STAGES:
        u = urls[stage.name]
        outputs[queues.RETRY_QUEUE_URL_OUTPUT.format(function_id=stage.function_id)] = {
            "Value": u.retry_queue_url
        }
        outputs[queues.DLQ_URL_OUTPUT.format(function_id=stage.function_id)] = {"Value": u.dlq_url}
    template = {"Resources": {"Topic": {"Type": "AWS::SNS::Topic"}}, "Outputs": outputs}
    cfn.create_stack(StackName="Fanout-s3", TemplateBody=json.dumps(template))
    return cfn


def test_stage_queue_urls_read_an_s3_events_stacks_retry_queues_and_dlqs(deployment):
    dep = deployment()
    urls = _s3_events_queues(dep)
    found = queues.stage_queue_urls(_s3_events_stack(urls), "Fanout-s3")
    assert found == urls
    assert {u.engine for u in found.values()} == {"s3_events"}
    assert found["troops"].consumed_from == dep.queues["troops"]


def test_queue_status_of_s3_events_counts_the_retry_queue_and_its_dead_letters(deployment):
    dep = deployment()
    urls = _s3_events_queues(dep)
    sqs, troops = dep.sqs, urls["troops"]
    for i in range(2):
        sqs.send_message(QueueUrl=troops.consumed_from, MessageBody=f'{{"n": {i}}}')
    sqs.send_message(QueueUrl=troops.consumed_from, MessageBody="{}", DelaySeconds=600)
    sqs.receive_message(QueueUrl=troops.consumed_from, MaxNumberOfMessages=1)
    sqs.send_message(QueueUrl=troops.dlq_url, MessageBody="{}")
    depths = {d.stage: d for d in queues.queue_status(sqs, urls)}
    t = depths["troops"]
    assert (t.waiting, t.in_flight, t.delayed, t.dead_letters) == (1, 1, 1, 1)
    assert (depths["warriors"].queued, depths["warriors"].dead_letters) == (0, 0)


def test_queue_status_of_engine_queue_adds_the_retry_queue_to_the_stage_queue(queue_deployment):
    dep, urls = queue_deployment()
    sqs, plain = dep.sqs, urls["data_groups"]
    retry = sqs.create_queue(QueueName="fanout-data_groups-retries")["QueueUrl"]
    u = queues.StageQueueUrls(plain.stage, plain.queue_url, plain.dlq_url, retry)
    sqs.send_message(QueueUrl=retry, MessageBody="{}", DelaySeconds=600)  # a retry in its backoff
    sqs.send_message(QueueUrl=retry, MessageBody="{}")
    (depth,) = queues.queue_status(sqs, {"data_groups": u})
    assert (depth.waiting, depth.delayed) == (1 + 1, 1)  # the retry and the stage queue's test event


def test_dead_letters_of_s3_events_go_back_to_the_retry_queue_and_are_run(deployment, monkeypatch):
    from fanout_aws.events import parse_event

    from .test_lambda_failures import on_failure_record

    dep = deployment()
    urls = _s3_events_queues(dep)
    seed = task_keys.manifest_key("s3dlq")
    dep.storage.put(seed, manifest_body(None))
    u = urls["warriors"]
    retry_body = retry_message(Attempt(key=seed, number=2, first_attempt_at="2026-01-01T00:00:00Z"))
    failure = json.dumps(on_failure_record({"Records": [_s3_record(seed)]}, condition="RetriesExhausted"))
    for body in (retry_body, failure):
        dep.sqs.send_message(QueueUrl=u.dlq_url, MessageBody=body)
    assert queues.redrive_dead_letters(dep.sqs, u) == 2
    moved = _receive(dep, "warriors")
    assert sorted(m["Body"] for m in moved) == sorted([retry_body, failure])
    assert queues.queue_status(dep.sqs, {"warriors": u})[0].dead_letters == 0
    # What the retry consumer's mapping hands its function: both decode as the seed's attempts.
    arn = _queue_arn(dep.sqs, u.consumed_from)
    for message in moved:
        decoded = parse_event(_lambda_sqs_event(message, arn))
        assert [a.key for a in decoded.attempts] == [seed] and not decoded.refusals
    (retry,) = [m for m in moved if m["Body"] == retry_body]
    assert invoke("warriors", _lambda_sqs_event(retry, arn), monkeypatch, dep)["batchItemFailures"] == []
    assert dep.storage.exists(keys.done_key(seed))
