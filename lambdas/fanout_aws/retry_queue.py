"""The stage's retry queue: how the Lambda side waits out a backoff without sleeping.

A task that fails transiently is sent here with ``DelaySeconds`` = its backoff and
the attempt count carried in the body; the queue feeds the same stage function.
The queue is also the function's on-failure destination, so an event that Lambda's
own retries gave up on (a crash, a timeout) comes back here with its invoke count.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fanout_aws.s3_event import parse_s3_event
from fanout_core.failures import now_iso
from fanout_core.retry import Attempt

MAX_DELAY_S = 900
"""SQS's longest delivery delay; longer backoffs are capped to it."""
RETRY_MARKER = "fanout_retry"


def retry_message(attempt: Attempt) -> str:
    return json.dumps(
        {
            RETRY_MARKER: {
                "task_key": attempt.key,
                "attempt": attempt.number,
                "first_attempt_at": attempt.first_attempt_at,
            }
        },
        ensure_ascii=False,
        sort_keys=True,
    )


def attempts_in_message(body: str) -> list[Attempt]:
    """The task attempts an SQS message body asks for.

    Three shapes: our own retry message; a Lambda on-failure destination record
    (``requestPayload`` is the event Lambda gave up on, ``approximateInvokeCount`` the
    tries it made); or an S3 notification relayed through the queue.
    """
    doc = json.loads(body)
    if not isinstance(doc, Mapping):
        raise ValueError("retry message is not a JSON object")
    if RETRY_MARKER in doc:
        r = doc[RETRY_MARKER]
        return [
            Attempt(
                key=str(r["task_key"]), number=int(r["attempt"]), first_attempt_at=str(r["first_attempt_at"])
            )
        ]
    if "requestPayload" in doc and "requestContext" in doc:
        tries = int(doc["requestContext"].get("approximateInvokeCount", 1))
        return [
            Attempt(key=a.key, number=a.number + tries, first_attempt_at=a.first_attempt_at)
            for a in attempts_in_event(doc["requestPayload"])
        ]
    return attempts_in_event(doc)


def attempts_in_event(event: Mapping[str, Any]) -> list[Attempt]:
    """Attempts carried by an invocation payload: S3 records are first tries."""
    if RETRY_MARKER in event:
        return attempts_in_message(json.dumps(event))
    return [
        Attempt(key=o.key, number=1, first_attempt_at=o.event_time or now_iso())
        for o in parse_s3_event(event).objects
    ]


class SqsRetryQueue:
    def __init__(self, url: str, client: Any):
        self.url = url
        self.client = client

    def send(self, attempt: Attempt, delay_s: float) -> None:
        self.client.send_message(
            QueueUrl=self.url,
            MessageBody=retry_message(attempt),
            DelaySeconds=max(0, min(MAX_DELAY_S, round(delay_s))),
        )
