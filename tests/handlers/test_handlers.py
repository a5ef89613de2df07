"""The Lambda entrypoints on moto S3/SQS: decoding, chaining, retries, failure records."""

from __future__ import annotations

import json

import pytest
import task_keys

from fanout.simulator import SimConfig, Universe
from fanout_aws.s3_event import s3_event_for
from fanout_aws.stage_handler import handler_for
from fanout_core import keys
from fanout_core.bodies import manifest_body
from fanout_core.errors import SettingsError
from fanout_core.failures import FailureRecord
from fanout_core.output import read_parquet_bytes

from .conftest import BUCKET, TOKEN, FakeContext, drain, invoke


def _seed(dep, run_id: str, warriors: list[str] | None) -> str:
    key = task_keys.manifest_key(run_id)
    dep.storage.put(key, manifest_body(warriors))
    return key


def _rows(dep, run_id: str) -> list[tuple]:
    rows = []
    for key in dep.objects(f"data/run={run_id}/"):
        frame = read_parquet_bytes(dep.storage.get(key))
        for r in frame.itertuples(index=False):
            value = None if r.value != r.value else r.value
            rows.append(
                (
                    r.warrior_id,
                    r.troop_id,
                    r.service,
                    r.data_group_id,
                    r.ts.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    r.metric,
                    value,
                    r.unit,
                )
            )
    return sorted(rows, key=repr)


def _truth(config: SimConfig) -> list[tuple]:
    return sorted(Universe(config).expected_rows(), key=repr)


def test_full_chain_through_the_handlers_writes_exactly_the_truth(deployment, monkeypatch, sim_config):
    dep = deployment()
    seed = _seed(dep, "r1", None)
    drain(dep, monkeypatch, [seed])
    assert _rows(dep, "r1") == _truth(sim_config)


def test_awkward_ids_survive_event_encoding_into_keys_and_columns(deployment, monkeypatch, sim_config):
    dep = deployment()
    drain(dep, monkeypatch, [_seed(dep, "r2", None)])
    universe = Universe(sim_config)
    warrior_ids = {w["warrior_id"] for w in universe.warriors()}
    folders = {task_keys.parse_data_key(k)[1] for k in dep.objects("data/run=r2/")}
    assert folders == warrior_ids
    assert any(c in "".join(warrior_ids) for c in " +='")


def test_a_duplicate_event_fetches_nothing_and_writes_nothing(deployment, monkeypatch):
    dep = deployment()
    drain(dep, monkeypatch, [_seed(dep, "r3", None)])
    task = dep.objects("data_groups/run=r3/")[0]
    out = task_keys.data_key_for_task(task)
    before = dep.storage.get(out)
    calls = dep.sim.stats.requests
    invoke("data_groups", s3_event_for(BUCKET, [task]), monkeypatch, dep)
    assert dep.sim.stats.requests == calls
    assert dep.storage.get(out) == before


def test_a_batch_of_several_records_runs_each_task(deployment, monkeypatch):
    dep = deployment()
    seed = _seed(dep, "r4", None)
    invoke("warriors", s3_event_for(BUCKET, [seed]), monkeypatch, dep)
    parts = dep.objects("amazon_warriors/run=r4/")
    assert len(parts) > 1
    invoke("warriors", s3_event_for(BUCKET, parts), monkeypatch, dep)
    assert all(dep.storage.exists(keys.done_key(p)) for p in parts)


def test_an_unknown_warrior_leaves_one_failure_record_without_a_retry(deployment, monkeypatch, sim_config):
    dep = deployment()
    good = Universe(sim_config).warriors()[0]["warrior_id"]
    drain(dep, monkeypatch, [_seed(dep, "r5", [good, "no such warrior"])])
    failures = dep.objects("failed/")
    assert len(failures) == 1
    record = FailureRecord.from_bytes(dep.storage.get(failures[0]))
    assert record.kind == "units"
    assert [u["warrior_id"] for u in record.units] == ["no such warrior"]
    assert record.status == 404
    messages = dep.sqs.receive_message(QueueUrl=dep.queues["warriors"], MaxNumberOfMessages=10).get(
        "Messages", []
    )
    assert messages == []


