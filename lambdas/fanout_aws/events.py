"""Everything that arrives at a stage handler, decoded in one place: typed task
attempts in, typed refusals for everything else. Nothing here reads or writes.

What a stage function can be invoked with:

- an S3 notification (``{"Records": [...]}``, ``eventSource: aws:s3``): each
  ``ObjectCreated`` record is a first try of the task at its key;
- the ``s3:TestEvent`` S3 sends when a notification is configured (nothing to do);
- a Step Functions child's batch (engine ``stepfunctions``, ``{"fanout_sfn": {"Bucket",
  "Items": [{"Key"}, ...], "RetryCount", "StartedAt"}}``): each item is a try of the task
  at its key, numbered by the child's retries; or, after the child's retries ran out on
  a crash, the same batch with ``"Attempts"`` and the ``"Crash"`` Step Functions caught;
- an SQS batch from the stage's retry queue, whose bodies are one of
  - our own retry message (``{"fanout_retry": {"task_key", "attempt",
    "first_attempt_at"}}``, written by ``fanout_aws.retry_queue``),
  - a Lambda on-failure destination record (``requestPayload`` is the event Lambda
    gave up on, ``requestContext.approximateInvokeCount`` the tries it made), or
  - an S3 notification relayed through a queue.

S3 URL-encodes object keys in notifications, form-style: a space arrives as ``+``, a
``+`` as ``%2B``, and moto also encodes ``/`` as ``%2F``. A key used without
``unquote_plus`` names an object that does not exist, or worse, a different one, so
every key from an event goes through ``decode_event_key``. A Step Functions batch is
not a notification: its keys come from ``ListObjectsV2`` as they are, and are not
decoded (a task key's segments hold ``%``).

Decoding is two pure steps. ``parse_event`` checks only the shape: it never raises,
and whatever it cannot read becomes a ``Refusal`` with a reason. ``screen`` then
holds each attempt against the function it arrived at (``Scope``): its bucket, its
stage, its ``max_attempts``. ``decode_event`` is both, and is what the handler calls.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal
from urllib.parse import unquote_plus

from fanout_aws.log_fields import cut, shown
from fanout_core import strict_json
from fanout_core.errors import FanoutError
from fanout_core.failures import now_iso
from fanout_core.retry import Attempt
from fanout_core.settings import SFN_MAX_BATCH
from fanout_core.stages import STAGES, Stage, StageTable

S3_SOURCE = "aws:s3"
SQS_SOURCE = "aws:sqs"
TEST_EVENT = "s3:TestEvent"
CREATED_PREFIX = "ObjectCreated:"
RETRY_MARKER = "fanout_retry"
"""The one top-level field of a retry message's body."""
MAX_KEY_BYTES = 1024
"""S3's longest key (UTF-8): a longer one is no object, so no task."""
MAX_COUNT = 1000
"""No attempt, receive or invoke count read from an event is believed past this (Lambda
tries 3 times, a queue receives ``max_attempts`` + 1 times); a larger one is malformed."""
SFN_MARKER = "fanout_sfn"
"""The one top-level field of a Step Functions child's payload (``stacks.constructs.sfn_engine``)."""
SFN_CRASH_CONDITION = "StepFunctionsRetriesExhausted"
"""The condition a crash record names when a child's retries ran out."""

Source = Literal["s3", "retry", "on-failure", "sfn"]


@dataclass(frozen=True)
class S3Object:
    """One created object, key decoded to exactly what ``GetObject`` needs."""

    bucket: str
    key: str
    size: int
    event_name: str
    """As S3 writes it, e.g. ``ObjectCreated:Put``."""
    sequencer: str
    """Hex string; for one key, a later write has a greater value (compare after
    left-padding to equal length). Empty if the record carried none."""
    event_time: str
    """ISO-8601 as S3 writes it, e.g. ``2024-05-01T12:00:00.123Z``."""


