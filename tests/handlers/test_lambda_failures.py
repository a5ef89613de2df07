"""Whatever killed a task, it ends in exactly one failure record: Lambda's on-failure
destination records (crash, timeout, out of memory, a cold-start error) and
configuration errors at cold start (secret missing, empty or unreadable, a Hermes host
that does not resolve) are recorded at once, with what Lambda reported, and never sent
round the retry queue."""

from __future__ import annotations

import json
import socket
from typing import Any

import boto3
import pytest
import task_keys

from fanout_aws import config as env_names
from fanout_aws.s3_event import s3_event_for
from fanout_aws.secrets import read_secret
from fanout_core import keys
from fanout_core.bodies import manifest_body
from fanout_core.errors import SettingsError
from fanout_core.failures import FailureRecord

from .conftest import BUCKET, REGION, invoke

REQUEST_ID = "e4b46cbf-b738-4e3a-8880-a18cdf61200e"


def on_failure_record(
    payload: dict[str, Any],
    *,
    condition: str = "RetriesExhausted",
    invoke_count: int = 3,
    response: dict[str, Any] | None = None,
    function_error: str | None = "Unhandled",
) -> dict[str, Any]:
    """An on-failure destination record, shaped as Lambda sends it to an SQS queue."""
    record: dict[str, Any] = {
        "version": "1.0",
        "timestamp": "2026-11-27T08:00:00.000Z",
        "requestContext": {
            "requestId": REQUEST_ID,
            "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:fanout-troops:$LATEST",
            "condition": condition,
            "approximateInvokeCount": invoke_count,
        },
        "requestPayload": payload,
    }
    if function_error is not None:
        record["responseContext"] = {
            "statusCode": 200,
            "executedVersion": "$LATEST",
            "functionError": function_error,
        }
        record["responsePayload"] = response or {}
    return record


def sqs_event(body: dict[str, Any], message_id: str = "m-1", receive_count: int = 1) -> dict[str, Any]:
    return {
        "Records": [
            {
                "eventSource": "aws:sqs",
                "messageId": message_id,
                "body": json.dumps(body),
                "attributes": {"ApproximateReceiveCount": str(receive_count)},
            }
        ]
    }


def _seed(dep: Any, run_id: str) -> str:
    key = task_keys.manifest_key(run_id)
    dep.storage.put(key, manifest_body(None))
    return key


def _record(dep: Any, key: str) -> FailureRecord:
    return FailureRecord.from_bytes(dep.storage.get(keys.failed_key(key)))


def _retry_messages(dep: Any, stage: str) -> list[Any]:
    got = dep.sqs.receive_message(QueueUrl=dep.queues[stage], MaxNumberOfMessages=10)
    return got.get("Messages", [])


CRASHES = [
    (
        "process-exit",
        {
            "errorType": "Runtime.ExitError",
            "errorMessage": f"RequestId: {REQUEST_ID} Error: Runtime exited with error: signal: killed",
        },
        "crashed",
    ),
    (
        "timeout",
        {
            "errorType": "Sandbox.Timedout",
            "errorMessage": f"RequestId: {REQUEST_ID} Task timed out after 600.00 seconds",
        },
        "crashed",
    ),
    (
        "out-of-memory",
        {"errorType": "Runtime.OutOfMemory", "errorMessage": "Runtime exited with error: signal: killed"},
        "crashed",
    ),
    (
        "died-silently",
        {"errorMessage": f"RequestId: {REQUEST_ID} Process exited before completing request"},
        "crashed",
    ),
    (
        "cold-start-settings",
        {"errorType": "SettingsError", "errorMessage": "missing environment variable(s): FANOUT_BUCKET"},
        "configuration",
    ),
    (
        "import-error",
        {
            "errorType": "Runtime.ImportModuleError",
            "errorMessage": "Unable to import module 'x': No module named 'y'",
        },
        "configuration",
    ),
]