def test_a_transient_failure_is_sent_to_the_retry_queue_with_a_delay(deployment, monkeypatch, sim_config):
    dep = deployment()
    seed = _seed(dep, "r6", None)
    dep.sim.stop()  # Hermes unreachable: connection refused is transient
    invoke("warriors", s3_event_for(BUCKET, [seed]), monkeypatch, dep)
    attrs = dep.sqs.get_queue_attributes(QueueUrl=dep.queues["warriors"], AttributeNames=["All"])[
        "Attributes"
    ]
    assert int(attrs["ApproximateNumberOfMessagesDelayed"]) + int(attrs["ApproximateNumberOfMessages"]) == 1
    assert dep.objects("failed/") == []
    assert not dep.storage.exists(keys.done_key(seed))


def _sqs_event(body_text: str, message_id: str = "m-1") -> dict:
    return {"Records": [{"eventSource": "aws:sqs", "messageId": message_id, "body": body_text}]}


def test_retry_messages_carry_the_attempt_count_until_a_failure_record(deployment, monkeypatch):
    dep = deployment(max_attempts=3, retry_base_delay_s=0, retry_max_delay_s=0)
    seed = _seed(dep, "r7", None)
    dep.sim.stop()
    invoke("warriors", s3_event_for(BUCKET, [seed]), monkeypatch, dep)
    for expected_attempt in (2, 3):
        msgs = dep.sqs.receive_message(QueueUrl=dep.queues["warriors"], MaxNumberOfMessages=1)
        message = msgs["Messages"][0]
        carried = json.loads(message["Body"])["fanout_retry"]
        assert carried["attempt"] == expected_attempt
        assert carried["task_key"] == seed
        dep.sqs.delete_message(QueueUrl=dep.queues["warriors"], ReceiptHandle=message["ReceiptHandle"])
        result = invoke("warriors", _sqs_event(message["Body"]), monkeypatch, dep)
        assert result == {"batchItemFailures": []}
    record = FailureRecord.from_bytes(dep.storage.get(keys.failed_key(seed)))
    assert record.attempts == 3
    assert record.transient is True
    assert record.kind == "task"


def test_an_on_failure_record_of_failed_bookkeeping_is_tried_again_counting_lambdas_tries(
    deployment, monkeypatch
):
    dep = deployment(max_attempts=4)
    seed = _seed(dep, "r8", None)
    dep.sim.stop()
    destination_record = {
        "version": "1.0",
        "timestamp": "2026-11-27T08:00:00.000Z",
        "requestContext": {
            "requestId": "x",
            "functionArn": "arn",
            "condition": "RetriesExhausted",
            "approximateInvokeCount": 3,
        },
        "requestPayload": s3_event_for(BUCKET, [seed]),
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "responsePayload": {"errorMessage": "S3 write failed", "errorType": "InvocationFailed"},
    }
    invoke("warriors", _sqs_event(json.dumps(destination_record)), monkeypatch, dep)
    record = FailureRecord.from_bytes(dep.storage.get(keys.failed_key(seed)))
    assert record.attempts == 4  # tried once more (Hermes is down): fanout's own record
    assert record.condition is None


def test_a_message_whose_deliveries_kept_dying_gets_a_failure_record_on_its_last_receive(
    deployment, monkeypatch
):
    """A crash or timeout leaves the message to be received again; each receive counts
    as an attempt, so the one past ``max_attempts`` records the failure instead of running."""
    dep = deployment(max_attempts=3)
    seed = _seed(dep, "r8b", None)
    dep.sqs.send_message(
        QueueUrl=dep.queues["warriors"], MessageBody=json.dumps(s3_event_for(BUCKET, [seed]))
    )
    for _ in range(4):  # three deliveries die (nothing deletes the message), the fourth records
        (message,) = dep.sqs.receive_message(
            QueueUrl=dep.queues["warriors"], AttributeNames=["All"], VisibilityTimeout=0
        )["Messages"]
    assert message["Attributes"]["ApproximateReceiveCount"] == "4"
    event = _sqs_event(message["Body"])
    event["Records"][0]["attributes"] = message["Attributes"]
    assert invoke("warriors", event, monkeypatch, dep) == {"batchItemFailures": []}
    record = FailureRecord.from_bytes(dep.storage.get(keys.failed_key(seed)))
    assert record.attempts == 3
    assert "received 4 times" in record.message
    assert dep.sim.stats.requests == 0  # recorded without running it
    assert not dep.storage.exists(keys.done_key(seed))