@dataclass(frozen=True, kw_only=True)
class LambdaReport:
    """What an on-failure destination record says Lambda gave up on, and why."""

    condition: str
    """``RetriesExhausted``, ``EventAgeExceeded``, or another Lambda names."""
    invoke_count: int
    """``requestContext.approximateInvokeCount``: how often Lambda invoked the function."""
    error_type: str | None
    """``responsePayload.errorType``: ``InvocationFailed`` (our bookkeeping failed),
    ``Runtime.ExitError``, ``Sandbox.Timedout``, ``Runtime.OutOfMemory``, ... ; None
    when the process died before it could say."""
    error_message: str | None
    function_error: str | None
    """``responseContext.functionError`` (``Unhandled``); None: the function never ran
    to an answer (event age exceeded while throttled)."""

    @property
    def is_bookkeeping(self) -> bool:
        """Our own handler raised (S3 or SQS failed while recording): worth another try."""
        return self.error_type == INVOCATION_FAILED

    @property
    def error_kind(self) -> str:
        """``configuration`` when the function could not even start its work, else
        ``crashed`` (died, timed out, ran out of memory, was stopped)."""
        return "configuration" if self.error_type in CONFIGURATION_ERROR_TYPES else "crashed"

    @property
    def never_ran(self) -> bool:
        """Lambda dropped the event unrun (throttled past its maximum age)."""
        return (
            self.condition == EVENT_AGE_EXCEEDED and self.function_error is None and self.error_type is None
        )


INVOCATION_FAILED = "InvocationFailed"
"""``fanout_aws.stage_handler.InvocationFailed``'s name, as Lambda reports it."""
EVENT_AGE_EXCEEDED = "EventAgeExceeded"
CONFIGURATION_ERROR_TYPES = frozenset(
    {
        "SettingsError",
        "Runtime.ImportModuleError",
        "Runtime.HandlerNotFound",
        "Runtime.UserCodeSyntaxError",
    }
)
"""Error types that say the function is set up wrong, not that a task broke it."""


def lambda_report(doc: Mapping[str, Any]) -> LambdaReport:
    """The report in an on-failure destination record (fields it lacks left empty)."""
    context = doc.get("requestContext")
    context = context if isinstance(context, Mapping) else {}
    response = doc.get("responseContext")
    response = response if isinstance(response, Mapping) else {}
    payload = doc.get("responsePayload")
    payload = payload if isinstance(payload, Mapping) else {}

    count = context.get("approximateInvokeCount")
    return LambdaReport(
        condition=_text(context.get("condition"), 100) or "unknown",
        invoke_count=min(count, MAX_COUNT) if type(count) is int and count >= 0 else 0,
        error_type=_text(payload.get("errorType"), 200),
        error_message=_text(payload.get("errorMessage")),
        function_error=_text(response.get("functionError"), 100),
    )


@dataclass(frozen=True, kw_only=True)
class TaskAttempt:
    """One try of one task that an event asks for."""

    attempt: Attempt
    source: Source
    """``s3``: a notification (a first try); ``retry``: our retry message;
    ``on-failure``: a Lambda on-failure destination record."""
    message_id: str | None = None
    """The SQS message it came in, for ``batchItemFailures``; None if not from SQS."""
    s3: S3Object | None = None
    """The notification record it came from, if it came from one."""
    receives: int = 1
    """SQS's ``ApproximateReceiveCount`` of the message it came in (1 if not from SQS).
    Each receive before this one was a delivery that died (a crash, a timeout: a
    transient failure is a new message, a success deletes it, and no receive of ours is
    throttled), so each counts as an attempt: ``attempt.number`` includes them."""
    report: LambdaReport | None = None
    """``on-failure`` (and a Step Functions crash batch): what Lambda reported."""
    bucket: str | None = None
    """``sfn``: the bucket the batch names (checked against the function's own). With a
    ``report``, ``attempt.number`` is the last try made, not the next one."""

    @property
    def key(self) -> str:
        return self.attempt.key


