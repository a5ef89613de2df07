"""Status and redrive through a stack's SQS queues, for both engines: the queues seen
from outside.

With engine ``queue`` every stage's tasks wait in its SQS queue; in either engine a
stage's retries (and, in ``s3_events``, Lambda's on-failure records) wait in its retry
queue, and what no delivery could process ends in its dead-letter queue. So besides
what the bucket says (``fanout.status``) an operator with AWS access can see each
stage's queue depth and the age of its oldest message, and can re-trigger work by
sending messages instead of rewriting task objects. Everything here takes boto3
clients, so it runs against AWS or moto alike; nothing here is deployed.

- ``stage_queue_urls``: each stage's queues, from the stack's outputs
  (``<FunctionId>QueueUrl``, engine ``queue`` only; ``<FunctionId>RetryQueueUrl`` and
  ``<FunctionId>DeadLetterQueueUrl``, both engines).
- ``queue_status``: per stage, messages waiting, in flight, delayed (retries waiting
  out their backoff), summed over its stage queue (engine ``queue``) and its retry
  queue, dead letters, and the oldest message's age (the larger of those queues'
  CloudWatch ``ApproximateAgeOfOldestMessage``; SQS has no API for it that does not
  receive, and a receive would count towards the dead-letter queue).
- ``stale_after_in_queue_mode``: the stale threshold ``fanout.status.run_status`` takes:
  a pending task is not lost while its stage's queue still holds messages.
- ``send_tasks``: re-trigger tasks by sending each a first-attempt message to its stage's
  queue (no S3 write, no notification). ``fanout.redrive.redrive`` also works unchanged
  in queue mode: the task objects it writes are notified to the queues.
- ``send_stale``: the ``--stale`` redrive through messages.
- ``redrive_dead_letters``: move what reached a stage's dead-letter queue back to where
  its function consumes it (after the cause is fixed): the stage queue in engine
  ``queue``, the retry queue in ``s3_events`` (whose dead letters are retry messages and
  on-failure records, the retry consumer's input); optionally only one run's messages
  (``runs_of_message``).
- ``connect``: the clients and queue URLs of a deployed stack, every AWS error one line
  (``fanout status --queues``, ``fanout redrive --from-dlq``).

A stack without these outputs (deployed before them) is refused by ``stage_queue_urls``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from fanout.status import run_status
from fanout_aws.events import SQS_SOURCE, parse_event
from fanout_aws.retry_queue import retry_message
from fanout_core.errors import FanoutError
from fanout_core.failures import now_iso
from fanout_core.retry import Attempt, RetryPolicy
from fanout_core.settings import EnvironmentSettings
from fanout_core.stages import STAGES, StageTable
from fanout_core.storage import Storage

QUEUE_URL_OUTPUT = "{function_id}QueueUrl"
"""Engine ``queue`` only: the stage queue."""
RETRY_QUEUE_URL_OUTPUT = "{function_id}RetryQueueUrl"
DLQ_URL_OUTPUT = "{function_id}DeadLetterQueueUrl"
"""Must equal ``stacks.fanout_stack``'s (tests/infra checks, for both engines)."""
STACK_NAME = "Fanout-{env}"
"""The stack of an environment; must equal ``stacks.fanout_stack.stack_name`` (a test checks)."""
SQS_BATCH = 10
"""SendMessageBatch, DeleteMessageBatch and ReceiveMessage take at most ten."""
AGE_WINDOW = timedelta(minutes=10)
"""How far back to look for the latest oldest-message-age datapoint (SQS publishes one
a minute, a few minutes late)."""
AGE_PERIOD = timedelta(seconds=60)
HOLD_S = 300
"""How long ``redrive_dead_letters`` keeps a dead letter it leaves (another run's)
invisible, so one pass over the queue does not receive it twice."""
PASS_BUDGET_S = 240.0
"""A pass over a dead-letter queue ends by then, before the first held message reappears."""


class QueueEngineError(Exception):
    """The stack's outputs name no stage queues, or SQS refused a request."""


