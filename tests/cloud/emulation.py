"""A discrete-event emulation of a deployed run, wired from the synthesized template.

What is real: the bucket (moto S3) and its notifications as moto writes them, the
queues (moto SQS: delays, visibility timeouts, receive counts, redrive to a DLQ, all
on a virtual clock), Secrets Manager (moto), the handlers (each function's entrypoint
module, cold-started once per function under the template's environment) and Hermes
(the simulator). What is modelled, from the template's numbers (``wiring.Wiring``):

- **Lambda's asynchronous path** for a function the bucket notifies: its internal
  queue (moto delivers the notification to a hidden queue; the event is invoked when
  the function has a free slot of its reserved concurrency, oldest first), its retries
  on a function error (``MaximumRetryAttempts``, 1 then 2 minutes apart), its event age
  (``MaximumEventAgeInSeconds``) and the on-failure record it sends to the destination
  queue (``requestContext.approximateInvokeCount``, ``condition``, the error). No
  throttle back-off: the best case for this path.
- **Event source mappings**: whenever a mapping has fewer invocations in flight than its
  ``MaximumConcurrency``, it receives a batch (``BatchSize``) with the queue's visibility
  timeout; if the function is at its reserved concurrency the receive is *throttled*
  (counted, and the message stays invisible for the visibility timeout, as on AWS).
  After the invocation it deletes the messages unless they failed (``batchItemFailures``
  or a function error). A function without reserved concurrency (the dead-letter
  recorder) draws on the account's pool: never throttled, its mappings capped at
  ``UNRESERVED_POLLERS`` batches in flight (Lambda's starting concurrency for a queue).
- **Dead letters**: moto moves a message whose receives reached its queue's
  ``maxReceiveCount`` to the DLQ (receive count and message id kept); the recorder's
  mappings on the DLQs hand it to the recorder (``fanout_aws.dead_letters``), which
  writes the task's failure record under its own role.
- **A function error** is the handler raising anything (a process that dies is
  ``ProcessDied``, raised from the call that reads the task object; a timeout the same
  with Lambda's timeout message).
- **Time.** Each invocation takes a fixed virtual duration per stage (``task_s``, plus a
  deterministic per-key spread so a stage does not move in lockstep); its effects happen
  when it ends. Idle mappings poll every ``poll_s``.
- **IAM.** Every AWS call a handler makes is checked against its function's role from
  the template (action, resource ARN, ``s3:prefix``); a denied call is recorded and
  answered AccessDenied, as AWS would. A GET or HEAD of a missing key is answered 403,
  not 404, unless the role may ``s3:ListBucket`` with no ``s3:prefix`` (S3's rule); a
  stage function meeting that is recorded (``stage_missing_key_403``).
- **DynamoDB** (moto): each ``AWS::DynamoDB::Table`` of the template (pacing
  ``shared``'s budget table) is created with the template's key schema, attribute
  definitions and billing mode; ``Ref`` resolves to its moto name, ``Fn::GetAtt Arn`` to
  its ARN, and each call is checked against the role on the table's ARN. The budget
  item's times are the handlers' wall clock, not the virtual one (at the lifted rate its
  waits are milliseconds).

Two deliberate departures from the template: the functions' ``hermes_url`` points at
the simulator, and the pacing rate is lifted (time is virtual; the rate is not what this
emulates, though pacing ``shared`` still makes every one of its budget-table calls; its
rate is lifted to the most that pacing allows, ``SHARED_MAX_RATE``).
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import itertools
import json
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import botocore.client
from botocore.exceptions import ClientError

from fanout_aws.config import ENV_API, table_from_environ
from fanout_aws.dead_letters import dead_letter_handler
from fanout_aws.stage_handler import handler_for
from fanout_core import keys
from fanout_core.settings import (
    SHARED_MAX_RATE,
    environment_from_json,
    environment_to_json,
    parse_environment,
)
from fanout_core.stages import STAGES, TASK_SUFFIX, StageTable
from stacks.constructs.dead_letters import HANDLER as DEAD_LETTER_HANDLER

from .wiring import (
    ACCOUNT,
    REGION,
    FunctionSpec,
    MappingSpec,
    Names,
    RolePolicy,
    Wiring,
    resolve,
    table_arn,
)

ASYNC_RETRY_DELAYS_S = (60.0, 120.0)
"""Lambda's waits before its first and second retry of a failed asynchronous event."""
UNRESERVED_POLLERS = 5
"""Batches in flight for a mapping with no maximum concurrency on a function with no
reservation: Lambda starts an SQS mapping at 5 concurrent invocations."""
RECORDER_S = 1.0
"""Virtual seconds per recorder invocation (two S3 calls per message)."""


