"""A discrete-event emulation of a deployed run, on moto, with a compressed clock.

What is real: the bucket (moto S3), its notifications (moto S3 -> moto SQS, the bodies
exactly as moto writes them), the queues (moto SQS: delays, visibility timeouts,
receive counts, redrive to a DLQ), the stage handlers (``StageRuntime.handle``, one
warm runtime per stage) and Hermes (the simulator). What is modelled:

- **Time.** moto's SQS clock is replaced by a virtual one; each task takes a fixed
  virtual duration per stage (``task_s``), and its effects (its children, its retry
  message, the deletion of its message) happen when it ends. Nothing sleeps.
- **Engine queue.** Per stage, an event source mapping with ``MaximumConcurrency`` =
  the cap: whenever fewer than ``cap`` invocations of a stage are in flight, it
  receives one message (batch size 1) with the queue's visibility timeout and invokes
  the handler with a Lambda-shaped SQS event; after the invocation it deletes the
  message unless ``batchItemFailures`` names it.
- **Engine s3_events.** Lambda's internal queue for asynchronous events: the bucket
  notifies a hidden queue per stage, and whenever fewer than ``cap`` executions of the
  stage are busy, the oldest event is invoked directly (as S3 would, not SQS-wrapped).
  An event that has waited longer than ``max_event_age_s`` is not invoked: Lambda hands
  it to the on-failure path, which is counted (``redirected``) and *not* fed back (what
  AWS writes as ``approximateInvokeCount`` for an event that never ran is not
  established here). This is the best case for the async path: no throttle backoff
  (Lambda's retries of a throttled event back off for up to 5 minutes), strict age
  order. The stage's retry queue is consumed by the same executions, retries first.

Polling: an idle mapping looks again every ``poll_s`` virtual seconds, so a message
waits at most that long beyond being visible with a free slot.
"""

from __future__ import annotations

import heapq
import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fanout_aws.config import LambdaConfig
from fanout_aws.stage_handler import StageRuntime
from fanout_core.settings import EnvironmentSettings
from fanout_core.stages import STAGES, TASK_SUFFIX

ACCOUNT_REGION = "us-east-1"


class VirtualClock:
    """Seconds since the emulation began, plus a fixed epoch so timestamps look real."""

    EPOCH = 1_800_000_000.0

    def __init__(self) -> None:
        self.t = 0.0

    def unix_time(self, *_args: Any) -> float:
        return self.EPOCH + self.t

    def unix_time_millis(self, *_args: Any) -> float:
        return (self.EPOCH + self.t) * 1000.0


def install_clock(monkeypatch: Any) -> VirtualClock:
    import moto.sqs.models as sqs_models

    clock = VirtualClock()
    monkeypatch.setattr(sqs_models, "unix_time", clock.unix_time)
    monkeypatch.setattr(sqs_models, "unix_time_millis", clock.unix_time_millis)
    return clock


class FakeContext:
    def __init__(self, remaining_ms: int) -> None:
        self.remaining_ms = remaining_ms
        self.function_name = "fanout-emulated"
        self.aws_request_id = "emulated"

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@dataclass
class StageFigures:
    cap: int
    invocations: int = 0
    peak_in_flight: int = 0
    retries_sent: int = 0
    retry_lateness_s: list[float] = field(default_factory=list)
    """For each retry run: when it started minus when its delay made it due."""
    max_wait_s: float = 0.0
    """Longest a first delivery waited between its notification and its start."""
    redirected: int = 0
    """s3_events: events past max_event_age handed to the on-failure path."""
    dead_letters: int = 0


@dataclass
class Figures:
    engine: str
    makespan_s: float = 0.0
    stages: dict[str, StageFigures] = field(default_factory=dict)
    sqs_requests: dict[str, int] = field(default_factory=lambda: {"send": 0, "receive": 0, "delete": 0})
    """SQS requests the engine itself makes (notifications and retry sends, non-empty
    receives, deletes); a mapping's empty long polls are not counted."""
    tasks: int = 0

    @property
    def redirected(self) -> int:
        return sum(s.redirected for s in self.stages.values())

    @property
    def dead_letters(self) -> int:
        return sum(s.dead_letters for s in self.stages.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "tasks": self.tasks,
            "makespan_s": round(self.makespan_s),
            "redirected_past_event_age": self.redirected,
            "dead_letters": self.dead_letters,
            "sqs_requests_per_task": round(sum(self.sqs_requests.values()) / max(self.tasks, 1), 2),
            "stages": {
                name: {
                    "cap": s.cap,
                    "invocations": s.invocations,
                    "peak_in_flight": s.peak_in_flight,
                    "max_wait_s": round(s.max_wait_s),
                    "retries": s.retries_sent,
                    "max_retry_lateness_s": round(max(s.retry_lateness_s, default=0.0)),
                    "redirected": s.redirected,
                }
                for name, s in self.stages.items()
            },
        }