@dataclass(frozen=True)
class StageQueueUrls:
    stage: str
    queue_url: str | None
    """Engine ``queue``: the stage queue the bucket notifies. None in ``s3_events``."""
    dlq_url: str
    retry_queue_url: str | None = None
    """The stage's retry queue (its retry consumer's input); None from a stack whose
    outputs do not name it (engine ``queue`` deployed before they did)."""

    @property
    def engine(self) -> str:
        return "queue" if self.queue_url else "s3_events"

    @property
    def watched(self) -> tuple[str, ...]:
        """The queues whose messages are the stage's outstanding work."""
        return tuple(u for u in (self.queue_url, self.retry_queue_url) if u)

    @property
    def consumed_from(self) -> str:
        """Where a message for the stage's function goes: the stage queue, else the retry
        queue (in ``s3_events`` the only queue any function of the stage consumes)."""
        url = self.queue_url or self.retry_queue_url
        assert url is not None  # stage_queue_urls keeps only stages with one of them
        return url


@dataclass(frozen=True)
class QueueDepth:
    stage: str
    waiting: int
    """Visible messages: tasks no consumer has taken yet (``ApproximateNumberOfMessages``)."""
    in_flight: int
    """Received and not yet deleted: tasks running now (``...NotVisible``)."""
    delayed: int
    """Retries waiting out their backoff (``...Delayed``)."""
    dead_letters: int
    oldest_age_s: float | None
    """Age of the oldest message, from CloudWatch; None without a recent datapoint."""

    @property
    def queued(self) -> int:
        """Messages the stage still has to work through (dead letters excluded)."""
        return self.waiting + self.in_flight + self.delayed

    def as_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "waiting": self.waiting,
            "in_flight": self.in_flight,
            "delayed": self.delayed,
            "dead_letters": self.dead_letters,
            "oldest_age_s": self.oldest_age_s,
        }


def stage_queue_urls(
    cloudformation: Any, stack_name: str, table: StageTable = STAGES
) -> dict[str, StageQueueUrls]:
    """Stage name -> its queue URLs, from the stack's outputs (either engine).
    QueueEngineError if they name none (a stack deployed before the outputs)."""
    (stack,) = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    found = {}
    for stage in table:
        fid = stage.function_id
        queue = outputs.get(QUEUE_URL_OUTPUT.format(function_id=fid))
        retry = outputs.get(RETRY_QUEUE_URL_OUTPUT.format(function_id=fid))
        dlq = outputs.get(DLQ_URL_OUTPUT.format(function_id=fid))
        if dlq and (queue or retry):
            found[stage.name] = StageQueueUrls(stage.name, queue, dlq, retry)
    if not found:
        raise QueueEngineError(
            f"stack {stack_name} has no stage queues in its outputs (deploy this version of the stack)"
        )
    return found


def _count(attributes: Mapping[str, str], name: str) -> int:
    return int(attributes.get(name, "0"))


def _queue_name(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def oldest_message_age_s(cloudwatch: Any, queue_url: str, *, now: datetime | None = None) -> float | None:
    """The latest ``ApproximateAgeOfOldestMessage`` of a queue (seconds), or None.

    The window ends a period after now: EndTime is exclusive and taken to the whole
    second, so a point published this very second would otherwise be left out."""
    end = now or datetime.now(UTC)
    answer = cloudwatch.get_metric_statistics(
        Namespace="AWS/SQS",
        MetricName="ApproximateAgeOfOldestMessage",
        Dimensions=[{"Name": "QueueName", "Value": _queue_name(queue_url)}],
        StartTime=end - AGE_WINDOW,
        EndTime=end + AGE_PERIOD,
        Period=int(AGE_PERIOD.total_seconds()),
        Statistics=["Maximum"],
    )
    points = sorted(answer.get("Datapoints", []), key=lambda p: p["Timestamp"])
    return float(points[-1]["Maximum"]) if points else None


def queue_status(
    sqs: Any,
    urls: Mapping[str, StageQueueUrls],
    *,
    cloudwatch: Any | None = None,
    now: datetime | None = None,
    table: StageTable = STAGES,
) -> list[QueueDepth]:
    """Each stage's queue depth, in stage order: its stage queue (engine ``queue``) and
    its retry queue together. Without ``cloudwatch`` the oldest age is None."""
    depths = []
    for stage in table:
        if stage.name not in urls:
            continue
        u = urls[stage.name]
        waiting = in_flight = delayed = 0
        ages: list[float] = []
        for url in u.watched:
            attrs = sqs.get_queue_attributes(
                QueueUrl=url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                    "ApproximateNumberOfMessagesDelayed",
                ],
            )["Attributes"]
            waiting += _count(attrs, "ApproximateNumberOfMessages")
            in_flight += _count(attrs, "ApproximateNumberOfMessagesNotVisible")
            delayed += _count(attrs, "ApproximateNumberOfMessagesDelayed")
            age = oldest_message_age_s(cloudwatch, url, now=now) if cloudwatch else None
            if age is not None:
                ages.append(age)
        dead = sqs.get_queue_attributes(QueueUrl=u.dlq_url, AttributeNames=["ApproximateNumberOfMessages"])[
            "Attributes"
        ]
        depths.append(
            QueueDepth(
                stage=stage.name,
                waiting=waiting,
                in_flight=in_flight,
                delayed=delayed,
                dead_letters=_count(dead, "ApproximateNumberOfMessages"),
                oldest_age_s=max(ages) if ages else None,
            )
        )
    return depths