@dataclass(frozen=True, kw_only=True)
class Refusal:
    """Something in an event that is deliberately not run, and why."""

    reason: str
    key: str | None = None
    """The task key it names, where one could be read."""
    message_id: str | None = None
    record: Any = field(default=None, compare=False, repr=False)
    """The raw record (or body) refused, for tests and debugging; never logged."""
    fails_task: bool = False
    """Record the refusal as the task's failure record: the key is a task of this
    function and the event tried to give it attempts it may not have."""
    attempts: int = 1
    """For the failure record: the attempt count to write."""
    first_attempt_at: str | None = None
    bucket: str | None = None
    """The bucket the notification it came from names, if it came from one."""
    lambda_failure: bool = False
    """It came in a Lambda on-failure record (the task crashed; only its count is unreadable)."""


@dataclass(kw_only=True)
class Decoded:
    attempts: list[TaskAttempt] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)
    from_sqs: bool = False
    """The event is an SQS batch: the handler answers with ``batchItemFailures``."""
    from_sfn: bool = False
    """The event is a Step Functions batch: the handler raises if a task is to be retried."""

    @property
    def objects(self) -> list[S3Object]:
        """The created objects the attempts came from, in event order."""
        return [a.s3 for a in self.attempts if a.s3 is not None]


@dataclass(frozen=True, kw_only=True)
class Scope:
    """What a function accepts: its bucket, its stage, its attempt budget."""

    bucket: str
    stage: Stage
    max_attempts: int
    table: StageTable = STAGES
    """The table ``stage`` belongs to: the one a key must parse in."""


def decode_event_key(encoded: str) -> str:
    """The object key an event names (``+`` is a space, ``%XX`` a UTF-8 byte)."""
    return unquote_plus(encoded, errors="strict")


def decode_event(event: object, scope: Scope) -> Decoded:
    """The attempts ``event`` asks of the function described by ``scope``, and the rest
    refused with a reason. Never raises."""
    return screen(parse_event(event), scope)


def parse_event(event: object) -> Decoded:
    """Every task attempt ``event`` names, by shape alone; never raises."""
    out = Decoded()
    if not isinstance(event, Mapping):
        out.refusals.append(
            Refusal(
                reason=f"not an S3 notification: expected a JSON object, got {_kind(event)}",
                record=event,
            )
        )
        return out
    if SFN_MARKER in event:
        out.from_sfn = True
        _guarded(out, event[SFN_MARKER], SFN_MARKER, None, _sfn_batch)
        return out
    records = event.get("Records")
    if isinstance(records, list) and any(
        isinstance(r, Mapping) and r.get("eventSource") == SQS_SOURCE for r in records
    ):
        out.from_sqs = True
        for index, record in enumerate(records):
            _guarded(out, record, f"Records[{index}]", None, _top_record)
        return out
    _payload(out, event, "event", None, on_failure=False)
    return out


