"""Nothing in an event is trusted: whatever is no task of the function it reached is
refused before any work, logged once as a JSON line with a reason, and never raised.

Real entrypoints on moto S3/SQS, Hermes simulated; every test checks that Hermes was
not called and that nothing was written that should not be."""

from __future__ import annotations

import json
from typing import Any

import pytest
import task_keys
from task_bodies import data_group, data_groups_task, troop, troops_task

from fanout_aws.s3_event import s3_event_for
from fanout_aws.s3_storage import S3Storage
from fanout_core import keys
from fanout_core.failures import FailureRecord

from .conftest import BUCKET, invoke

TROOPS_KEY = task_keys.troops_task_key("r1", "w1", 0)
DATA_GROUPS_KEY = task_keys.data_groups_task_key("r1", "w1", "t1", 0)
FIRST = "2024-05-01T12:00:00.000Z"


def sqs_event(*bodies: str) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": f"m-{i}",
                "receiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a...",
                "body": body,
                "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1714566896789"},
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:fanout-troops-retry",
                "awsRegion": "us-east-1",
            }
            for i, body in enumerate(bodies)
        ]
    }


def retry_body(key: str = TROOPS_KEY, attempt: Any = 2, first: Any = FIRST) -> str:
    return json.dumps({"fanout_retry": {"task_key": key, "attempt": attempt, "first_attempt_at": first}})


def on_failure_body(payload: dict[str, Any], invoke_count: Any) -> str:
    return json.dumps(
        {
            "version": "1.0",
            "timestamp": "2024-05-01T12:40:00.000Z",
            "requestContext": {
                "requestId": "c0ffee00-0000-4000-8000-000000000001",
                "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:fanout-Troops:$LATEST",
                "condition": "RetriesExhausted",
                "approximateInvokeCount": invoke_count,
            },
            "requestPayload": payload,
            "responseContext": {
                "statusCode": 200,
                "executedVersion": "$LATEST",
                "functionError": "Unhandled",
            },
            "responsePayload": {"errorMessage": "Task timed out after 900.00 seconds"},
        }
    )


def put_troops_task(dep: Any, key: str = TROOPS_KEY) -> None:
    dep.storage.put(key, troops_task("r1", "w1", ()).to_bytes())


def refusal_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    docs = []
    for record in caplog.records:
        try:
            doc = json.loads(record.getMessage())
        except ValueError:
            continue
        if isinstance(doc, dict) and "refused" in doc:
            docs.append(doc)
    return docs