@pytest.mark.parametrize(
    ("response", "kind"), [(r, k) for _, r, k in CRASHES], ids=[i for i, _, _ in CRASHES]
)
def test_an_on_failure_record_of_a_crash_becomes_one_failure_record_with_lambdas_report(
    deployment, monkeypatch, response, kind
):
    dep = deployment()
    seed = _seed(dep, "crash")
    event = sqs_event(on_failure_record(s3_event_for(BUCKET, [seed]), response=response))
    assert invoke("warriors", event, monkeypatch, dep) == {"batchItemFailures": []}
    record = _record(dep, seed)
    assert record.error_kind == kind
    assert record.condition == "RetriesExhausted"
    assert record.approximate_invoke_count == 3
    assert record.attempts == 3
    assert record.error_type == response.get("errorType")
    assert record.error_message == response["errorMessage"]
    assert record.transient is False
    assert record.run_id == "crash" and record.stage == "warriors"
    assert _retry_messages(dep, "warriors") == []  # not sent round again
    assert dep.objects("amazon_warriors/run=") == []  # the task was not run again


def test_an_on_failure_record_for_a_task_already_done_writes_nothing(deployment, monkeypatch):
    dep = deployment()
    seed = _seed(dep, "done-first")
    dep.storage.put(keys.done_key(seed), b"{}")
    event = sqs_event(
        on_failure_record(s3_event_for(BUCKET, [seed]), response={"errorType": "Sandbox.Timedout"})
    )
    invoke("warriors", event, monkeypatch, dep)
    assert not dep.storage.exists(keys.failed_key(seed))


def test_a_second_delivery_of_the_same_on_failure_record_leaves_the_first_record(deployment, monkeypatch):
    dep = deployment()
    seed = _seed(dep, "twice")
    event = sqs_event(
        on_failure_record(s3_event_for(BUCKET, [seed]), response={"errorType": "Runtime.ExitError"})
    )
    invoke("warriors", event, monkeypatch, dep)
    first = dep.storage.get(keys.failed_key(seed))
    invoke("warriors", event, monkeypatch, dep)
    assert dep.storage.get(keys.failed_key(seed)) == first


def test_an_on_failure_record_never_overwrites_fanouts_own_record(deployment, monkeypatch):
    dep = deployment()
    seed = _seed(dep, "own")
    dep.storage.put(keys.failed_key(seed), b'{"sentinel": 1}')
    event = sqs_event(
        on_failure_record(s3_event_for(BUCKET, [seed]), response={"errorType": "Runtime.ExitError"})
    )
    invoke("warriors", event, monkeypatch, dep)
    assert dep.storage.get(keys.failed_key(seed)) == b'{"sentinel": 1}'


def test_an_event_that_aged_out_unrun_is_run_again(deployment, monkeypatch):
    dep = deployment()
    seed = _seed(dep, "aged")
    record = on_failure_record(
        s3_event_for(BUCKET, [seed]), condition="EventAgeExceeded", invoke_count=0, function_error=None
    )
    invoke("warriors", sqs_event(record), monkeypatch, dep)
    assert dep.storage.exists(keys.done_key(seed))
    assert not dep.storage.exists(keys.failed_key(seed))


def test_the_token_never_reaches_a_record_from_lambdas_report(deployment, monkeypatch):
    dep = deployment()
    monkeypatch.setenv(env_names.ENV_TOKEN, "tok-SECRET-1")
    seed = _seed(dep, "leak")
    response = {"errorType": "Runtime.ExitError", "errorMessage": "died holding Bearer tok-SECRET-1"}
    invoke(
        "warriors",
        sqs_event(on_failure_record(s3_event_for(BUCKET, [seed]), response=response)),
        monkeypatch,
        dep,
    )
    assert b"tok-SECRET-1" not in dep.storage.get(keys.failed_key(seed))


# --- configuration errors at cold start -------------------------------------------------