def stale_after_in_queue_mode(
    settings: EnvironmentSettings,
    depths: Sequence[QueueDepth],
    urls: Mapping[str, StageQueueUrls] | None = None,
) -> Callable[[str], float]:
    """``run_status``'s ``stale_after`` once the queues' depths are known.

    While a stage's queues hold any message (a task waiting, a retry in its backoff)
    none of its pending tasks counts as lost. Once they are empty: in engine ``queue``
    a task waits in its queue as long as the stage needs to reach it (there is no event
    age), so one still pending after every retry's backoff and run is lost (a
    notification that never arrived, a message that expired); in ``s3_events`` (per
    ``urls``) Lambda may still hold its event, so the bucket-only threshold applies
    (``fanout.status.stale_after_s``).
    """
    from fanout.status import stale_after_s

    queued = {d.stage: d.queued for d in depths}
    policy = RetryPolicy.from_settings(settings)
    backoffs = sum(
        min(policy.max_delay_s, policy.base_delay_s * 2 ** (n - 1)) for n in range(1, policy.max_attempts)
    )

    def stale_after(stage: str) -> float:
        if queued.get(stage, 0) > 0:
            return float("inf")
        if urls is not None and stage in urls and urls[stage].engine == "s3_events":
            return stale_after_s(settings, stage)
        return backoffs + settings.stage(stage).timeout_s * policy.max_attempts

    return stale_after


@dataclass
class SendResult:
    sent: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _send_batch(sqs: Any, queue_url: str, bodies: Sequence[str]) -> None:
    for start in range(0, len(bodies), SQS_BATCH):
        chunk = bodies[start : start + SQS_BATCH]
        answer = sqs.send_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": str(i), "MessageBody": body} for i, body in enumerate(chunk)],
        )
        if answer.get("Failed"):
            raise QueueEngineError(f"SQS refused {len(answer['Failed'])} message(s): {answer['Failed'][:3]}")


def send_tasks(
    sqs: Any,
    urls: Mapping[str, StageQueueUrls],
    task_keys: Iterable[str],
    *,
    stamp: Callable[[], str] = now_iso,
    table: StageTable = STAGES,
) -> SendResult:
    """Send each task a first-attempt message to its stage's queue (the handler reads it
    as a retry message with ``attempt`` 1: it runs with the whole attempt budget)."""
    result = SendResult()
    by_queue: dict[str, list[str]] = {}
    for key in task_keys:
        stage = table.for_key(key)
        if stage is None:
            result.skipped.append((key, "not a task key of any stage"))
            continue
        if stage.name not in urls:
            result.skipped.append((key, f"no queue for stage {stage.name}"))
            continue
        by_queue.setdefault(urls[stage.name].consumed_from, []).append(key)
    for queue_url, stage_keys in by_queue.items():
        _send_batch(
            sqs,
            queue_url,
            [retry_message(Attempt(key=k, number=1, first_attempt_at=stamp())) for k in stage_keys],
        )
        result.sent.extend(stage_keys)
    return result


