"""Events decode to the exact task keys, whichever way they arrive, and whatever an
event holds that is no task of the function is refused with a reason, never raised.

Pure decoding (``fanout_aws.events``), no handler: the handler tests on moto are in
``test_refusals.py`` and ``test_handlers.py``."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import boto3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from moto import mock_aws

from fanout_aws.events import Decoded, S3Object, Scope, decode_event, parse_event
from fanout_aws.retry_queue import retry_message
from fanout_aws.s3_event import encode_event_key, s3_event_for
from fanout_core.retry import Attempt
from fanout_core.stages import stage_named

FIXTURES = Path(__file__).parents[1] / "fixtures"
BUCKET = "fanout-data-123456789012"
TROOPS_KEY = "troops/run=r1/warrior=w1/part-00000.json"
DATA_GROUPS_KEY = "data_groups/run=r1/warrior=w1/troop=t1/part-00000.json"
FIRST = "2024-05-01T12:00:00.000Z"
TROOPS = Scope(bucket=BUCKET, stage=stage_named("troops"), max_attempts=4)


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    return data


def decode_s3_event(event: Any) -> list[S3Object]:
    """The created objects an event names, by shape alone."""
    return parse_event(event).objects


def reasons(decoded: Decoded) -> list[str]:
    return [r.reason for r in decoded.refusals]


def sqs_record(body: str, message_id: str = "059f36b4-87a3-44ab-83d2-661975830a7d") -> dict:
    """An SQS record as the Lambda event source mapping delivers it."""
    return {
        "messageId": message_id,
        "receiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a...",
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": "1714566896789",
            "SenderId": "AIDAIENQZJOLO23YVJ4VO",
            "ApproximateFirstReceiveTimestamp": "1714566896800",
        },
        "messageAttributes": {},
        "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:eu-west-1:123456789012:fanout-tasks",
        "awsRegion": "eu-west-1",
    }


def test_put_fixture_decodes_to_the_exact_awkward_key() -> None:
    assert decode_s3_event(load("s3_event_put.json")) == [
        S3Object(
            bucket=BUCKET,
            key="amazon_warriors/Q3 report+final=v2 'draft' Ωμέγα 日本.json",
            size=1024,
            event_name="ObjectCreated:Put",
            sequencer="0055AED6DCD90281E5",
            event_time="2024-05-01T12:34:56.789Z",
        )
    ]


def test_batch_fixture_yields_every_record_in_order() -> None:
    objects = decode_s3_event(load("s3_event_batch.json"))
    assert [(o.key, o.event_name, o.size) for o in objects] == [
        (
            # keys.py percent-encodes identifiers; the event encodes that once more.
            "troops/run=r1/warrior=O%27Neil%20%2B%20Sons/part-00001.json",
            "ObjectCreated:Put",
            311,
        ),
        (
            "data_groups/run=r1/warrior=w7/troop=t9/part-00002.json",
            "ObjectCreated:CompleteMultipartUpload",
            52428800,
        ),
    ]


@pytest.mark.parametrize(
    ("encoded", "key"),
    [
        ("a+b", "a b"),
        ("a%2Bb", "a+b"),
        ("a%2Fb", "a/b"),
        ("a/b", "a/b"),
        ("a%3Db", "a=b"),
        ("it%27s", "it's"),
        ("100%25", "100%"),
        ("%2520", "%20"),
        ("%E6%97%A5%E6%9C%AC", "日本"),
        ("%CE%A9+%F0%9F%98%80", "Ω \U0001f600"),
        ("a~b*c", "a~b*c"),
    ],
)
def test_event_keys_are_url_decoded(encoded: str, key: str) -> None:
    event = load("s3_event_put.json")
    event["Records"][0]["s3"]["object"]["key"] = encoded
    assert decode_s3_event(event)[0].key == key


def test_test_event_yields_nothing_and_is_reported_as_refused() -> None:
    batch = parse_event(load("s3_test_event.json"))
    assert batch.objects == []
    assert batch.attempts == []
    assert reasons(batch) == ["s3:TestEvent"]
    assert decode_s3_event(load("s3_test_event.json")) == []


def test_records_other_than_object_created_are_refused_with_their_reason() -> None:
    event = load("s3_event_batch.json")
    removed = copy.deepcopy(event["Records"][0])
    removed["eventName"] = "ObjectRemoved:Delete"
    foreign = {"eventSource": "aws:dynamodb", "eventName": "INSERT"}
    event["Records"] = [removed, event["Records"][1], foreign]

    batch = parse_event(event)
    assert [o.key for o in batch.objects] == ["data_groups/run=r1/warrior=w7/troop=t9/part-00002.json"]
    assert [s.record for s in batch.refusals] == [removed, foreign]

    assert len(decode_s3_event(event)) == 1
    text = " ".join(reasons(batch))  # what the handler logs (see test_refusals.py)
    assert "ObjectRemoved:Delete" in text
    assert "aws:dynamodb" in text


@pytest.mark.parametrize(
    "event",
    [
        {},
        {"Records": []},
        {"Records": "nope"},
        {"Records": [{"eventSource": "aws:dynamodb", "eventName": "INSERT"}]},
        {"detail-type": "Object Created", "source": "aws.s3", "detail": {}},
        {"Records": ["not an object"]},
        ["not", "a", "mapping"],
    ],
    ids=["empty", "no-records", "records-not-list", "dynamodb", "eventbridge", "bad-record", "list"],
)
def test_input_that_is_not_an_s3_notification_is_refused_not_raised(event: Any) -> None:
    batch = parse_event(event)
    assert batch.attempts == []
    assert batch.refusals
    assert all(re.search("not an S3 notification", r) for r in reasons(batch))


def test_object_created_record_without_a_key_is_refused() -> None:
    event = load("s3_event_put.json")
    del event["Records"][0]["s3"]["object"]["key"]
    batch = parse_event(event)
    assert batch.attempts == []
    assert [r for r in reasons(batch) if re.search(r"Records\[0\].*object.key", r)]


def test_key_that_is_not_utf8_when_decoded_is_refused() -> None:
    event = load("s3_event_put.json")
    event["Records"][0]["s3"]["object"]["key"] = "bad%FF.json"
    batch = parse_event(event)
    assert batch.attempts == []
    assert [r for r in reasons(batch) if "not URL-encoded UTF-8" in r]


def test_sqs_wrapped_notifications_decode_like_direct_ones() -> None:
    put = load("s3_event_put.json")
    batch = load("s3_event_batch.json")
    event = {
        "Records": [
            sqs_record(json.dumps(put), "m-1"),
            sqs_record(json.dumps(load("s3_test_event.json")), "m-2"),
            sqs_record(json.dumps(batch), "m-3"),
        ]
    }
    assert decode_s3_event(event) == decode_s3_event(put) + decode_s3_event(batch)
    assert reasons(parse_event(event)) == ["s3:TestEvent"]
    assert [a.message_id for a in parse_event(event).attempts] == ["m-1", "m-3", "m-3"]


def test_sqs_body_that_is_not_an_s3_notification_is_refused_not_fatal() -> None:
    put = load("s3_event_put.json")
    poison = sqs_record("{not json", "poison")
    event = {"Records": [poison, sqs_record(json.dumps(put))]}
    batch = parse_event(event)
    assert len(batch.objects) == 1
    assert [s.record["messageId"] for s in batch.refusals] == ["poison"]
    assert [s.message_id for s in batch.refusals] == ["poison"]


def test_what_moto_delivers_through_sqs_decodes_to_the_written_keys() -> None:
    """moto encodes differently from S3 (``/`` as ``%2F``, ``~`` bare); both decode."""
    keys = ["amazon_warriors/a b+c=d'e%f~g*h(i).json", "troops/run=r1/Ωμέγα 日本.json"]
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        sqs = boto3.client("sqs", region_name="us-east-1")
        s3.create_bucket(Bucket="fanout-events")
        queue = sqs.create_queue(QueueName="fanout-events")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])
        s3.put_bucket_notification_configuration(
            Bucket="fanout-events",
            NotificationConfiguration={
                "QueueConfigurations": [
                    {
                        "QueueArn": arn["Attributes"]["QueueArn"],
                        "Events": ["s3:ObjectCreated:*"],
                    }
                ]
            },
        )
        for key in keys:
            s3.put_object(Bucket="fanout-events", Key=key, Body=b"{}")
        messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    raw = " ".join(m["Body"] for m in messages)
    assert "%2F" in raw  # the premise: moto's encoding is not S3's
    event = {"Records": [sqs_record(m["Body"], m["MessageId"]) for m in messages]}
    assert sorted(o.key for o in decode_s3_event(event)) == sorted(keys)
    assert {o.bucket for o in decode_s3_event(event)} == {"fanout-events"}


def test_s3_event_for_encodes_keys_like_s3() -> None:
    event = s3_event_for(BUCKET, ["amazon_warriors/Q3 report+final=v2 'draft' Ωμέγα 日本.json"])
    expected = load("s3_event_put.json")["Records"][0]["s3"]["object"]["key"]
    assert event["Records"][0]["s3"]["object"]["key"] == expected


@pytest.mark.parametrize(
    ("key", "encoded"),
    [("a b", "a+b"), ("a+b", "a%2Bb"), ("a/b", "a/b"), ("a~b", "a%7Eb"), ("a*b", "a*b")],
)
def test_encode_event_key_follows_s3_form_encoding(key: str, encoded: str) -> None:
    assert encode_event_key(key) == encoded


def test_s3_event_for_builds_one_ordered_record_per_key() -> None:
    event = s3_event_for(BUCKET, ["a", "b", "c"], "ObjectCreated:Copy", region="eu-west-1")
    records = event["Records"]
    assert [r["eventSource"] for r in records] == ["aws:s3"] * 3
    assert [r["awsRegion"] for r in records] == ["eu-west-1"] * 3
    assert {r["s3"]["bucket"]["arn"] for r in records} == {f"arn:aws:s3:::{BUCKET}"}
    objects = decode_s3_event(event)
    assert [o.event_name for o in objects] == ["ObjectCreated:Copy"] * 3
    sequencers = [o.sequencer for o in objects]
    assert sequencers == sorted(sequencers) and len(set(sequencers)) == 3
    assert json.loads(json.dumps(event)) == event  # plain JSON, as Lambda delivers it


def test_s3_event_for_an_object_removed_event_decodes_to_nothing() -> None:
    assert decode_s3_event(s3_event_for(BUCKET, ["a"], "ObjectRemoved:Delete")) == []


IDENTIFIER_CHARS = st.characters(categories=("L", "Nd"), exclude_characters="\x00") | st.sampled_from(
    list(" ._-+:@=,~()'/")
)


@settings(max_examples=200, deadline=None)
@given(key=st.text(IDENTIFIER_CHARS, min_size=1, max_size=60))
def test_any_identifier_key_round_trips_through_an_event(key: str) -> None:
    assert decode_s3_event(s3_event_for(BUCKET, [key]))[0].key == key


# --- what the function accepts: retry messages, on-failure records, its own scope ---


def retry_body(key: str = TROOPS_KEY, attempt: Any = 2, first: Any = FIRST, **drop: bool) -> str:
    fields = {"task_key": key, "attempt": attempt, "first_attempt_at": first}
    return json.dumps({"fanout_retry": {k: v for k, v in fields.items() if not drop.get(k)}})


def on_failure_body(payload: dict[str, Any], invoke_count: Any = 3) -> str:
    """A Lambda on-failure destination record, as Lambda writes it to the queue."""
    return json.dumps(
        {
            "version": "1.0",
            "timestamp": "2024-05-01T12:40:00.000Z",
            "requestContext": {
                "requestId": "c0ffee00-0000-4000-8000-000000000001",
                "functionArn": "arn:aws:lambda:eu-west-1:123456789012:function:fanout-Troops:$LATEST",
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


def sqs_event(*bodies: str) -> dict[str, Any]:
    return {"Records": [sqs_record(b, f"m-{i}") for i, b in enumerate(bodies)]}


def received(event: dict[str, Any], count: Any) -> dict[str, Any]:
    """``event`` with every record's ``ApproximateReceiveCount`` set to ``count``."""
    for record in event["Records"]:
        record["attributes"]["ApproximateReceiveCount"] = count
    return event


