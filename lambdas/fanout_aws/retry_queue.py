"""The stage's retry queue, sending side: how the Lambda side waits out a backoff
without sleeping.

A task that fails transiently is sent here with ``DelaySeconds`` = its backoff and
the attempt count carried in the body; the queue feeds the same stage function.
The queue is also the function's on-failure destination, so an event that Lambda's
own retries gave up on (a crash, a timeout) comes back here with its invoke count.
What comes back is decoded by ``fanout_aws.events``.
"""

from __future__ import annotations

import json
from typing import Any

from fanout_aws.events import RETRY_MARKER
from fanout_core.retry import Attempt

MAX_DELAY_S = 900
"""SQS's longest delivery delay; longer backoffs are capped to it."""


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


def delivery_delay(delay_s: float) -> int:
    """A backoff as SQS ``DelaySeconds``: whole seconds in 0..900."""
    return max(0, min(MAX_DELAY_S, round(delay_s)))


class SqsRetryQueue:
    def __init__(self, url: str, client: Any):
        self.url = url
        self.client = client

    def send(self, attempt: Attempt, delay_s: float) -> None:
        self.client.send_message(
            QueueUrl=self.url,
            MessageBody=retry_message(attempt),
            DelaySeconds=delivery_delay(delay_s),
        )
