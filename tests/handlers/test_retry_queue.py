"""The retry queue's sending side: the body the decoder reads back, and SQS's 900 s cap."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from fanout_aws.retry_queue import MAX_DELAY_S, SqsRetryQueue, retry_message
from fanout_core.retry import Attempt

from .conftest import REGION

ATTEMPT = Attempt(
    key="troops/run=r1/warrior=w1/part-00000.json", number=2, first_attempt_at="2024-05-01T12:00:00Z"
)


class RecordingSqs:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send_message(self, **kwargs: Any) -> dict[str, Any]:
        self.sent.append(kwargs)
        return {"MessageId": "m-1"}


@pytest.mark.parametrize(
    ("backoff_s", "delay_seconds"),
    [(5000.0, 900), (900.4, 900), (899.6, 900), (61.2, 61), (0.0, 0), (-3.0, 0), (-5000.0, 0)],
)
def test_send_clamps_the_backoff_to_sqs_delay_seconds(backoff_s: float, delay_seconds: int) -> None:
    client = RecordingSqs()
    SqsRetryQueue("https://sqs/q", client).send(ATTEMPT, backoff_s)
    (sent,) = client.sent
    assert sent["DelaySeconds"] == delay_seconds
    assert sent["QueueUrl"] == "https://sqs/q"
    assert json.loads(sent["MessageBody"]) == json.loads(retry_message(ATTEMPT))


def test_a_5000_s_backoff_is_accepted_by_sqs_as_its_longest_delay(aws: None) -> None:
    sqs = boto3.client("sqs", region_name=REGION)
    url = sqs.create_queue(QueueName="fanout-troops-retry")["QueueUrl"]
    SqsRetryQueue(url, sqs).send(ATTEMPT, 5000.0)
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesDelayed"])
    assert int(attrs["Attributes"]["ApproximateNumberOfMessagesDelayed"]) == 1
    assert MAX_DELAY_S == 900


def test_a_retry_message_carries_key_attempt_and_first_try() -> None:
    assert json.loads(retry_message(ATTEMPT)) == {
        "fanout_retry": {
            "task_key": ATTEMPT.key,
            "attempt": 2,
            "first_attempt_at": "2024-05-01T12:00:00Z",
        }
    }