def screen(decoded: Decoded, scope: Scope) -> Decoded:
    """``decoded`` held against ``scope``: another bucket, a key that is no task of this
    stage, or more attempts than ``max_attempts`` allows are refused."""
    out = Decoded(from_sqs=decoded.from_sqs, from_sfn=decoded.from_sfn)
    for refusal in decoded.refusals:
        if refusal.fails_task:
            problem = task_key_problem(refusal.key or "", scope.stage, scope.table)
            if refusal.bucket is not None and refusal.bucket != scope.bucket:
                problem = f"bucket {shown(refusal.bucket)} is not this function's bucket {scope.bucket!r}"
            if problem is None:
                refusal = replace(refusal, attempts=min(refusal.attempts, scope.max_attempts))
            else:  # not ours to fail: say so first
                refusal = replace(refusal, reason=f"{problem}; {refusal.reason}", fails_task=False)
        out.refusals.append(refusal)
    for item in decoded.attempts:
        key, mid = item.key, item.message_id
        bucket = item.s3.bucket if item.s3 is not None else item.bucket
        if bucket is not None and bucket != scope.bucket:
            out.refusals.append(
                Refusal(
                    reason=f"bucket {shown(bucket)} is not this function's bucket {scope.bucket!r}",
                    key=key,
                    message_id=mid,
                    record=item,
                )
            )
            continue
        if (problem := task_key_problem(key, scope.stage, scope.table)) is not None:
            out.refusals.append(Refusal(reason=problem, key=key, message_id=mid, record=item))
            continue
        number = item.attempt.number
        if number > scope.max_attempts:
            if item.receives > 1:
                reason = (
                    f"received {item.receives} times: the {item.receives - 1} deliveries before "
                    f"this one died (crash or timeout) without an outcome, which brings it to "
                    f"attempt {number}, past max_attempts={scope.max_attempts}"
                )
            elif item.source == "on-failure":
                reason = (
                    f"Lambda's own tries bring it to attempt {number}, past "
                    f"max_attempts={scope.max_attempts}: no tries left"
                )
            else:
                reason = f"attempt {number} is more than max_attempts={scope.max_attempts}"
            out.refusals.append(
                Refusal(
                    reason=reason,
                    key=key,
                    message_id=mid,
                    record=item,
                    fails_task=True,
                    attempts=scope.max_attempts,
                    first_attempt_at=item.attempt.first_attempt_at,
                )
            )
            continue
        out.attempts.append(item)
    return out


def task_key_problem(key: str, stage: Stage | None = None, table: StageTable = STAGES) -> str | None:
    """Why ``key`` is no task (of ``stage``, if given): longer than S3 allows, or not parsed
    whole by the stage table; None if it is one. Nothing is run or written for such a key."""
    size = len(key.encode("utf-8", "surrogatepass"))
    if size > MAX_KEY_BYTES:
        return f"not a task key: {size} bytes, and S3 keys are at most {MAX_KEY_BYTES}: {shown(key)}"
    try:
        address = table.parse(key)
    except FanoutError as exc:
        return f"not a task key: {cut(str(exc), 400)}"
    if stage is not None and address.stage.name != stage.name:
        return f"a {address.stage.name} task key, but this is the {stage.name} function"
    return None


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _guarded(out: Decoded, record: object, where: str, message_id: str | None, parse: Any) -> None:
    """``parse(out, record, where)``; an unforeseen error refuses the record alone."""
    try:
        parse(out, record, where)
    except Exception as exc:  # a decoding bug must not cost the rest of the batch
        reason = f"{where}: could not be decoded ({type(exc).__name__})"
        out.refusals.append(Refusal(reason=reason, message_id=message_id, record=record))


def _top_record(out: Decoded, record: object, where: str) -> None:
    """One record of an SQS batch (an S3 record among them is taken as one)."""
    if not isinstance(record, Mapping):
        out.refusals.append(Refusal(reason=f"{where} is not an object", record=record))
        return
    source = record.get("eventSource")
    if source == SQS_SOURCE:
        _sqs_record(out, record, where)
    elif source == S3_SOURCE:
        _s3_record(out, record, where, None)
    else:
        out.refusals.append(
            Refusal(
                reason=f"{where}: eventSource {shown(source)} is not {S3_SOURCE} or {SQS_SOURCE}",
                record=record,
            )
        )


def _sqs_record(out: Decoded, record: Mapping[str, Any], where: str) -> None:
    mid = record.get("messageId")
    message_id = mid if isinstance(mid, str) else None
    body = record.get("body")
    if not isinstance(body, str):
        out.refusals.append(
            Refusal(
                reason=f"{where}: SQS body is {_kind(body)}, not a string",
                message_id=message_id,
                record=record,
            )
        )
        return
    try:
        doc = strict_json.loads(body)
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        out.refusals.append(
            Refusal(reason=f"{where}: SQS body is not JSON ({exc})", message_id=message_id, record=record)
        )
        return
    if not isinstance(doc, Mapping):
        out.refusals.append(
            Refusal(
                reason=f"{where}: SQS body is a JSON {_kind(doc)}, not an object",
                message_id=message_id,
                record=record,
            )
        )
        return
    first = len(out.attempts)
    _payload(out, doc, f"{where} body", message_id, on_failure=True)
    receives = _receive_count(record.get("attributes"))
    for index in range(first, len(out.attempts)):
        item = out.attempts[index]
        attempt = replace(item.attempt, number=item.attempt.number + receives - 1)
        out.attempts[index] = replace(item, attempt=attempt, receives=receives)