@pytest.mark.parametrize(
    ("body", "receives", "number"),
    [
        (sqs_record(retry_body(attempt=2))["body"], "1", 2),
        (sqs_record(retry_body(attempt=2))["body"], "3", 4),
        (json.dumps(s3_event_for(BUCKET, [TROOPS_KEY])), "2", 2),
        (on_failure_body(s3_event_for(BUCKET, [TROOPS_KEY]), invoke_count=1), "2", 3),
    ],
    ids=["retry-first-receive", "retry-third-receive", "s3-in-sqs-second", "on-failure-second"],
)
def test_each_receive_before_this_one_counts_as_an_attempt(body: str, receives: str, number: int) -> None:
    (item,) = decode_event(received(sqs_event(body), receives), TROOPS).attempts
    assert (item.attempt.number, item.receives) == (number, int(receives))


@pytest.mark.parametrize("count", [None, "", "0", "-2", "two", "٣", 3])
def test_an_unreadable_receive_count_adds_no_attempt(count: Any) -> None:
    (item,) = decode_event(received(sqs_event(retry_body(attempt=2)), count), TROOPS).attempts
    assert item.attempt.number == 2


def test_the_receive_past_max_attempts_is_refused_as_the_tasks_failure_naming_the_dead_deliveries() -> None:
    event = received(sqs_event(json.dumps(s3_event_for(BUCKET, [TROOPS_KEY]))), "5")
    decoded = decode_event(event, TROOPS)
    assert decoded.attempts == []
    (refusal,) = decoded.refusals
    assert "received 5 times: the 4 deliveries before this one died" in refusal.reason
    assert (refusal.key, refusal.fails_task, refusal.attempts) == (TROOPS_KEY, True, TROOPS.max_attempts)