class VirtualClock:
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


class ProcessDied(BaseException):
    """The function's process dies mid-task (out of memory, a segfault): nothing the
    handler can catch; Lambda reports ``Runtime.ExitError``."""


class FakeContext:
    def __init__(self, function_name: str, remaining_ms: int) -> None:
        self.function_name = function_name
        self.aws_request_id = "emulated"
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def lambda_sqs_event(messages: list[Mapping[str, Any]], queue_arn: str) -> dict[str, Any]:
    """Received SQS messages as Lambda's event source mapping hands them to a function."""
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": dict(m.get("Attributes", {})),
                "messageAttributes": {},
                "md5OfBody": m.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": REGION,
            }
            for m in messages
        ]
    }


@dataclass
class Faults:
    crash_keys: frozenset[str] = frozenset()
    """Task keys whose every invocation dies (``ProcessDied``) reading the task object."""
    crash_kind: str = "crash"
    """``crash`` (Runtime.ExitError) or ``timeout`` (Lambda's "Task timed out")."""
    duplicate_notifications: bool = False
    """Every S3 notification is delivered twice."""
    slow_down_first: int = 0
    """The first this many leaf tasks to run each get S3 ``SlowDown`` (503) reading their
    task object on their first attempt: a transient failure, so a retry through the queue."""
    refused_records: frozenset[str] = frozenset()
    """Task keys whose failure record S3 refuses (500 ``InternalError``) to every stage
    function (the stage's and its retry consumer's): no receive can record the task, so
    its message reaches the DLQ. The recorder's own writes are not refused."""


@dataclass
class FunctionFigures:
    reserved: int | None
    invocations: int = 0
    errors: int = 0
    peak_in_flight: int = 0
    throttled_receives: int = 0


@dataclass
class Figures:
    engine: str
    makespan_s: float = 0.0
    tasks: int = 0
    retries_sent: int = 0
    """Retry messages the handlers sent to a retry queue."""
    retry_lateness_s: list[float] = field(default_factory=list)
    """Per retry message: its first delivery minus the time its delay made it due."""
    max_wait_s: float = 0.0
    """Longest a task's notification waited in a stage queue before its first delivery."""
    on_failure_records: int = 0
    event_age_exceeded: int = 0
    failure_records: int = 0
    refused_record_writes: int = 0
    """Failure-record writes refused to a stage function (``Faults.refused_records``)."""
    dead_lettered: int = 0
    """Distinct messages that reached a DLQ (received there by the recorder)."""
    dead_letter_records: int = 0
    """Failure records the recorder wrote."""
    dead_letters: int = 0
    """Messages left in the DLQs when the run ended."""
    denied_calls: list[str] = field(default_factory=list)
    stage_missing_key_403: list[str] = field(default_factory=list)
    """GETs and HEADs of missing keys a stage function got 403 for (its role may not list
    the whole bucket): each costs ``S3Storage`` a listing more."""
    budget_writes: int = 0
    """``dynamodb:UpdateItem`` calls the handlers made on the budget table (pacing
    ``shared``), a failed condition included: DynamoDB bills those too."""
    functions: dict[str, FunctionFigures] = field(default_factory=dict)

    @property
    def max_retry_lateness_s(self) -> float:
        return max(self.retry_lateness_s, default=0.0)

    @property
    def throttled_receives(self) -> int:
        return sum(f.throttled_receives for f in self.functions.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "tasks": self.tasks,
            "retries_through_the_queue": self.retries_sent,
            "max_retry_lateness_s": round(self.max_retry_lateness_s, 1),
            "max_wait_s": round(self.max_wait_s),
            "on_failure_records": self.on_failure_records,
            "event_age_exceeded": self.event_age_exceeded,
            "failure_records": self.failure_records,
            "refused_record_writes": self.refused_record_writes,
            "dead_lettered": self.dead_lettered,
            "dead_letter_records": self.dead_letter_records,
            "dead_letters": self.dead_letters,
            "throttled_receives": self.throttled_receives,
            "budget_writes": self.budget_writes,
            "makespan_s": round(self.makespan_s),
            "functions": {
                k: {
                    "reserved": f.reserved,
                    "invocations": f.invocations,
                    "errors": f.errors,
                    "peak": f.peak_in_flight,
                }
                for k, f in self.functions.items()
            },
        }