def _receive_count(attributes: object) -> int:
    """``ApproximateReceiveCount`` (a string of digits, as Lambda passes it); 1 when
    absent or unreadable, so a message never loses attempts to a bad attribute."""
    value = attributes.get("ApproximateReceiveCount") if isinstance(attributes, Mapping) else None
    if isinstance(value, str) and value.isascii() and value.isdigit() and 1 <= len(value) <= 6:
        return min(max(int(value), 1), MAX_COUNT)
    return 1


def _payload(
    out: Decoded, doc: Mapping[str, Any], where: str, message_id: str | None, *, on_failure: bool
) -> None:
    """A document that names tasks: a retry message, an S3 notification, the test event,
    and (inside an SQS body only) an on-failure destination record."""
    if RETRY_MARKER in doc:
        _retry_message(out, doc[RETRY_MARKER], where, message_id)
    elif on_failure and "requestPayload" in doc and "requestContext" in doc:
        _on_failure(out, doc, where, message_id)
    elif doc.get("Event") == TEST_EVENT:
        out.refusals.append(Refusal(reason=TEST_EVENT, message_id=message_id, record=doc))
    else:
        records = doc.get("Records")
        if not isinstance(records, list) or not records:
            what = "an empty Records list" if isinstance(records, list) else "no Records list"
            if "Records" in doc and not isinstance(records, list):
                what = f"Records is {_kind(records)}, not a list"
            reason = (
                f"{where}: not an S3 notification: {what} and not an s3:TestEvent "
                f"(top-level keys: {[cut(k, 40) for k in sorted(map(str, doc))[:10]]})"
            )
            out.refusals.append(Refusal(reason=reason, message_id=message_id, record=doc))
            return
        for index, record in enumerate(records):
            rwhere = f"Records[{index}]" if where == "event" else f"{where} Records[{index}]"
            _guarded(out, record, rwhere, message_id, _notification_record(message_id))


def _notification_record(message_id: str | None) -> Any:
    def parse(out: Decoded, record: object, where: str) -> None:
        if not isinstance(record, Mapping):
            out.refusals.append(
                Refusal(
                    reason=f"not an S3 notification: {where} is not an object",
                    message_id=message_id,
                    record=record,
                )
            )
            return
        source = record.get("eventSource")
        if source != S3_SOURCE:
            out.refusals.append(
                Refusal(
                    reason=f"{where}: eventSource {shown(source)} is not {S3_SOURCE} "
                    "(not an S3 notification)",
                    message_id=message_id,
                    record=record,
                )
            )
            return
        _s3_record(out, record, where, message_id)

    return parse