def test_a_retry_message_decodes_to_its_attempt() -> None:
    decoded = decode_event(sqs_event(retry_body(attempt=3)), TROOPS)
    assert decoded.from_sqs
    assert decoded.refusals == []
    (item,) = decoded.attempts
    assert (item.attempt, item.source, item.message_id) == (
        Attempt(key=TROOPS_KEY, number=3, first_attempt_at=FIRST),
        "retry",
        "m-0",
    )


def test_what_retry_message_writes_decodes_to_the_same_attempt() -> None:
    attempt = Attempt(key=TROOPS_KEY, number=4, first_attempt_at=FIRST)
    (item,) = decode_event(sqs_event(retry_message(attempt)), TROOPS).attempts
    assert item.attempt == attempt


def test_an_s3_record_is_a_first_try_dated_by_its_event_time() -> None:
    (item,) = decode_event(s3_event_for(BUCKET, [TROOPS_KEY], now=1714564800.0), TROOPS).attempts
    assert (item.attempt.number, item.attempt.first_attempt_at, item.source) == (
        1,
        "2024-05-01T12:00:00.000Z",
        "s3",
    )


@pytest.mark.parametrize(
    ("attempt", "first", "why"),
    [
        (-50, FIRST, "attempt is -50"),
        (0, FIRST, "attempt is 0"),
        (True, FIRST, "not a whole number"),
        (2.0, FIRST, "not a whole number"),
        ("2", FIRST, "not a whole number"),
        (None, FIRST, "not a whole number"),
        (5, FIRST, "more than max_attempts=4"),
        (2, "yesterday", "not an ISO-8601 time"),
        (2, 1714564800, "not an ISO-8601 time"),
        (2, None, "not an ISO-8601 time"),
    ],
    ids=[
        "negative",
        "zero",
        "bool",
        "float",
        "string",
        "null",
        "past-max",
        "not-iso",
        "number-time",
        "no-time",
    ],
)
def test_a_retry_message_with_an_untrustworthy_count_is_refused_as_the_tasks_failure(
    attempt: Any, first: Any, why: str
) -> None:
    decoded = decode_event(sqs_event(retry_body(attempt=attempt, first=first)), TROOPS)
    assert decoded.attempts == []
    (refusal,) = decoded.refusals
    assert why in refusal.reason
    assert (refusal.key, refusal.message_id, refusal.fails_task) == (TROOPS_KEY, "m-0", True)
    assert 1 <= refusal.attempts <= TROOPS.max_attempts


