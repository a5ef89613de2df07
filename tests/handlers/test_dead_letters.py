"""The dead-letter recorder on moto: every message that reached a DLQ (an on-failure
record, a retry message, an S3 notification of engine queue) becomes its task's one
failure record, unless the task is done or already recorded."""

from __future__ import annotations

import json
from typing import Any

import pytest
import task_keys

from fanout_aws import config as env_names
from fanout_aws.s3_event import s3_event_for
from fanout_core import keys
from fanout_core.failures import FailureRecord
from fanout_core.settings import receives_before_dead_letter

from .conftest import BUCKET
from .test_lambda_failures import on_failure_record, sqs_event

KEY = task_keys.troops_task_key("dlq", "w 1+", 0)
MAX_ATTEMPTS = 4
"""The recorder's; every queue feeding a stage moves a message to its DLQ after 5 receives."""


def _recorder(monkeypatch: pytest.MonkeyPatch) -> Any:
    import importlib

    from fanout_aws.handlers import dead_letters

    monkeypatch.setenv(env_names.ENV_NAME, "test")
    monkeypatch.setenv(env_names.ENV_BUCKET, BUCKET)
    monkeypatch.setenv(env_names.ENV_MAX_ATTEMPTS, str(MAX_ATTEMPTS))
    return importlib.reload(dead_letters).handler


def _record(dep: Any) -> FailureRecord:
    return FailureRecord.from_bytes(dep.storage.get(keys.failed_key(KEY)))


RETRY = {"fanout_retry": {"task_key": KEY, "attempt": 3, "first_attempt_at": "2026-11-27T08:00:00.000Z"}}


@pytest.mark.parametrize(
    ("body", "condition", "kind", "attempts"),
    [
        (RETRY, "DeadLetterQueue", "crashed", MAX_ATTEMPTS),
        (s3_event_for(BUCKET, [KEY]), "DeadLetterQueue", "crashed", MAX_ATTEMPTS),
        (
            on_failure_record(
                s3_event_for(BUCKET, [KEY]),
                response={
                    "errorType": "Sandbox.Timedout",
                    "errorMessage": "Task timed out after 300.00 seconds",
                },
            ),
            "RetriesExhausted",
            "crashed",
            3,
        ),
        (
            on_failure_record(
                s3_event_for(BUCKET, [KEY]),
                response={"errorType": "SettingsError", "errorMessage": "missing environment variable(s)"},
            ),
            "RetriesExhausted",
            "configuration",
            3,
        ),
    ],
    ids=["retry-message", "s3-notification", "on-failure-timeout", "on-failure-settings"],
)
def test_a_dead_letter_becomes_the_tasks_failure_record(
    deployment, monkeypatch, body, condition, kind, attempts
):
    dep = deployment()
    result = _recorder(monkeypatch)(sqs_event(body, receive_count=11), None)
    assert result == {"batchItemFailures": []}
    record = _record(dep)
    assert (record.condition, record.error_kind, record.attempts) == (condition, kind, attempts)
    assert record.stage == "troops" and record.run_id == "dlq" and record.task_key == KEY
    assert record.transient is False
    assert "dead-letter queue" in record.message


def test_a_dead_letter_of_a_finished_task_writes_nothing(deployment, monkeypatch):
    dep = deployment()
    dep.storage.put(keys.done_key(KEY), b"{}")
    _recorder(monkeypatch)(sqs_event(RETRY), None)
    assert not dep.storage.exists(keys.failed_key(KEY))


def test_a_dead_letter_never_replaces_an_existing_record(deployment, monkeypatch):
    dep = deployment()
    dep.storage.put(keys.failed_key(KEY), b'{"sentinel": 1}')
    _recorder(monkeypatch)(sqs_event(RETRY), None)
    assert dep.storage.get(keys.failed_key(KEY)) == b'{"sentinel": 1}'