@pytest.fixture
def s3_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every call the handler's storage makes, by method name (the test's own storage
    is patched too, so patch only around the invocation: ``s3_calls.clear()`` first)."""
    calls: list[str] = []
    for name in ("get", "put", "put_if_absent", "exists", "list", "last_modified", "delete"):
        original = getattr(S3Storage, name)

        def spy(self: S3Storage, *args: Any, _name: str = name, _original: Any = original) -> Any:
            calls.append(_name)
            return _original(self, *args)

        monkeypatch.setattr(S3Storage, name, spy)
    return calls


def test_a_record_of_another_bucket_is_refused_and_nothing_is_read_or_written(
    deployment, monkeypatch, caplog, s3_calls
):
    dep = deployment()
    put_troops_task(dep)
    s3_calls.clear()
    with caplog.at_level("WARNING", logger="fanout"):
        result = invoke("troops", s3_event_for("someone-elses-bucket", [TROOPS_KEY]), monkeypatch, dep)
    assert result is None
    assert s3_calls == []
    assert dep.sim.stats.requests == 0
    (line,) = refusal_lines(caplog)
    assert line["key"] == TROOPS_KEY and line["stage"] == "troops"
    assert "someone-elses-bucket" in line["reason"]


@pytest.mark.parametrize(
    "event",
    [
        s3_event_for(BUCKET, [DATA_GROUPS_KEY]),
        sqs_event(retry_body(DATA_GROUPS_KEY)),
        sqs_event(retry_body(DATA_GROUPS_KEY, attempt=-50)),
        sqs_event(on_failure_body(s3_event_for(BUCKET, [DATA_GROUPS_KEY]), 2)),
    ],
    ids=["s3", "retry-queue", "retry-queue-forged-count", "on-failure"],
)
def test_another_stages_task_is_refused_and_nothing_is_written(deployment, monkeypatch, caplog, event):
    dep = deployment()
    dep.storage.put(DATA_GROUPS_KEY, b"{}")
    before = dep.objects()
    with caplog.at_level("WARNING", logger="fanout"):
        result = invoke("troops", event, monkeypatch, dep)
    assert result in (None, {"batchItemFailures": []})
    assert dep.objects() == before
    assert dep.sim.stats.requests == 0
    (line,) = refusal_lines(caplog)
    assert line["key"] == DATA_GROUPS_KEY
    assert "a data_groups task key, but this is the troops function" in line["reason"]


@pytest.mark.parametrize(
    "key",
    ["junk/run=r1/part-00000.json", "troops/run=r1/warrior=w1/part-00000.txt", "done/" + TROOPS_KEY],
    ids=["no-prefix", "not-json", "a-done-marker"],
)
@pytest.mark.parametrize("attempt", [2, -50], ids=["count-ok", "count-forged"])
def test_a_key_that_is_no_task_is_refused_and_never_gets_a_failure_record(
    deployment, monkeypatch, key, attempt
):
    dep = deployment()
    direct = invoke("troops", s3_event_for(BUCKET, [key]), monkeypatch, dep)
    queued = invoke("troops", sqs_event(retry_body(key, attempt=attempt)), monkeypatch, dep)
    assert (direct, queued) == (None, {"batchItemFailures": []})
    assert dep.objects("failed/") == []
    assert dep.sim.stats.requests == 0


@pytest.mark.parametrize(
    ("attempt", "first", "why"),
    [
        (-50, FIRST, "attempt is -50, not 1 or more"),
        (0, FIRST, "attempt is 0, not 1 or more"),
        (True, FIRST, "not a whole number"),
        (2.5, FIRST, "not a whole number"),
        ("3", FIRST, "not a whole number"),
        (5, FIRST, "attempt 5 is more than max_attempts=4"),
        (2, "last tuesday", "not an ISO-8601 time"),
        (2, None, "not an ISO-8601 time"),
    ],
    ids=["negative", "zero", "bool", "float", "string", "past-max", "not-iso", "no-time"],
)
def test_a_retry_message_with_an_untrustworthy_count_ends_the_task_in_a_failure_record(
    deployment, monkeypatch, caplog, attempt, first, why
):
    dep = deployment(max_attempts=4)
    put_troops_task(dep)
    with caplog.at_level("WARNING", logger="fanout"):
        result = invoke("troops", sqs_event(retry_body(attempt=attempt, first=first)), monkeypatch, dep)
    assert result == {"batchItemFailures": []}
    assert dep.sim.stats.requests == 0
    assert not dep.storage.exists(keys.done_key(TROOPS_KEY))
    record = FailureRecord.from_bytes(dep.storage.get(keys.failed_key(TROOPS_KEY)))
    assert (record.error_class, record.transient, record.kind) == ("BadTask", False, "task")
    assert why in record.message
    assert 1 <= record.attempts <= 4
    (line,) = refusal_lines(caplog)
    assert line["failure_record"] is True and why in line["reason"]


@pytest.mark.parametrize(("max_attempts", "invoke_count"), [(2, 3), (3, 3), (4, 100)])
def test_an_on_failure_record_past_max_attempts_ends_in_a_failure_record_without_another_try(
    deployment, monkeypatch, max_attempts, invoke_count
):
    dep = deployment(max_attempts=max_attempts)
    put_troops_task(dep)
    event = sqs_event(on_failure_body(s3_event_for(BUCKET, [TROOPS_KEY]), invoke_count))
    assert invoke("troops", event, monkeypatch, dep) == {"batchItemFailures": []}
    assert dep.sim.stats.requests == 0
    record = FailureRecord.from_bytes(dep.storage.get(keys.failed_key(TROOPS_KEY)))
    assert record.attempts == max_attempts
    assert "no tries left" in record.message


@pytest.mark.parametrize("invoke_count", [-50, 0, True, 1.5, "3"])
def test_an_on_failure_record_with_a_bad_invoke_count_ends_in_a_failure_record(
    deployment, monkeypatch, invoke_count
):
    dep = deployment()
    put_troops_task(dep)
    event = sqs_event(on_failure_body(s3_event_for(BUCKET, [TROOPS_KEY]), invoke_count))
    assert invoke("troops", event, monkeypatch, dep) == {"batchItemFailures": []}
    assert dep.sim.stats.requests == 0
    record = FailureRecord.from_bytes(dep.storage.get(keys.failed_key(TROOPS_KEY)))
    assert "approximateInvokeCount" in record.message


def test_a_forged_count_for_a_finished_task_leaves_its_outcome_alone(deployment, monkeypatch):
    dep = deployment()
    put_troops_task(dep)
    dep.storage.put(keys.done_key(TROOPS_KEY), b"{}")
    invoke("troops", sqs_event(retry_body(attempt=-50)), monkeypatch, dep)
    assert dep.objects("failed/") == []


MALFORMED: list[tuple[str, Any]] = [
    ("list", [s3_event_for(BUCKET, [TROOPS_KEY])]),
    ("string", "troops/run=r1/warrior=w1/part-00000.json"),
    ("null", None),
    ("number", 7),
    ("records-not-a-list", {"Records": "troops/"}),
    ("records-not-objects", {"Records": [1, None, "x", []]}),
    ("empty", {}),
]
MALFORMED_SQS: list[tuple[str, Any]] = [
    ("body-not-json", sqs_event("{not json")),
    ("body-a-list", sqs_event(json.dumps([retry_body()]))),
    ("body-a-number", sqs_event("12")),
    ("body-null", sqs_event("null")),
    ("body-an-object-of-nothing", sqs_event("{}")),
]


@pytest.mark.parametrize("event", [e for _, e in MALFORMED], ids=[n for n, _ in MALFORMED])
def test_a_malformed_event_is_a_logged_refusal_and_the_invocation_returns(
    deployment, monkeypatch, caplog, event
):
    dep = deployment()
    with caplog.at_level("WARNING", logger="fanout"):
        assert invoke("troops", event, monkeypatch, dep) is None
    lines = refusal_lines(caplog)
    assert lines and all(line["stage"] == "troops" and line["reason"] for line in lines)
    assert dep.objects() == []


@pytest.mark.parametrize("event", [e for _, e in MALFORMED_SQS], ids=[n for n, _ in MALFORMED_SQS])
def test_a_poison_sqs_message_is_dropped_with_a_log_line_not_redelivered(
    deployment, monkeypatch, caplog, event
):
    dep = deployment()
    with caplog.at_level("WARNING", logger="fanout"):
        assert invoke("troops", event, monkeypatch, dep) == {"batchItemFailures": []}
    (line,) = refusal_lines(caplog)
    assert line["message_id"] == "m-0" and line["stage"] == "troops"
    assert dep.objects() == []


def test_a_transient_failure_in_an_sqs_batch_is_still_a_batch_item_failure(deployment, monkeypatch):
    dep = deployment(with_queues=False)  # no queue to send the retry to: SQS must redeliver
    dep.storage.put(TROOPS_KEY, troops_task("r1", "w1", (troop("t1", "svc"),)).to_bytes())
    dep.sim.stop()  # connection refused: transient
    event = sqs_event("{not json", retry_body())
    assert invoke("troops", event, monkeypatch, dep) == {"batchItemFailures": [{"itemIdentifier": "m-1"}]}
    assert dep.objects("failed/") == []


def test_each_refusal_is_logged_once_as_one_json_line(deployment, monkeypatch, caplog):
    dep = deployment()
    event = {
        "Records": [
            *s3_event_for(BUCKET, [DATA_GROUPS_KEY, "junk/a.json"])["Records"],
            *s3_event_for(BUCKET, [TROOPS_KEY], "ObjectRemoved:Delete")["Records"],
        ]
    }
    with caplog.at_level("INFO", logger="fanout"):
        invoke("troops", event, monkeypatch, dep)
    lines = refusal_lines(caplog)
    assert [line.get("key") for line in lines] == [None, DATA_GROUPS_KEY, "junk/a.json"]
    assert {tuple(sorted(line)) for line in lines if "key" in line} == {("key", "reason", "refused", "stage")}
    assert all(line["refused"] is True and line["stage"] == "troops" for line in lines)


@pytest.mark.parametrize(
    ("stage", "key", "body", "said"),
    [
        (
            "troops",
            TROOPS_KEY,
            troops_task("r1", "w0", (troop("t1", "svc"),)),
            "are not the folders of its key",
        ),
        ("troops", TROOPS_KEY, troops_task("r2", "w1", (troop("t1", "svc"),)), "task body names run 'r2'"),
        (
            "data_groups",
            DATA_GROUPS_KEY,
            data_groups_task("r1", "w0", "t1", "svc", (data_group("g1", "kind 1"),)),
            "are not the folders of its key",
        ),
    ],
    ids=["troops-other-warrior", "troops-other-run", "data-groups-other-warrior"],
)
def test_a_task_body_whose_ids_disagree_with_its_key_fails_before_any_call(
    deployment, monkeypatch, stage, key, body, said
):
    """A crafted body under warrior w1's folder that names w0 (or another run): refused as a
    BadTask failure record of that key, without a call to Hermes or a row written."""
    dep = deployment()
    dep.storage.put(key, body.to_bytes())
    invoke(stage, s3_event_for(BUCKET, [key]), monkeypatch, dep)
    record = FailureRecord.from_bytes(dep.storage.get(keys.failed_key(key)))
    assert record.error_class == "BadTask"
    assert said in record.message
    assert dep.sim.stats.requests == 0
    assert dep.objects("data/") == []
    assert not dep.storage.exists(keys.done_key(key))


# -- keys that are no task, and outside input too long to echo --------------------------

NOT_TASKS = [
    "amazon_warriors/sub/x.json",  # under the prefix, .json, but no run= folder
    "amazon_warriors/run=bad id/part-00000.json",  # a run id the contract does not allow
    "troops/run=r1/warrior=w1/part-x.json",  # not part-NNNNN.json
]


@pytest.mark.parametrize("key", NOT_TASKS, ids=["sub-folder", "bad-run-id", "bad-part-name"])
def test_a_key_under_a_stage_prefix_that_does_not_parse_is_refused_and_nothing_is_written(
    deployment, monkeypatch, caplog, key
):
    dep = deployment()
    stage = key.split("/", 1)[0].replace("amazon_", "")
    with caplog.at_level("WARNING", logger="fanout"):
        direct = invoke(stage, s3_event_for(BUCKET, [key]), monkeypatch, dep)
        queued = invoke(stage, sqs_event(retry_body(key, attempt=0)), monkeypatch, dep)
    assert (direct, queued) == (None, {"batchItemFailures": []})
    assert dep.objects("failed/") == []
    assert dep.sim.stats.requests == 0
    assert all("not a task key" in line["reason"] for line in refusal_lines(caplog))
    assert len(refusal_lines(caplog)) == 2


def test_an_sqs_body_with_a_200_kb_key_is_refused_before_any_work(deployment, monkeypatch, caplog):
    dep = deployment()
    long_key = f"troops/run=r1/warrior={'w' * 200_000}/part-00000.json"  # S3 refuses it
    with caplog.at_level("WARNING", logger="fanout"):
        result = invoke(
            "troops", sqs_event(retry_body(long_key), retry_body(long_key, attempt=0)), monkeypatch, dep
        )
    assert result == {"batchItemFailures": []}
    assert dep.objects("failed/") == [] and dep.sim.stats.requests == 0
    lines = refusal_lines(caplog)
    assert len(lines) == 2
    said = f"{len(long_key.encode())} bytes, and S3 keys are at most 1024"
    assert all(said in line["reason"] for line in lines)
    assert all(len(json.dumps(line)) < 5_000 for line in lines)


HUGE = "z" * 200_000


@pytest.mark.parametrize(
    "event",
    [
        {"Records": [{"eventSource": HUGE}]},
        s3_event_for(HUGE, [TROOPS_KEY]),
        sqs_event(json.dumps({HUGE: 1})),
        {"Records": [{"eventSource": "aws:sqs", "messageId": HUGE, "body": "{}"}]},
    ],
    ids=["event-source", "bucket-name", "top-level-field-name", "message-id"],
)
def test_a_200_kb_event_field_is_cut_in_the_log_line_with_its_length(deployment, monkeypatch, caplog, event):
    dep = deployment()
    put_troops_task(dep)
    with caplog.at_level("DEBUG", logger="fanout"):
        invoke("troops", event, monkeypatch, dep)
    assert dep.objects("failed/") == []
    messages = [record.getMessage() for record in caplog.records]
    assert messages and all(len(m) < 5_000 for m in messages), max(map(len, messages))
    assert any("(200000 chars)" in m or "200002 chars" in m for m in messages)
