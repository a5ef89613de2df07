"""Dashboard widgets for a stage's backpressure: how much work waits, how old the oldest
is, and how many consumers are in flight against the stage's cap (the talk's "queue
depth over time", per stage), for either engine.

- ``queue``: the stage queue's depth (visible, in flight, delayed retries), the age of
  its oldest message, and its dead letters.
- ``s3_events``: Lambda holds the backlog in its internal queue, which shows only as
  ``AsyncEventsReceived``, ``AsyncEventAge`` (how long an event waited before it ran)
  and ``AsyncEventsDropped`` (events given up, to the on-failure path), beside the
  retry queue's depth.
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sqs as sqs

PERIOD = Duration.minutes(1)
"""SQS publishes queue metrics every minute; a backlog graph wants that resolution."""


def backpressure_widgets(
    name: str,
    function: lambda_.IFunction,
    *,
    retry_queue: sqs.IQueue,
    dlq: sqs.IQueue,
    work_queue: sqs.IQueue | None,
    cap: int | None,
) -> list[cw.IWidget]:
    """Three graphs (depth, oldest age, consumers in flight), a row of 24 units."""
    if work_queue is not None:
        depth = cw.GraphWidget(
            title=f"{name}: queue depth",
            left=[
                work_queue.metric_approximate_number_of_messages_visible(
                    period=PERIOD, statistic="Maximum", label="waiting"
                ),
                work_queue.metric_approximate_number_of_messages_not_visible(
                    period=PERIOD, statistic="Maximum", label="in flight"
                ),
                work_queue.metric(
                    "ApproximateNumberOfMessagesDelayed",
                    period=PERIOD,
                    statistic="Maximum",
                    label="delayed retries",
                ),
            ],
            right=[
                dlq.metric_approximate_number_of_messages_visible(
                    period=PERIOD, statistic="Maximum", label="dead letters"
                )
            ],
            width=8,
        )
        age = cw.GraphWidget(
            title=f"{name}: oldest message age (s)",
            left=[
                work_queue.metric_approximate_age_of_oldest_message(
                    period=PERIOD, statistic="Maximum", label="oldest waiting"
                )
            ],
            width=8,
        )
    else:
        depth = cw.GraphWidget(
            title=f"{name}: async events and retry queue",
            left=[
                function.metric(
                    "AsyncEventsReceived", period=PERIOD, statistic="Sum", label="events received"
                ),
                function.metric("AsyncEventsDropped", period=PERIOD, statistic="Sum", label="events dropped"),
            ],
            right=[
                retry_queue.metric_approximate_number_of_messages_visible(
                    period=PERIOD, statistic="Maximum", label="retry queue waiting"
                ),
                retry_queue.metric(
                    "ApproximateNumberOfMessagesDelayed",
                    period=PERIOD,
                    statistic="Maximum",
                    label="retries delayed",
                ),
            ],
            width=8,
        )
        age = cw.GraphWidget(
            title=f"{name}: age of waiting events",
            left=[
                function.metric(
                    "AsyncEventAge", period=PERIOD, statistic="Maximum", label="async event age (ms)"
                )
            ],
            right=[
                retry_queue.metric_approximate_age_of_oldest_message(
                    period=PERIOD, statistic="Maximum", label="oldest retry message (s)"
                ),
            ],
            width=8,
        )
    consumers = cw.GraphWidget(
        title=f"{name}: consumers in flight",
        left=[
            function.metric(
                "ConcurrentExecutions", period=PERIOD, statistic="Maximum", label="concurrent executions"
            )
        ],
        left_annotations=[cw.HorizontalAnnotation(value=cap, label="cap")] if cap else None,
        width=8,
    )
    return [depth, age, consumers]