def test_a_dead_letter_delivered_twice_is_recorded_once(deployment, monkeypatch):
    dep = deployment()
    handler = _recorder(monkeypatch)
    handler(sqs_event(RETRY), None)
    first = dep.storage.get(keys.failed_key(KEY))
    handler(sqs_event(RETRY), None)
    assert dep.storage.get(keys.failed_key(KEY)) == first


def test_a_dead_letter_of_another_bucket_is_dropped(deployment, monkeypatch):
    dep = deployment()
    _recorder(monkeypatch)(sqs_event(s3_event_for("someone-elses-bucket", [KEY])), None)
    assert dep.objects("failed/") == []


def test_the_recorder_counts_failure_records_per_stage(deployment, monkeypatch, capsys):
    deployment()
    _recorder(monkeypatch)(sqs_event(RETRY), None)
    (doc,) = [json.loads(x) for x in capsys.readouterr().out.splitlines() if '"_aws"' in x]
    assert (doc["Environment"], doc["Stage"], doc["Failures"]) == ("test", "troops", 1.0)


def test_a_record_the_recorder_cannot_write_is_left_in_the_queue(deployment, monkeypatch):
    dep = deployment()
    dep.s3.delete_bucket(Bucket=BUCKET)
    result = _recorder(monkeypatch)(sqs_event(RETRY, message_id="m-9"), None)
    assert result == {"batchItemFailures": [{"itemIdentifier": "m-9"}]}


def _dead_letter_of(dep: Any, body: dict[str, Any]) -> dict[str, Any]:
    """``body`` sent to a moto queue whose redrive policy is the stack's (maxReceiveCount
    ``max_attempts`` + 1), received that many times without a delete (each delivery
    died), then received from its DLQ as the recorder's mapping would: the Lambda event
    carries the DLQ's own ApproximateReceiveCount."""
    dlq = dep.sqs.create_queue(QueueName="fanout-troops-dlq")["QueueUrl"]
    arn = dep.sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    policy = {"deadLetterTargetArn": arn, "maxReceiveCount": str(receives_before_dead_letter(MAX_ATTEMPTS))}
    source = dep.sqs.create_queue(QueueName="fanout-troops", Attributes={"RedrivePolicy": json.dumps(policy)})
    dep.sqs.send_message(QueueUrl=source["QueueUrl"], MessageBody=json.dumps(body))
    receives = 0
    while dep.sqs.receive_message(QueueUrl=source["QueueUrl"], VisibilityTimeout=0).get("Messages"):
        receives += 1
    assert receives == receives_before_dead_letter(MAX_ATTEMPTS)  # then SQS moved it
    (message,) = dep.sqs.receive_message(QueueUrl=dlq, MessageSystemAttributeNames=["All"])["Messages"]
    record = {
        "eventSource": "aws:sqs",
        "messageId": message["MessageId"],
        "body": message["Body"],
        "attributes": message["Attributes"],
    }
    return {"Records": [record]}


CRASH_REPORT = on_failure_record(
    s3_event_for(BUCKET, [KEY]),
    response={"errorType": "Runtime.ExitError", "errorMessage": "exit status 137"},
)


@pytest.mark.parametrize(
    ("body", "attempts", "invoke_count"),
    [
        (s3_event_for(BUCKET, [KEY]), MAX_ATTEMPTS, MAX_ATTEMPTS + 1),
        (RETRY, MAX_ATTEMPTS, MAX_ATTEMPTS + 1),
        (CRASH_REPORT, 3, 3),
    ],
    ids=["s3-notification", "retry-message", "on-failure-crash"],
)
def test_a_dead_letters_record_counts_the_attempts_its_receives_ran_not_the_dlqs_receive_count(
    deployment, monkeypatch, body, attempts, invoke_count
):
    """Engine queue's S3 notification and a retry message ran on each receive up to
    max_attempts (the one past it could not record): max_attempts attempts, max_attempts +
    1 invocations. A Lambda crash report was only ever recorded, never run: Lambda's 3
    tries. Neither the recorder's own receive nor the receive count moto carries into the
    DLQ (as real SQS does) adds to them."""
    dep = deployment()
    event = _dead_letter_of(dep, body)
    assert int(event["Records"][0]["attributes"]["ApproximateReceiveCount"]) > MAX_ATTEMPTS + 1
    assert _recorder(monkeypatch)(event, None) == {"batchItemFailures": []}
    record = _record(dep)
    assert (record.attempts, record.approximate_invoke_count) == (attempts, invoke_count)
    assert "dead-letter queue" in record.message