def _s3_record(out: Decoded, record: Mapping[str, Any], where: str, message_id: str | None) -> None:
    def refuse(reason: str, key: str | None = None) -> None:
        out.refusals.append(Refusal(reason=reason, key=key, message_id=message_id, record=record))

    name = record.get("eventName")
    bare = name.removeprefix("s3:") if isinstance(name, str) else ""
    if not bare.startswith(CREATED_PREFIX):
        refuse(f"{where}: eventName {shown(name)} is not ObjectCreated")
        return
    s3: Any = record.get("s3")
    try:
        bucket = s3["bucket"]["name"]
        obj = s3["object"]
        encoded_key = obj["key"]
    except (KeyError, TypeError):
        refuse(f"{where}: ObjectCreated record without s3.bucket.name and s3.object.key")
        return
    if not isinstance(bucket, str) or not isinstance(encoded_key, str) or not encoded_key or not bucket:
        refuse(f"{where}: s3.bucket.name and s3.object.key must be non-empty strings")
        return
    try:
        key = decode_event_key(encoded_key)
    except UnicodeDecodeError:
        refuse(f"{where}: key {shown(encoded_key)} is not URL-encoded UTF-8")
        return
    size = obj.get("size")
    event_time = record.get("eventTime")
    s3_object = S3Object(
        bucket=bucket,
        key=key,
        size=size if type(size) is int and size >= 0 else 0,
        event_name=bare,
        sequencer=str(obj.get("sequencer") or ""),
        event_time=event_time if isinstance(event_time, str) else "",
    )
    first = s3_object.event_time if _is_iso(s3_object.event_time) else now_iso()
    out.attempts.append(
        TaskAttempt(
            attempt=Attempt(key=key, number=1, first_attempt_at=first),
            source="s3",
            message_id=message_id,
            s3=s3_object,
        )
    )


def _sfn_batch(out: Decoded, batch: object, where: str) -> None:
    """A Step Functions child's batch: every item a try numbered ``RetryCount + 1``, or,
    with ``Crash``, the report of tries that all crashed (``Attempts`` of them)."""
    if not isinstance(batch, Mapping):
        out.refusals.append(Refusal(reason=f"{where} is {_kind(batch)}, not an object", record=batch))
        return
    bucket, items = batch.get("Bucket"), batch.get("Items")
    if not isinstance(bucket, str) or not bucket:
        out.refusals.append(Refusal(reason=f"{where}: no Bucket string", record=batch))
        return
    if not isinstance(items, list) or not items or len(items) > SFN_MAX_BATCH:
        what = f"{len(items)} items" if isinstance(items, list) else _kind(items)
        reason = f"{where}: Items must be a list of 1 to {SFN_MAX_BATCH} objects, got {what}"
        out.refusals.append(Refusal(reason=reason, record=batch))
        return
    crash = batch.get("Crash")
    report: LambdaReport | None = None
    if crash is not None:
        tries = batch.get("Attempts")
        problem = _attempt_problem(tries, f"{where}.Attempts")
        if problem or not isinstance(crash, Mapping):
            out.refusals.append(Refusal(reason=f"{where}: crash report: {problem or 'Crash is no object'}"))
            return
        assert isinstance(tries, int)
        report = LambdaReport(
            condition=SFN_CRASH_CONDITION,
            invoke_count=tries,
            error_type=_text(crash.get("Error"), 200),
            error_message=_text(crash.get("Cause"), 1000),
            function_error="Unhandled",
        )
        number = tries  # the last try that crashed; no try is left
    else:
        retries = batch.get("RetryCount")
        problem = _attempt_problem(retries, f"{where}.RetryCount", minimum=0)
        if problem:
            out.refusals.append(Refusal(reason=f"{where}: {problem}", record=batch))
            return
        assert isinstance(retries, int)
        number = retries + 1
    started = batch.get("StartedAt")
    first = started if isinstance(started, str) and _is_iso(started) else now_iso()
    for index, item in enumerate(items):
        key = item.get("Key") if isinstance(item, Mapping) else None
        if not isinstance(key, str) or not key:
            out.refusals.append(Refusal(reason=f"{where}.Items[{index}]: no Key string", record=item))
            continue
        out.attempts.append(
            TaskAttempt(
                attempt=Attempt(key=key, number=number, first_attempt_at=first),
                source="sfn",
                report=report,
                bucket=bucket,
            )
        )


def _text(value: object, limit: int = 1000) -> str | None:
    """A string field of an outside document, cut to ``limit``; None if absent or empty."""
    return value[:limit] if isinstance(value, str) and value else None