@dataclass
class _AsyncEvent:
    event: dict[str, Any]
    enqueued: float
    due: float
    invokes: int = 0


@dataclass
class _Function:
    spec: FunctionSpec
    stage: str | None
    """None for the dead-letter recorder."""
    environment: dict[str, str]
    handler: Callable[[Any, Any], Any]
    policy: RolePolicy
    in_flight: int = 0
    pending: list[_AsyncEvent] = field(default_factory=list)
    hidden_queue: str | None = None


class Emulation:
    def __init__(
        self,
        wiring: Wiring,
        *,
        engine: str,
        s3: Any,
        sqs: Any,
        secrets: Any,
        dynamodb: Any = None,
        clock: VirtualClock,
        bucket: str,
        hermes_url: str,
        token: str | None,
        task_s: Mapping[str, float],
        faults: Faults | None = None,
        hooks: list[tuple[float, Callable[[], None]]] | None = None,
        poll_s: float = 1.0,
        horizon_s: float = 3 * 24 * 3600,
        bundle_root: Path | None = None,
    ) -> None:
        """``bundle_root``: where the bundle's own files (a described API's JSON, at the
        template's relative ``FANOUT_API``) are; None: the functions read ``lambdas/``."""
        self.wiring, self.s3, self.sqs, self.clock = wiring, s3, sqs, clock
        self.task_s, self.faults, self.poll_s, self.horizon_s = task_s, faults or Faults(), poll_s, horizon_s
        self.hooks = sorted(hooks or [], key=lambda h: h[0])
        self.figures = Figures(engine=engine)
        self.secret_arns: dict[str, str] = {}
        urls = {}
        for qid in wiring.queues:
            urls[qid] = sqs.create_queue(QueueName=qid[:80])["QueueUrl"]
        tables = {}
        for tid, t in wiring.tables.items():
            assert dynamodb is not None, "the template has a DynamoDB table: pass a dynamodb client"
            tables[tid] = dynamodb.create_table(
                TableName=tid[:255],
                KeySchema=list(t.key_schema),
                AttributeDefinitions=list(t.attribute_definitions),
                BillingMode=t.billing_mode,
            )["TableDescription"]["TableName"]
        self.dynamodb = dynamodb
        self.names = Names(bucket_id=wiring.bucket_id, bucket=bucket, queue_urls=urls, table_names=tables)
        for qid, q in wiring.queues.items():
            attrs = {"VisibilityTimeout": str(q.visibility_s), "MessageRetentionPeriod": str(q.retention_s)}
            if q.dlq is not None:
                attrs["RedrivePolicy"] = json.dumps(
                    {
                        "deadLetterTargetArn": self.names.queue_arn(q.dlq),
                        "maxReceiveCount": str(q.max_receives),
                    }
                )
            sqs.set_queue_attributes(QueueUrl=urls[qid], Attributes=attrs)
        policies = wiring.bind(self.names)
        self.functions: dict[str, _Function] = {}
        self.table: StageTable = STAGES
        """The stage table the functions run (of the description their FANOUT_API names)."""
        for fid, spec in wiring.functions.items():
            env = {k: str(resolve(v, self.names)) for k, v in spec.environment.items()}
            api_path = env.get(ENV_API, "")
            if bundle_root is not None and api_path and not Path(api_path).is_absolute():
                env[ENV_API] = str(bundle_root / api_path)
            if spec.recorder:
                assert spec.handler == DEAD_LETTER_HANDLER and spec.invoke_config is None
                self.functions[fid] = _Function(
                    spec=spec,
                    stage=None,
                    environment=env,
                    handler=dead_letter_handler(),
                    policy=policies[spec.role_id],
                )
                self.figures.functions[fid] = FunctionFigures(reserved=spec.reserved)
                continue
            self.table = table_from_environ(env)
            settings = environment_from_json(env["FANOUT_ENV_NAME"], env["FANOUT_SETTINGS"], self.table.names)
            raw = json.loads(environment_to_json(settings))
            # shared's bound is capped by what one DynamoDB item takes; its waits are then
            # real milliseconds (the budget is on the wall clock), a fraction of a second a run
            rate = SHARED_MAX_RATE if settings.pacing == "shared" else 1e6
            raw.update(hermes_url=hermes_url, hermes_rate_limit=rate)
            reparsed = parse_environment(settings.name, raw, self.table.names)
            env["FANOUT_SETTINGS"] = environment_to_json(reparsed)
            if token is not None and not env.get("HERMES_TOKEN_SECRET"):
                env["HERMES_TOKEN"] = token
            stage = env["FANOUT_STAGE"]
            assert self.table.named(stage).handler == spec.handler
            self.functions[fid] = _Function(
                spec=spec,
                stage=stage,
                environment=env,
                handler=handler_for(stage),
                policy=policies[spec.role_id],
            )
            self.figures.functions[fid] = FunctionFigures(reserved=spec.reserved)
        self.settings = settings
        configs = []
        for n in wiring.notifications:
            if n.queue is not None:
                arn = self.names.queue_arn(n.queue)
            else:
                assert n.function is not None
                fn = self.functions[n.function]
                fn.hidden_queue = sqs.create_queue(QueueName=f"lambda-async-{n.function}"[:80])["QueueUrl"]
                arn = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{fn.hidden_queue.rsplit('/', 1)[-1]}"
            rules = [{"Name": "prefix", "Value": n.prefix}, {"Name": "suffix", "Value": n.suffix}]
            configs.append(
                {"QueueArn": arn, "Events": ["s3:ObjectCreated:*"], "Filter": {"Key": {"FilterRules": rules}}}
            )
        s3.put_bucket_notification_configuration(
            Bucket=bucket, NotificationConfiguration={"QueueConfigurations": configs}
        )
        for fn in self.functions.values():
            if fn.hidden_queue:
                sqs.purge_queue(QueueUrl=fn.hidden_queue)  # S3 sends no test event to a function
        self._current: _Function | None = None
        self._delays: dict[tuple[str, int], float] = {}
        self._seen: set[str] = set()
        self._dead_lettered: set[str] = set()
        self._dlqs = {q.dlq for q in wiring.queues.values() if q.dlq}
        self._slowed: set[str] = set()
        self._seq = itertools.count()

    # -- static checks of the wiring ----------------------------------------------

    def wiring_problems(self) -> list[str]:
        """What the services themselves would refuse: S3 may not invoke a function or send
        to a queue, a mapping's role may not consume its queue, a role may not send its
        on-failure records."""
        problems = []
        bucket_arn = f"arn:aws:s3:::{self.names.bucket}"
        for n in self.wiring.notifications:
            if n.function is not None:
                ok = [
                    p
                    for p in self.wiring.s3_invoke_permissions
                    if p[0] == n.function and resolve(p[1], self.names) == bucket_arn
                ]
                if not ok:
                    problems.append(f"S3 may not invoke {n.function}")
            if n.queue is not None:
                statements = self.wiring.queue_policies.get(n.queue, ())
                ok = [
                    s
                    for s in statements
                    if s["Effect"] == "Allow"
                    and s.get("Principal") == {"Service": "s3.amazonaws.com"}
                    and resolve(s["Condition"]["ArnEquals"]["aws:SourceArn"], self.names) == bucket_arn
                ]
                if not ok:
                    problems.append(f"S3 may not send to {n.queue}")
        for m in self.wiring.mappings:
            policy = self.functions[m.function].policy
            arn = self.names.queue_arn(m.queue)
            for action in (
                "sqs:ReceiveMessage",
                "sqs:DeleteMessage",
                "sqs:GetQueueAttributes",
                "sqs:ChangeMessageVisibility",
            ):
                if not policy.allows(action, arn):
                    problems.append(f"{m.function}'s role lacks {action} on {m.queue}")
        for fid, fn in self.functions.items():
            ic = fn.spec.invoke_config
            if (
                ic
                and ic.on_failure_queue
                and not fn.policy.allows("sqs:SendMessage", self.names.queue_arn(ic.on_failure_queue))
            ):
                problems.append(f"{fid}'s role may not send its on-failure records")
        return problems

    # -- IAM, call by call ---------------------------------------------------------

    def _request(self, service: str, op: str, params: Mapping[str, Any]) -> tuple[str, str, dict[str, str]]:
        if service == "s3":
            bucket = params.get("Bucket", "")
            obj = f"arn:aws:s3:::{bucket}/{params.get('Key', '')}"
            if op in ("GetObject", "HeadObject"):
                return "s3:GetObject", obj, {}
            if op in ("ListObjectsV2", "ListObjects"):
                return "s3:ListBucket", f"arn:aws:s3:::{bucket}", {"s3:prefix": params.get("Prefix", "")}
            return f"s3:{op}", obj if "Key" in params else f"arn:aws:s3:::{bucket}", {}
        if service == "sqs":
            name = str(params.get("QueueUrl", "")).rsplit("/", 1)[-1]
            action = "sqs:SendMessage" if op.startswith("SendMessage") else f"sqs:{op}"
            return action, f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}", {}
        if service == "secretsmanager":
            sid = str(params.get("SecretId", ""))
            arn = self.secret_arns.get(sid, f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{sid}-AbCdEf")
            return f"secretsmanager:{op}", arn, {}
        if service == "dynamodb":
            return f"dynamodb:{op}", table_arn(str(params.get("TableName", ""))), {}
        return f"{service}:{op}", "*", {}

    @contextmanager
    def checked_calls(self, monkeypatch: Any) -> Iterator[None]:
        """Every botocore call made while a handler runs is held against its role; the
        call that reads a crashing task's object kills the process."""
        original = botocore.client.BaseClient._make_api_call
        emulation = self

        def call(client: Any, op: str, params: dict[str, Any]) -> Any:
            fn = emulation._current
            if fn is None:
                return original(client, op, params)
            service = client.meta.service_model.service_name
            action, resource, context = emulation._request(service, op, params)
            if not fn.policy.allows(action, resource, context):
                emulation.figures.denied_calls.append(
                    f"{fn.spec.logical_id}: {action} {resource} {context or ''}"
                )
                raise ClientError(
                    {
                        "Error": {"Code": "AccessDenied", "Message": "emulated IAM"},
                        "ResponseMetadata": {"HTTPStatusCode": 403},
                    },
                    op,
                )
            key = params.get("Key")
            if op in ("GetObject", "HeadObject") and emulation._missing_answers_403(
                original, client, fn, params
            ):
                if fn.stage is not None:
                    emulation.figures.stage_missing_key_403.append(f"{fn.spec.logical_id}: {op} {key}")
                code = "AccessDenied" if op == "GetObject" else "403"  # a HEAD's answer has no body
                raise ClientError(
                    {
                        "Error": {"Code": code, "Message": "emulated"},
                        "ResponseMetadata": {"HTTPStatusCode": 403},
                    },
                    op,
                )
            if op == "GetObject" and key in emulation.faults.crash_keys:
                raise ProcessDied(key)
            if op == "PutObject" and fn.stage is not None and key in emulation._refused_record_keys:
                emulation.figures.refused_record_writes += 1
                raise ClientError(
                    {
                        "Error": {"Code": "InternalError", "Message": "emulated"},
                        "ResponseMetadata": {"HTTPStatusCode": 500},
                    },
                    op,
                )
            if op == "GetObject" and emulation._slow_down(str(key)):
                raise ClientError(
                    {
                        "Error": {"Code": "SlowDown", "Message": "emulated"},
                        "ResponseMetadata": {"HTTPStatusCode": 503},
                    },
                    op,
                )
            if op == "UpdateItem":  # counted before the call: a failed condition is billed too
                emulation.figures.budget_writes += 1
            result = original(client, op, params)
            if op == "PutObject" and fn.spec.recorder:
                emulation.figures.dead_letter_records += 1
            if op == "SendMessage":
                body = json.loads(params["MessageBody"])
                if "fanout_retry" in body:
                    r = body["fanout_retry"]
                    emulation._delays[(r["task_key"], r["attempt"])] = float(params.get("DelaySeconds", 0))
                    emulation.figures.retries_sent += 1
            return result

        monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", call)
        yield

    def _missing_answers_403(
        self, original: Callable[..., Any], client: Any, fn: _Function, params: Mapping[str, Any]
    ) -> bool:
        """S3's rule: a GET or HEAD of a missing key answers 404 only to a caller that may
        ``s3:ListBucket`` the bucket for a request without an ``s3:prefix``, else 403."""
        bucket = str(params.get("Bucket", ""))
        if fn.policy.allows("s3:ListBucket", f"arn:aws:s3:::{bucket}", {}):
            return False
        try:
            original(client, "HeadObject", {"Bucket": bucket, "Key": params.get("Key", "")})
        except ClientError:
            return True
        return False

    @functools.cached_property
    def _refused_record_keys(self) -> frozenset[str]:
        return frozenset(keys.failed_key(k) for k in self.faults.refused_records)

    def _slow_down(self, key: str) -> bool:
        if not key.startswith(self.table.leaf.input_prefix) or not key.endswith(TASK_SUFFIX):
            return False
        if key in self._slowed:
            return False
        if len(self._slowed) < self.faults.slow_down_first:
            self._slowed.add(key)
            return True
        return False

    # -- invoking ------------------------------------------------------------------

    def _duration(self, fn: _Function, task_keys: list[str]) -> float:
        if fn.stage is None:
            return RECORDER_S
        base = self.task_s[fn.stage]
        if any(k in self.faults.crash_keys for k in task_keys) and self.faults.crash_kind == "timeout":
            return float(fn.spec.timeout_s)
        spread = int(hashlib.sha256("".join(task_keys).encode()).hexdigest()[:4], 16) % 100 / 100
        return base * (1 + 0.5 * spread)

    def _invoke(self, fn: _Function, event: Any) -> tuple[BaseException | None, Any]:
        saved = dict(os.environ)
        os.environ.update(fn.environment)
        self._current = fn
        figures = self.figures.functions[fn.spec.logical_id]
        figures.invocations += 1
        try:
            return None, fn.handler(event, FakeContext(fn.spec.logical_id, fn.spec.timeout_s * 1000))
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # a function error, as Lambda counts it
            figures.errors += 1
            return exc, None
        finally:
            self._current = None
            os.environ.clear()
            os.environ.update(saved)

    def _error_payload(self, fn: _Function, error: BaseException) -> dict[str, Any]:
        if isinstance(error, ProcessDied) and self.faults.crash_kind == "timeout":
            return {
                "errorMessage": f"Task timed out after {fn.spec.timeout_s:.2f} seconds",
                "errorType": "Sandbox.Timedout",
            }
        if isinstance(error, ProcessDied):
            return {
                "errorMessage": "Runtime exited with error: signal: killed",
                "errorType": "Runtime.ExitError",
            }
        return {"errorMessage": str(error)[:500], "errorType": type(error).__name__}

    def _on_failure(
        self, fn: _Function, ev: _AsyncEvent, condition: str, error: BaseException | None
    ) -> None:
        ic = fn.spec.invoke_config
        assert ic is not None
        self.figures.on_failure_records += 1
        if condition == "EventAgeExceeded":
            self.figures.event_age_exceeded += 1
        if ic.on_failure_queue is None:
            return
        record = {
            "version": "1.0",
            "timestamp": "2027-01-15T08:00:00.000Z",
            "requestContext": {
                "requestId": f"emulated-{next(self._seq)}",
                "functionArn": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{fn.spec.logical_id}:$LATEST",
                "condition": condition,
                "approximateInvokeCount": ev.invokes,
            },
            "requestPayload": ev.event,
            "responseContext": {
                "statusCode": 200,
                "executedVersion": "$LATEST",
                "functionError": "Unhandled",
            },
            "responsePayload": self._error_payload(fn, error) if error else None,
        }
        self.sqs.send_message(
            QueueUrl=self.names.queue_urls[ic.on_failure_queue], MessageBody=json.dumps(record)
        )

    @staticmethod
    def _keys(event: Any) -> list[str]:
        from fanout_aws.events import parse_event

        return [a.key for a in parse_event(event).attempts]

    def _sent_at(self, message: Mapping[str, Any]) -> float:
        return int(message["Attributes"]["SentTimestamp"]) / 1000.0 - VirtualClock.EPOCH

    # -- the run -------------------------------------------------------------------

    def run(self) -> Figures:
        ends: list[tuple[float, int, str, Any]] = []
        mapping_in_flight = [0] * len(self.wiring.mappings)
        while self.clock.t < self.horizon_s:
            while self.hooks and self.hooks[0][0] <= self.clock.t:
                self.hooks.pop(0)[1]()
            self._pull_notifications()
            for fn in self.functions.values():
                ic = fn.spec.invoke_config
                while ic is not None and fn.in_flight < (fn.spec.reserved or 0):
                    due = [e for e in fn.pending if e.due <= self.clock.t]
                    if not due:
                        break
                    ev = min(due, key=lambda e: (e.enqueued, e.due))
                    fn.pending.remove(ev)
                    if self.clock.t - ev.enqueued > ic.max_event_age_s:
                        self._on_failure(fn, ev, "EventAgeExceeded", None)
                        continue
                    self._start(fn, ends, ("async", ev))
            for index, m in enumerate(self.wiring.mappings):
                fn = self.functions[m.function]
                cap = m.max_concurrency or fn.spec.reserved or UNRESERVED_POLLERS
                while mapping_in_flight[index] < cap:
                    got = self.sqs.receive_message(
                        QueueUrl=self.names.queue_urls[m.queue],
                        MaxNumberOfMessages=m.batch_size,
                        WaitTimeSeconds=0,
                        AttributeNames=["All"],
                    ).get("Messages", [])
                    if not got:
                        break
                    if fn.spec.reserved is not None and fn.in_flight >= fn.spec.reserved:
                        self.figures.functions[m.function].throttled_receives += 1
                        break  # stays invisible for the visibility timeout, counted as a receive
                    self._observe(m, got)
                    mapping_in_flight[index] += 1
                    self._start(fn, ends, ("sqs", index, got))
            if not ends and self._idle():
                break
            # Nothing changes between events: skip to the next end, due event, hook or
            # message becoming visible (at least one poll ahead).
            next_poll = max(self.clock.t + self.poll_s, self._next_wake(ends))
            if ends and ends[0][0] <= next_poll:
                end, _, fid, source = heapq.heappop(ends)
                self.clock.t = end
                self._finish(self.functions[fid], source)
                self.functions[fid].in_flight -= 1
                if source[0] == "sqs":
                    mapping_in_flight[source[1]] -= 1
            else:
                self.clock.t = next_poll
        return self._close()

    def _next_wake(self, ends: list[Any]) -> float:
        from moto.sqs.models import sqs_backends

        times = [ends[0][0]] if ends else []
        times += [e.due for fn in self.functions.values() for e in fn.pending]
        times += [h[0] for h in self.hooks[:1]]
        for queue in sqs_backends[ACCOUNT][REGION].queues.values():
            for m in queue._messages:
                times.append(max(m.visible_at, m.delayed_until) / 1000.0 - VirtualClock.EPOCH)
        later = [t for t in times if t > self.clock.t]
        return min(later, default=self.clock.t + self.poll_s)

    def _start(self, fn: _Function, ends: list[Any], source: tuple[Any, ...]) -> None:
        fn.in_flight += 1
        f = self.figures.functions[fn.spec.logical_id]
        f.peak_in_flight = max(f.peak_in_flight, fn.in_flight)
        event = source[1].event if source[0] == "async" else lambda_sqs_event(source[2], "")
        task_keys = self._keys(event)
        heapq.heappush(
            ends, (self.clock.t + self._duration(fn, task_keys), next(self._seq), fn.spec.logical_id, source)
        )

    def _observe(self, m: MappingSpec, messages: list[dict[str, Any]]) -> None:
        if m.queue in self._dlqs:
            self._dead_lettered.update(message["MessageId"] for message in messages)
            self.figures.dead_lettered = len(self._dead_lettered)
            return
        for message in messages:
            body = json.loads(message["Body"])
            if message["Attributes"].get("ApproximateReceiveCount") != "1":
                continue
            if "fanout_retry" in body:
                r = body["fanout_retry"]
                delay = self._delays.get((r["task_key"], r["attempt"]), 0.0)
                self.figures.retry_lateness_s.append(self.clock.t - (self._sent_at(message) + delay))
            elif body.get("Records"):
                self.figures.max_wait_s = max(self.figures.max_wait_s, self.clock.t - self._sent_at(message))
            if (
                body.get("Records")
                and self.faults.duplicate_notifications
                and message["MessageId"] not in self._seen
            ):
                self._seen.add(message["MessageId"])
                dup = self.sqs.send_message(
                    QueueUrl=self.names.queue_urls[m.queue], MessageBody=message["Body"]
                )
                self._seen.add(dup["MessageId"])

    def _pull_notifications(self) -> None:
        for fn in self.functions.values():
            if fn.hidden_queue is None:
                continue
            while True:
                got = self.sqs.receive_message(
                    QueueUrl=fn.hidden_queue,
                    MaxNumberOfMessages=10,
                    WaitTimeSeconds=0,
                    AttributeNames=["All"],
                ).get("Messages", [])
                if not got:
                    break
                for message in got:
                    sent = self._sent_at(message)
                    copies = 2 if self.faults.duplicate_notifications else 1
                    for _ in range(copies):
                        fn.pending.append(_AsyncEvent(json.loads(message["Body"]), enqueued=sent, due=sent))
                    self.sqs.delete_message(QueueUrl=fn.hidden_queue, ReceiptHandle=message["ReceiptHandle"])

    def _finish(self, fn: _Function, source: tuple[Any, ...]) -> None:
        if source[0] == "async":
            ev: _AsyncEvent = source[1]
            ev.invokes += 1
            error, _ = self._invoke(fn, ev.event)
            ic = fn.spec.invoke_config
            assert ic is not None
            if error is not None:
                if ev.invokes <= ic.max_retries:
                    ev.due = self.clock.t + ASYNC_RETRY_DELAYS_S[ev.invokes - 1]
                    fn.pending.append(ev)
                else:
                    self._on_failure(fn, ev, "RetriesExhausted", error)
            return
        _, index, messages = source
        m = self.wiring.mappings[index]
        url = self.names.queue_urls[m.queue]
        error, result = self._invoke(fn, lambda_sqs_event(messages, self.names.queue_arn(m.queue)))
        if error is not None:
            return  # every message of the batch comes back after the visibility timeout
        failed = (
            {f["itemIdentifier"] for f in (result or {}).get("batchItemFailures", [])}
            if m.report_failures
            else set()
        )
        for message in messages:
            if message["MessageId"] not in failed:
                self.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])

    def _idle(self) -> bool:
        if any(fn.pending for fn in self.functions.values()):
            return False
        consumed = {m.queue for m in self.wiring.mappings}
        for qid, url in self.names.queue_urls.items():
            if qid in self._dlqs and qid not in consumed:
                continue  # nothing would ever take it out
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

    def _close(self) -> Figures:
        from fanout_aws.s3_storage import S3Storage

        self.figures.makespan_s = self.clock.t
        storage = S3Storage(self.names.bucket, client=self.s3)
        self.figures.tasks = sum(
            1 for s in self.table for k in storage.list(s.input_prefix) if k.endswith(TASK_SUFFIX)
        )
        self.figures.failure_records = sum(1 for _ in storage.list("failed/"))
        for q in self._dlqs:
            attrs = self.sqs.get_queue_attributes(
                QueueUrl=self.names.queue_urls[q], AttributeNames=["ApproximateNumberOfMessages"]
            )["Attributes"]
            self.figures.dead_letters += int(attrs["ApproximateNumberOfMessages"])
        return self.figures