@pytest.mark.parametrize("missing", ["attempt", "first_attempt_at"])
def test_a_retry_message_missing_a_field_is_refused_as_the_tasks_failure(missing: str) -> None:
    (refusal,) = decode_event(sqs_event(retry_body(**{missing: True})), TROOPS).refusals
    assert refusal.fails_task and refusal.key == TROOPS_KEY


@pytest.mark.parametrize(
    "key",
    [
        "junk/run=r1/part-00000.json",
        "troops/run=r1/warrior=w1/part-00000.txt",
        "failed/troops/run=r1/warrior=w1/part-00000.json",
        "data/run=r1/warrior=w1/troop=t1/part-00000.parquet",
    ],
    ids=["no-prefix", "not-json", "failure-record", "output"],
)
def test_a_key_that_is_no_task_never_fails_a_task_even_with_a_forged_count(key: str) -> None:
    decoded = decode_event(sqs_event(retry_body(key=key, attempt=-50), retry_body(key=key)), TROOPS)
    assert decoded.attempts == []
    assert [r.fails_task for r in decoded.refusals] == [False, False]
    assert "not a task key" in decoded.refusals[1].reason


@pytest.mark.parametrize(
    "event",
    [
        s3_event_for(BUCKET, [DATA_GROUPS_KEY]),
        sqs_event(retry_body(key=DATA_GROUPS_KEY)),
        sqs_event(retry_body(key=DATA_GROUPS_KEY, attempt=-50)),
        sqs_event(on_failure_body(s3_event_for(BUCKET, [DATA_GROUPS_KEY]))),
    ],
    ids=["s3", "retry", "retry-forged-count", "on-failure"],
)
def test_another_stages_task_is_refused_without_a_failure_record(event: dict[str, Any]) -> None:
    decoded = decode_event(event, TROOPS)
    assert decoded.attempts == []
    (refusal,) = decoded.refusals
    assert refusal.key == DATA_GROUPS_KEY and not refusal.fails_task


