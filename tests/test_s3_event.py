"""S3 notifications decode to the exact object keys, whichever way they arrive."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import boto3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from moto import mock_aws

from fanout_aws.s3_event import (
    S3Object,
    decode_s3_event,
    encode_event_key,
    parse_s3_event,
    s3_event_for,
)

FIXTURES = Path(__file__).parent / "fixtures"
BUCKET = "fanout-data-123456789012"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    return data


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


def test_test_event_yields_nothing_and_is_reported_as_skipped() -> None:
    batch = parse_s3_event(load("s3_test_event.json"))
    assert batch.objects == []
    assert [s.reason for s in batch.skipped] == ["s3:TestEvent"]
    assert decode_s3_event(load("s3_test_event.json")) == []


def test_records_other_than_object_created_are_skipped_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    event = load("s3_event_batch.json")
    removed = copy.deepcopy(event["Records"][0])
    removed["eventName"] = "ObjectRemoved:Delete"
    foreign = {"eventSource": "aws:dynamodb", "eventName": "INSERT"}
    event["Records"] = [removed, event["Records"][1], foreign]

    batch = parse_s3_event(event)
    assert [o.key for o in batch.objects] == ["data_groups/run=r1/warrior=w7/troop=t9/part-00002.json"]
    assert [s.record for s in batch.skipped] == [removed, foreign]

    with caplog.at_level(logging.INFO, logger="fanout_aws.s3_event"):
        assert len(decode_s3_event(event)) == 1
    assert "ObjectRemoved:Delete" in caplog.text
    assert "aws:dynamodb" in caplog.text


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
def test_input_that_is_not_an_s3_notification_raises_value_error(event: Any) -> None:
    with pytest.raises(ValueError, match="not an S3 notification"):
        decode_s3_event(event)


def test_object_created_record_without_a_key_raises_value_error() -> None:
    event = load("s3_event_put.json")
    del event["Records"][0]["s3"]["object"]["key"]
    with pytest.raises(ValueError, match=r"Records\[0\].*object.key"):
        decode_s3_event(event)


def test_key_that_is_not_utf8_when_decoded_raises_value_error() -> None:
    event = load("s3_event_put.json")
    event["Records"][0]["s3"]["object"]["key"] = "bad%FF.json"
    with pytest.raises(ValueError, match="not URL-encoded UTF-8"):
        decode_s3_event(event)


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
    assert [s.reason for s in parse_s3_event(event).skipped] == ["s3:TestEvent"]


def test_sqs_body_that_is_not_an_s3_notification_is_skipped_not_fatal() -> None:
    put = load("s3_event_put.json")
    poison = sqs_record("{not json", "poison")
    event = {"Records": [poison, sqs_record(json.dumps(put))]}
    batch = parse_s3_event(event)
    assert len(batch.objects) == 1
    assert [s.record["messageId"] for s in batch.skipped] == ["poison"]


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