def test_a_recorder_without_a_valid_max_attempts_refuses_to_start(monkeypatch):
    from fanout_aws.config import RecorderConfig
    from fanout_core.errors import SettingsError

    environ = {env_names.ENV_NAME: "test", env_names.ENV_BUCKET: BUCKET, env_names.ENV_MAX_ATTEMPTS: "0"}
    with pytest.raises(SettingsError, match=env_names.ENV_MAX_ATTEMPTS):
        RecorderConfig.from_environ(environ)
    with pytest.raises(SettingsError, match="missing"):
        RecorderConfig.from_environ({env_names.ENV_NAME: "test", env_names.ENV_BUCKET: BUCKET})


# -- a dead letter whose counts cannot be read still ends in the task's record ----------


def _on_failure_counting(invoke_count: Any) -> dict[str, Any]:
    body = on_failure_record(
        s3_event_for(BUCKET, [KEY]), response={"errorType": "Runtime.ExitError", "errorMessage": "exit 1"}
    )
    if invoke_count is None:
        del body["requestContext"]["approximateInvokeCount"]
    else:
        body["requestContext"]["approximateInvokeCount"] = invoke_count
    return body


def _retry_of(**fields: Any) -> dict[str, Any]:
    body = {"task_key": KEY, "attempt": 3, "first_attempt_at": "2026-11-27T08:00:00.000Z", **fields}
    return {"fanout_retry": {k: v for k, v in body.items() if v is not None}}


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (_on_failure_counting("2"), "crashed"),
        (_on_failure_counting(None), "crashed"),
        (_on_failure_counting(10**30), "crashed"),
        (_retry_of(attempt=0), "bad_task"),
        (_retry_of(first_attempt_at=None), "bad_task"),
        (_retry_of(attempt=10**30), "bad_task"),
    ],
    ids=["invoke-count-string", "invoke-count-missing", "invoke-count-huge", "attempt-0", "no-first", "huge"],
)
def test_a_malformed_dead_letter_of_a_task_becomes_its_failure_record_with_clamped_counts(
    deployment, monkeypatch, body, kind
):
    dep = deployment()
    result = _recorder(monkeypatch)(sqs_event(body, receive_count=11), None)
    assert result == {"batchItemFailures": []}
    record = _record(dep)
    assert (record.error_kind, record.task_key, record.run_id) == (kind, KEY, "dlq")
    assert 1 <= record.attempts <= MAX_ATTEMPTS
    assert record.approximate_invoke_count == receives_before_dead_letter(MAX_ATTEMPTS)
    assert "dead-letter queue" in record.message and len(record.message) <= 1100


@pytest.mark.parametrize(
    "key",
    [
        "amazon_warriors/sub/x.json",
        "amazon_warriors/run=bad id/part-00000.json",
        "troops/" + "w" * 2000 + ".json",
    ],
    ids=["sub-folder", "bad-run-id", "too-long"],
)
def test_a_dead_letter_naming_no_task_writes_nothing(deployment, monkeypatch, key):
    dep = deployment()
    handler = _recorder(monkeypatch)
    for body in (_retry_of(task_key=key), _retry_of(task_key=key, attempt=0)):
        assert handler(sqs_event(body), None) == {"batchItemFailures": []}
    assert dep.objects("failed/") == []