@pytest.mark.parametrize(
    "event",
    [s3_event_for("someone-elses-bucket", [TROOPS_KEY]), load("s3_event_batch.json")],
    ids=["direct", "fixture-of-another-account"],
)
def test_a_record_of_another_bucket_is_refused(event: dict[str, Any]) -> None:
    scope = Scope(bucket="fanout-test-bucket", stage=TROOPS.stage, max_attempts=4)
    decoded = decode_event(event, scope)
    assert decoded.attempts == []
    assert decoded.refusals and all("is not this function's bucket" in r for r in reasons(decoded))
    assert not any(r.fails_task for r in decoded.refusals)


def test_an_on_failure_record_adds_lambdas_tries_to_the_attempt() -> None:
    payloads = [s3_event_for(BUCKET, [TROOPS_KEY]), json.loads(retry_body(attempt=2))]
    decoded = decode_event(sqs_event(*(on_failure_body(p, invoke_count=2) for p in payloads)), TROOPS)
    assert decoded.refusals == []
    assert [(a.attempt.number, a.source) for a in decoded.attempts] == [(3, "on-failure"), (4, "on-failure")]


@pytest.mark.parametrize(("invoke_count", "first_try"), [(4, 1), (3, 2), (100, 1)])
def test_an_on_failure_record_past_max_attempts_is_refused_as_the_tasks_failure(
    invoke_count: int, first_try: int
) -> None:
    payload = (
        s3_event_for(BUCKET, [TROOPS_KEY]) if first_try == 1 else json.loads(retry_body(attempt=first_try))
    )
    (refusal,) = decode_event(sqs_event(on_failure_body(payload, invoke_count)), TROOPS).refusals
    assert "no tries left" in refusal.reason
    assert (refusal.key, refusal.fails_task, refusal.attempts) == (TROOPS_KEY, True, TROOPS.max_attempts)


@pytest.mark.parametrize("invoke_count", [0, -3, True, 2.5, "3", None])
def test_an_on_failure_record_with_a_bad_invoke_count_is_refused_as_the_tasks_failure(
    invoke_count: Any,
) -> None:
    event = sqs_event(on_failure_body(s3_event_for(BUCKET, [TROOPS_KEY]), invoke_count))
    decoded = decode_event(event, TROOPS)
    assert decoded.attempts == []
    (refusal,) = decoded.refusals
    assert "approximateInvokeCount" in refusal.reason
    assert refusal.fails_task and refusal.key == TROOPS_KEY


MALFORMED: list[tuple[str, Any]] = [
    ("list", [s3_event_for(BUCKET, [TROOPS_KEY])]),
    ("string", "Records"),
    ("null", None),
    ("number", 42),
    ("records-not-a-list", {"Records": {"eventSource": "aws:s3"}}),
    ("records-null", {"Records": None}),
    ("record-not-an-object", {"Records": [None, 3, "x"]}),
    ("sqs-record-beside-non-objects", {"Records": [sqs_record("{}"), None, []]}),
    ("sqs-body-not-json", sqs_event("{not json")),
    ("sqs-body-a-list", sqs_event("[1, 2]")),
    ("sqs-body-a-string", sqs_event('"fanout_retry"')),
    ("sqs-body-null", sqs_event("null")),
    ("sqs-body-missing", {"Records": [{"eventSource": "aws:sqs", "messageId": "m-0"}]}),
    ("retry-marker-not-an-object", sqs_event('{"fanout_retry": [1]}')),
    ("retry-without-key", sqs_event('{"fanout_retry": {"attempt": 2}}')),
    ("on-failure-payload-not-an-object", sqs_event('{"requestPayload": [], "requestContext": {}}')),
    (
        "s3-record-s3-not-an-object",
        {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put"}]},
    ),
    ("event-name-not-a-string", {"Records": [{"eventSource": "aws:s3", "eventName": 7}]}),
]


@pytest.mark.parametrize("event", [e for _, e in MALFORMED], ids=[n for n, _ in MALFORMED])
def test_a_malformed_event_is_refused_with_a_reason_and_never_raises(event: Any) -> None:
    decoded = decode_event(event, TROOPS)
    assert decoded.attempts == []
    assert decoded.refusals
    assert all(r.reason and not r.fails_task for r in decoded.refusals)