def _retry_message(out: Decoded, body: object, where: str, message_id: str | None) -> None:
    if not isinstance(body, Mapping):
        out.refusals.append(
            Refusal(
                reason=f"{where}: {RETRY_MARKER} is {_kind(body)}, not an object",
                message_id=message_id,
                record=body,
            )
        )
        return
    key = body.get("task_key")
    if not isinstance(key, str) or not key:
        out.refusals.append(
            Refusal(
                reason=f"{where}: retry message without a task_key string", message_id=message_id, record=body
            )
        )
        return
    number, first = body.get("attempt"), body.get("first_attempt_at")
    problem = _attempt_problem(number, "attempt") or _time_problem(first)
    if problem:
        out.refusals.append(
            _bad_attempt(f"{where}: retry message: {problem}", key, number, first, message_id, body)
        )
        return
    assert isinstance(number, int) and isinstance(first, str)
    out.attempts.append(
        TaskAttempt(
            attempt=Attempt(key=key, number=number, first_attempt_at=first),
            source="retry",
            message_id=message_id,
        )
    )


def _on_failure(out: Decoded, doc: Mapping[str, Any], where: str, message_id: str | None) -> None:
    """Lambda gave up on ``requestPayload`` after ``approximateInvokeCount`` tries: each
    task in it comes back with those tries added to its attempt count."""
    payload, context = doc.get("requestPayload"), doc.get("requestContext")
    if not isinstance(payload, Mapping) or not isinstance(context, Mapping):
        out.refusals.append(
            Refusal(
                reason=f"{where}: on-failure record whose requestPayload or requestContext is not an object",
                message_id=message_id,
                record=doc,
            )
        )
        return
    inner = Decoded()
    _payload(inner, payload, f"{where} requestPayload", message_id, on_failure=False)
    out.refusals.extend(inner.refusals)
    tries = context.get("approximateInvokeCount")
    # 0 only when Lambda never ran it (throttled until its maximum event age).
    least = 0 if context.get("condition") == EVENT_AGE_EXCEEDED else 1
    problem = _attempt_problem(tries, "requestContext.approximateInvokeCount", minimum=least)
    for item in inner.attempts:
        if problem:
            out.refusals.append(
                _bad_attempt(
                    f"{where}: on-failure record: {problem}",
                    item.key,
                    item.attempt.number,
                    item.attempt.first_attempt_at,
                    message_id,
                    doc,
                    bucket=item.s3.bucket if item.s3 is not None else None,
                    lambda_failure=True,
                )
            )
            continue
        assert isinstance(tries, int)
        attempt = replace(item.attempt, number=item.attempt.number + tries)
        out.attempts.append(replace(item, attempt=attempt, source="on-failure", report=lambda_report(doc)))


def _attempt_problem(value: object, name: str, minimum: int = 1) -> str | None:
    if type(value) is not int:  # bool is an int subclass, and no count
        return f"{name} is {shown(value)} ({_kind(value)}), not a whole number"
    if value < minimum:
        return f"{name} is {value}, not {minimum} or more"
    if value > MAX_COUNT:
        return f"{name} is {shown(value, 40)}, more than any count of tries ({MAX_COUNT})"
    return None


def _time_problem(value: object) -> str | None:
    if not isinstance(value, str) or not _is_iso(value):
        return f"first_attempt_at is {shown(value)}, not an ISO-8601 time"
    return None


def _is_iso(value: str) -> bool:
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _bad_attempt(
    reason: str,
    key: str,
    number: object,
    first: object,
    message_id: str | None,
    record: object,
    *,
    bucket: str | None = None,
    lambda_failure: bool = False,
) -> Refusal:
    """A task whose attempt count cannot be trusted: refused, and (if it is a task of
    the function, which ``screen`` decides) recorded as failed, so no forged count buys
    it more tries."""
    return Refusal(
        reason=reason,
        key=key,
        message_id=message_id,
        record=record,
        fails_task=True,
        attempts=min(number, MAX_COUNT) if type(number) is int and number >= 1 else 1,
        first_attempt_at=first if isinstance(first, str) and _is_iso(first) else None,
        bucket=bucket,
        lambda_failure=lambda_failure,
    )