def _lambda_sqs_event(message: Mapping[str, Any], queue_arn: str) -> dict[str, Any]:
    """A received SQS message as Lambda's event source mapping hands it to a function."""
    return {
        "Records": [
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": dict(message.get("Attributes", {})),
                "messageAttributes": {},
                "md5OfBody": message.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": ACCOUNT_REGION,
            }
        ]
    }


class Emulation:
    """One run of one engine. ``queues``: stage -> (queue URL, DLQ URL) the handlers'
    retries go to; for s3_events also ``internal``: stage -> the hidden queue modelling
    Lambda's internal event queue."""

    def __init__(
        self,
        *,
        engine: str,
        settings: EnvironmentSettings,
        bucket: str,
        token: str,
        sqs: Any,
        clock: VirtualClock,
        queues: Mapping[str, tuple[str, str]],
        internal: Mapping[str, str] | None = None,
        task_s: Mapping[str, float],
        poll_s: float = 1.0,
        horizon_s: float = 7 * 24 * 3600,
        hooks: list[tuple[float, Any]] | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.sqs = sqs
        self.clock = clock
        self.queues = queues
        self.internal = internal or {}
        self.task_s = task_s
        self.poll_s = poll_s
        self.horizon_s = horizon_s
        self.hooks = sorted(hooks or [], key=lambda h: h[0])
        """(virtual time, callable): e.g. a Hermes outage starting and ending."""
        self.figures = Figures(engine=engine)
        self.runtimes: dict[str, StageRuntime] = {}
        self.arns: dict[str, str] = {}
        for stage in STAGES:
            config = LambdaConfig(
                stage=stage,
                bucket=bucket,
                settings=settings,
                token_secret=None,
                token=token,
                retry_queue_url=queues[stage.name][0],
            )
            runtime = StageRuntime.from_config(config, token=token)
            runtime.hermes._sleep = lambda _s: None  # the client's in-task backoff: virtual too
            self.runtimes[stage.name] = runtime
            self.arns[stage.name] = sqs.get_queue_attributes(
                QueueUrl=queues[stage.name][0], AttributeNames=["QueueArn"]
            )["Attributes"]["QueueArn"]
            self.figures.stages[stage.name] = StageFigures(
                cap=settings.stage(stage.name).reserved_concurrency
            )
        self._seq = itertools.count()

    # -- receiving -----------------------------------------------------------------

    def _receive(self, url: str, *, count: bool = True) -> dict[str, Any] | None:
        got = self.sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=1, WaitTimeSeconds=0, AttributeNames=["All"]
        ).get("Messages", [])
        if not got:
            return None
        if count:
            self.figures.sqs_requests["receive"] += 1
        return dict(got[0])

    def _next_delivery(self, stage: str) -> tuple[str, dict[str, Any], str] | None:
        """(kind, message, url) of the next thing a free execution of ``stage`` runs."""
        queue_url = self.queues[stage][0]
        if self.engine == "queue":
            message = self._receive(queue_url)
            return ("queue", message, queue_url) if message else None
        message = self._receive(queue_url)  # the retry queue's mapping
        if message:
            return ("retry-queue", message, queue_url)
        while (event := self._receive(self.internal[stage], count=False)) is not None:
            age = self.clock.t - self._sent_at(event)
            if age <= self.settings.stage(stage).max_event_age_s:
                return ("async", event, self.internal[stage])
            self.figures.stages[stage].redirected += 1
            self._delete(self.internal[stage], event, count=False)
        return None

    def _sent_at(self, message: Mapping[str, Any]) -> float:
        return int(message["Attributes"]["SentTimestamp"]) / 1000.0 - VirtualClock.EPOCH

    def _delete(self, url: str, message: Mapping[str, Any], *, count: bool = True) -> None:
        self.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        if count:
            self.figures.sqs_requests["delete"] += 1

    # -- running -------------------------------------------------------------------

    def _start(self, stage: str, kind: str, message: dict[str, Any]) -> None:
        figures = self.figures.stages[stage]
        body = json.loads(message["Body"])
        waited = self.clock.t - self._sent_at(message)
        if "fanout_retry" in body:
            delay = min(900.0, self._delays.get(body["fanout_retry"]["task_key"], 0.0))
            figures.retry_lateness_s.append(self.clock.t - (self._sent_at(message) + delay))
        elif body.get("Records"):
            figures.max_wait_s = max(figures.max_wait_s, waited)

    def _finish(self, stage: str, kind: str, message: dict[str, Any], url: str) -> None:
        runtime = self.runtimes[stage]
        context = FakeContext(int(self.settings.stage(stage).timeout_s * 1000))
        sent_before = self._retry_count(stage)
        if kind == "async":
            event = json.loads(message["Body"])
            runtime.handle(event, context)  # raises only if bookkeeping failed
            self._delete(url, message, count=False)
        else:
            result = runtime.handle(_lambda_sqs_event(message, self.arns[stage]), context) or {}
            if not result.get("batchItemFailures"):
                self._delete(url, message)
        self.figures.stages[stage].retries_sent += self._retry_count(stage) - sent_before

    def _retry_count(self, stage: str) -> int:
        return self._sent_retries.get(stage, 0)

    def run(self) -> Figures:
        """Run until every queue is empty and nothing is in flight."""
        self._sent_retries: dict[str, int] = {}
        self._wrap_retry_senders()
        in_flight: dict[str, int] = {s.name: 0 for s in STAGES}
        ends: list[tuple[float, int, str, str, dict[str, Any], str]] = []
        while self.clock.t < self.horizon_s:
            while self.hooks and self.hooks[0][0] <= self.clock.t:
                self.hooks.pop(0)[1]()
            for stage in STAGES:
                name = stage.name
                cap = self.figures.stages[name].cap
                while in_flight[name] < cap:
                    delivery = self._next_delivery(name)
                    if delivery is None:
                        break
                    kind, message, url = delivery
                    self._start(name, kind, message)
                    in_flight[name] += 1
                    self.figures.stages[name].invocations += 1
                    peak = self.figures.stages[name]
                    peak.peak_in_flight = max(peak.peak_in_flight, in_flight[name])
                    end = self.clock.t + self.task_s[name]
                    heapq.heappush(ends, (end, next(self._seq), name, kind, message, url))
            if not ends and self._all_empty():
                break
            next_poll = self.clock.t + self.poll_s
            if ends and ends[0][0] <= next_poll:
                end, _, name, kind, message, url = heapq.heappop(ends)
                self.clock.t = end
                self._finish(name, kind, message, url)
                in_flight[name] -= 1
            else:
                self.clock.t = next_poll
        self.figures.makespan_s = self.clock.t
        for stage in STAGES:
            dlq = self.queues[stage.name][1]
            attrs = self.sqs.get_queue_attributes(
                QueueUrl=dlq, AttributeNames=["ApproximateNumberOfMessages"]
            )
            self.figures.stages[stage.name].dead_letters = int(
                attrs["Attributes"]["ApproximateNumberOfMessages"]
            )
        self.figures.tasks = sum(1 for s in STAGES for _ in self._task_keys(s.input_prefix))
        if self.engine == "queue":  # every task object was one notification sent to a queue
            self.figures.sqs_requests["send"] += self.figures.tasks
        return self.figures

    def _task_keys(self, prefix: str) -> list[str]:
        storage = next(iter(self.runtimes.values())).storage
        return [k for k in storage.list(prefix) if k.endswith(TASK_SUFFIX)]

    def _all_empty(self) -> bool:
        urls = [q for q, _ in self.queues.values()] + list(self.internal.values())
        for url in urls:
            attrs = self.sqs.get_queue_attributes(
                QueueUrl=url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                    "ApproximateNumberOfMessagesDelayed",
                ],
            )["Attributes"]
            if any(int(v) for v in attrs.values()):
                return False
        return True

    def _wrap_retry_senders(self) -> None:
        """Count retry sends and remember each one's delay (SQS does not return it)."""
        for name, runtime in self.runtimes.items():
            queue = runtime.retry_queue
            assert queue is not None
            original = queue.send

            def send(attempt: Any, delay_s: float, _orig: Any = original, _name: str = name) -> None:
                _orig(attempt, delay_s)
                self._sent_retries[_name] = self._sent_retries.get(_name, 0) + 1
                self.figures.sqs_requests["send"] += 1
                self._delays[attempt.key] = float(round(delay_s))

            queue.send = send  # type: ignore[method-assign]
        self._delays: dict[str, float] = {}