def _use_secret(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.delenv(env_names.ENV_TOKEN)
    monkeypatch.setenv(env_names.ENV_TOKEN_SECRET, name)


def test_a_missing_secret_fails_each_task_once_as_configuration_without_retries(
    deployment, monkeypatch, capsys
):
    dep = deployment()
    _use_secret(monkeypatch, "fanout/test/hermes-token")
    seed = _seed(dep, "nosecret")
    assert invoke("warriors", s3_event_for(BUCKET, [seed]), monkeypatch, dep) is None  # no Lambda retries
    record = _record(dep, seed)
    assert record.error_kind == "configuration"
    assert "'fanout/test/hermes-token' does not exist" in record.message
    assert "ResourceNotFoundException" in record.message
    assert _retry_messages(dep, "warriors") == []
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert [doc["ConfigurationErrors"] for doc in emf] == [1.0]  # the alarm's metric


def test_a_missing_secret_fails_a_retry_message_without_redelivery(deployment, monkeypatch):
    dep = deployment()
    _use_secret(monkeypatch, "fanout/test/hermes-token")
    seed = _seed(dep, "nosecret-sqs")
    retry = {"fanout_retry": {"task_key": seed, "attempt": 2, "first_attempt_at": "2026-11-27T08:00:00Z"}}
    assert invoke("warriors", sqs_event(retry), monkeypatch, dep) == {"batchItemFailures": []}
    assert _record(dep, seed).attempts == 2


def test_an_empty_secret_fails_the_task_as_configuration(deployment, monkeypatch):
    dep = deployment()
    boto3.client("secretsmanager", region_name=REGION).create_secret(
        Name="fanout/empty", SecretString=json.dumps({"token": ""})
    )
    _use_secret(monkeypatch, "fanout/empty")
    seed = _seed(dep, "empty")
    invoke("warriors", s3_event_for(BUCKET, [seed]), monkeypatch, dep)
    record = _record(dep, seed)
    assert record.error_kind == "configuration"
    assert "is empty" in record.message


class _DeniedClient:
    def get_secret_value(self, **_: Any) -> Any:
        from botocore.exceptions import ClientError

        raise ClientError(
            {"Error": {"Code": "AccessDeniedException", "Message": "not authorized"}}, "GetSecretValue"
        )


def test_a_secret_the_role_may_not_read_is_a_settings_error_naming_it() -> None:
    with pytest.raises(
        SettingsError, match=r"'fanout/x' may not be read by the function's role \(AccessDenied"
    ):
        read_secret(_DeniedClient(), "fanout/x")


def test_a_throttled_secret_read_is_left_to_lambdas_retries() -> None:
    from botocore.exceptions import ClientError

    class Throttled:
        def get_secret_value(self, **_: Any) -> Any:
            raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow"}}, "GetSecretValue")

    with pytest.raises(ClientError):
        read_secret(Throttled(), "fanout/x")


def test_a_hermes_host_that_does_not_resolve_fails_the_task_as_configuration(deployment, monkeypatch):
    dep = deployment()
    real = socket.getaddrinfo

    def no_such_host(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "127.0.0.1":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
    seed = _seed(dep, "nohost")
    invoke("warriors", s3_event_for(BUCKET, [seed]), monkeypatch, dep)
    record = _record(dep, seed)
    assert record.error_kind == "configuration"
    assert "hermes_url host '127.0.0.1' does not resolve" in record.message
    assert _retry_messages(dep, "warriors") == []


def test_a_temporary_resolver_failure_is_left_to_the_tasks_retries(monkeypatch):

    def again(*_: Any, **__: Any) -> Any:
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    from fanout_aws import stage_handler

    monkeypatch.setattr(stage_handler.socket, "getaddrinfo", again)
    stage_handler.check_hermes_host("https://hermes.example.com")  # no error


def test_a_configuration_error_leaves_a_done_task_alone(deployment, monkeypatch):
    dep = deployment()
    _use_secret(monkeypatch, "fanout/test/hermes-token")
    seed = _seed(dep, "done")
    dep.storage.put(keys.done_key(seed), b"{}")
    invoke("warriors", s3_event_for(BUCKET, [seed]), monkeypatch, dep)
    assert not dep.storage.exists(keys.failed_key(seed))