def test_an_unreadable_sqs_message_is_dropped_with_a_log_line_not_redelivered(
    deployment, monkeypatch, caplog
):
    dep = deployment()
    with caplog.at_level("WARNING", logger="fanout"):
        result = invoke("warriors", _sqs_event("not json", "m-bad"), monkeypatch, dep)
    assert result == {"batchItemFailures": []}  # no retry can make it valid
    (line,) = [json.loads(r.getMessage()) for r in caplog.records if "refused" in r.getMessage()]
    assert line["refused"] is True and "not JSON" in line["reason"] and line["message_id"] == "m-bad"


def test_without_a_retry_queue_a_transient_failure_raises_for_lambdas_retries(deployment, monkeypatch):
    dep = deployment(with_queues=False)
    seed = _seed(dep, "r9", None)
    dep.sim.stop()
    with pytest.raises(Exception, match="connection failed"):
        invoke("warriors", s3_event_for(BUCKET, [seed]), monkeypatch, dep)


def test_a_garbage_task_object_fails_permanently_with_a_clear_record(deployment, monkeypatch):
    dep = deployment()
    key = task_keys.troops_task_key("r10", "w", 0)
    dep.storage.put(key, b"{not json")
    invoke("troops", s3_event_for(BUCKET, [key]), monkeypatch, dep)
    record = FailureRecord.from_bytes(dep.storage.get(keys.failed_key(key)))
    assert record.error_class == "BadTask"
    assert "not valid JSON" in record.message
    assert record.attempts == 1


@pytest.mark.parametrize("create", [False, True], ids=["missing", "blank"])
def test_an_unreadable_token_secret_fails_each_task_at_once_naming_it(deployment, monkeypatch, create):
    import boto3

    from fanout_aws import config as env_names

    dep = deployment()
    monkeypatch.delenv(env_names.ENV_TOKEN)
    monkeypatch.setenv(env_names.ENV_TOKEN_SECRET, "fanout/test/hermes-token")
    if create:
        boto3.client("secretsmanager", region_name="us-east-1").create_secret(
            Name="fanout/test/hermes-token", SecretString=" "
        )
    seed = _seed(dep, "r10b", None)
    result = invoke("warriors", _sqs_event(json.dumps(s3_event_for(BUCKET, [seed]))), monkeypatch, dep)
    assert result == {"batchItemFailures": []}  # no redelivery: no retry can fix it
    record = FailureRecord.from_bytes(dep.storage.get(keys.failed_key(seed)))
    assert record.error_class == "ConfigurationError" and record.transient is False
    assert "fanout/test/hermes-token" in record.message
    assert dep.sim.stats.requests == 0


def test_metrics_are_printed_as_embedded_metric_format(deployment, monkeypatch, capsys):
    dep = deployment()
    seed = _seed(dep, "r11", None)
    invoke("warriors", s3_event_for(BUCKET, [seed]), monkeypatch, dep)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    emf = [doc for doc in lines if "_aws" in doc]
    assert emf and emf[0]["Stage"] == "warriors"
    assert emf[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "Fanout"
    assert emf[0]["ApiCalls"] >= 1


def test_the_token_is_read_from_secrets_manager(aws):
    import boto3

    from fanout_aws.secrets import read_secret

    client = boto3.client("secretsmanager", region_name="us-east-1")
    client.create_secret(Name="plain", SecretString=TOKEN)
    client.create_secret(Name="as-json", SecretString=json.dumps({"token": TOKEN}))
    assert read_secret(client, "plain") == TOKEN
    assert read_secret(client, "as-json") == TOKEN


def test_the_handler_for_one_stage_refuses_another_stages_configuration(deployment, monkeypatch):
    deployment()
    monkeypatch.setenv("FANOUT_STAGE", "troops")
    handler = handler_for("warriors")
    with pytest.raises(SettingsError, match="FANOUT_STAGE is 'troops' but this is the warriors handler"):
        handler({"Records": []}, FakeContext())


def test_every_stage_names_the_one_entrypoint_which_serves_the_stage_fanout_stage_names() -> None:
    import importlib

    from fanout_core.stages import STAGES

    assert {stage.handler for stage in STAGES} == {"fanout_aws.handlers.stage.handler"}
    module_name, _, attr = STAGES.first.handler.rpartition(".")
    handler = getattr(importlib.import_module(module_name), attr)
    assert handler.__name__ == "stage_handler"