def send_stale(
    storage: Storage,
    sqs: Any,
    urls: Mapping[str, StageQueueUrls],
    run_id: str,
    settings: EnvironmentSettings,
    *,
    stage: str | None = None,
    now: float | None = None,
    table: StageTable = STAGES,
) -> SendResult:
    """``redrive --stale`` for engine ``queue``: every pending task of a stage whose queue
    is empty and that is older than the retry window gets a message."""
    stale_after = stale_after_in_queue_mode(settings, queue_status(sqs, urls, table=table), urls)
    status = run_status(storage, run_id, stale_after=stale_after, now=now, table=table)
    stale = [k for s in status.stages if stage in (None, s.stage) for k in s.stale]
    return send_tasks(sqs, urls, stale, table=table)


def runs_of_message(body: str, table: StageTable = STAGES) -> set[str]:
    """The runs whose tasks a queued message names (an S3 notification, a retry message,
    a Lambda on-failure record); empty if it names no task key of any stage."""
    decoded = parse_event({"Records": [{"eventSource": SQS_SOURCE, "messageId": "m", "body": body}]})
    runs = set()
    for item in decoded.attempts:
        try:
            runs.add(table.parse(item.key).run_id)
        except FanoutError:
            continue
    return runs


def redrive_dead_letters(
    sqs: Any,
    urls: StageQueueUrls,
    *,
    limit: int | None = None,
    keep: Callable[[str], bool] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Move messages from a stage's dead-letter queue back to where its function consumes
    them (``StageQueueUrls.consumed_from``); returns how many.

    Receive, send the same body, then delete: a crash between the two leaves a message in
    both, which the handler's done markers make harmless. (SQS's StartMessageMoveTask
    does the same server-side for a whole queue, but cannot choose messages.) With
    ``keep``, only bodies it accepts move; the others stay hidden for the rest of the
    pass (at most ``PASS_BUDGET_S``) and are made visible again at its end."""
    moved = 0
    held: list[str] = []
    deadline = clock() + PASS_BUDGET_S
    try:
        while (limit is None or moved < limit) and clock() < deadline:
            want = SQS_BATCH if limit is None else min(SQS_BATCH, limit - moved)
            messages = sqs.receive_message(
                QueueUrl=urls.dlq_url, MaxNumberOfMessages=want, WaitTimeSeconds=0, VisibilityTimeout=HOLD_S
            ).get("Messages", [])
            if not messages:
                break
            chosen = [m for m in messages if keep is None or keep(m["Body"])]
            held.extend(m["ReceiptHandle"] for m in messages if m not in chosen)
            if not chosen:
                continue
            _send_batch(sqs, urls.consumed_from, [m["Body"] for m in chosen])
            answer = sqs.delete_message_batch(
                QueueUrl=urls.dlq_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chosen)],
            )
            if answer.get("Failed"):
                raise QueueEngineError(f"could not delete {len(answer['Failed'])} moved dead letter(s)")
            moved += len(chosen)
    finally:
        for start in range(0, len(held), SQS_BATCH):
            sqs.change_message_visibility_batch(
                QueueUrl=urls.dlq_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": 0}
                    for i, h in enumerate(held[start : start + SQS_BATCH])
                ],
            )
    return moved


@dataclass(frozen=True)
class QueueAccess:
    """What ``status --queues`` and ``redrive --from-dlq`` need of a deployed stack."""

    stack_name: str
    sqs: Any
    cloudwatch: Any
    urls: dict[str, StageQueueUrls]


def connect(stack_name: str, *, region: str | None = None, endpoint_url: str | None = None) -> QueueAccess:
    """Clients for the stack's region (and endpoint: a moto server) and its stage queues.
    QueueEngineError, one line, if there is no AWS access, no such stack, or no queues."""
    from fanout.aws_clients import AWS_ERRORS, aws_problem, cli_client

    try:
        clients = {
            name: cli_client(name, region=region, endpoint_url=endpoint_url)
            for name in ("cloudformation", "sqs", "cloudwatch")
        }
        urls = stage_queue_urls(clients["cloudformation"], stack_name)
    except AWS_ERRORS as exc:
        raise QueueEngineError(f"no AWS access to stack {stack_name} ({aws_problem(exc)})") from None
    return QueueAccess(stack_name, clients["sqs"], clients["cloudwatch"], urls)
