"""S3 event notifications in, plain ``S3Object`` records out (and back, for tests).

S3 URL-encodes object keys in notifications, form-style: a space arrives as ``+``, a
``+`` as ``%2B``, and moto also encodes ``/`` as ``%2F``. A key used without
``unquote_plus`` names an object that does not exist, or worse, a different one, so
every key from an event goes through this module.

Accepted shapes: the notification S3 sends to Lambda (``{"Records": [...]}`` with
``eventSource: aws:s3``), the ``s3:TestEvent`` S3 sends when a notification is
configured (nothing to do), and SQS records whose body is either of those (a
queue-buffered variant). Records that are not ``ObjectCreated`` are skipped and reported,
not raised: a batch is processed for what it holds. Input that is not an S3
notification at all raises ``ValueError``, since no retry will make it one.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus, unquote_plus

log = logging.getLogger(__name__)

S3_SOURCE = "aws:s3"
SQS_SOURCE = "aws:sqs"
TEST_EVENT = "s3:TestEvent"
CREATED_PREFIX = "ObjectCreated:"


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


@dataclass(frozen=True)
class Skipped:
    """A record (or whole message) deliberately not turned into an ``S3Object``."""

    reason: str
    record: Mapping[str, Any]


@dataclass(frozen=True)
class S3Batch:
    objects: list[S3Object] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def decode_event_key(encoded: str) -> str:
    """The object key an event names (``+`` is a space, ``%XX`` a UTF-8 byte)."""
    return unquote_plus(encoded, errors="strict")


def encode_event_key(key: str) -> str:
    """A key encoded the way S3 encodes it in notifications.

    S3 uses form encoding in the style of Java's ``URLEncoder``: a space becomes ``+``;
    letters, digits and ``. - _ *`` stay bare; every other byte of the UTF-8 form is
    ``%XX`` (so ``+`` is ``%2B``, ``=`` is ``%3D``, ``~`` is ``%7E``), except that ``/``
    is kept. Python's ``quote_plus`` differs only in keeping ``~`` and encoding ``*``.
    """
    return quote_plus(key, safe="/*").replace("~", "%7E")


def parse_s3_event(event: Mapping[str, Any]) -> S3Batch:
    """Every created object in ``event``, plus what was skipped and why.

    Raises ``ValueError`` if ``event`` is not an S3 notification (direct or inside SQS
    records), or if an ``ObjectCreated`` record lacks its bucket or key.
    """
    if not isinstance(event, Mapping):
        raise ValueError(f"not an S3 notification: expected a JSON object, got {type(event)}")
    if event.get("Event") == TEST_EVENT:
        return S3Batch(skipped=[Skipped(TEST_EVENT, event)])
    records = event.get("Records")
    if not isinstance(records, list) or not records:
        raise ValueError(
            "not an S3 notification: no Records list and not an s3:TestEvent "
            f"(top-level keys: {sorted(event)[:10]})"
        )
    batch = S3Batch()
    recognised = False
    for index, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise ValueError(f"not an S3 notification: Records[{index}] is not an object")
        source = record.get("eventSource")
        if source == S3_SOURCE:
            recognised = True
            _add_s3_record(batch, record, f"Records[{index}]")
        elif source == SQS_SOURCE:
            recognised = True
            _add_sqs_record(batch, record, index)
        else:
            batch.skipped.append(Skipped(f"eventSource {source!r} is not {S3_SOURCE}", record))
    if not recognised:
        sources = sorted({str(r.get("eventSource")) for r in records})
        raise ValueError(f"not an S3 notification: record sources are {sources}")
    return batch


def decode_s3_event(event: Mapping[str, Any]) -> list[S3Object]:
    """The created objects in ``event``, in record order; skipped records are logged.

    Use ``parse_s3_event`` to get the skipped records themselves.
    """
    batch = parse_s3_event(event)
    for skipped in batch.skipped:
        log.info("s3 event: skipped a record: %s", skipped.reason)
    return batch.objects


def _add_s3_record(batch: S3Batch, record: Mapping[str, Any], where: str) -> None:
    name = str(record.get("eventName", ""))
    bare = name.removeprefix("s3:")
    if not bare.startswith(CREATED_PREFIX):
        batch.skipped.append(Skipped(f"eventName {name!r} is not ObjectCreated", record))
        return
    s3: Any = record.get("s3")
    try:
        bucket = s3["bucket"]["name"]
        obj = s3["object"]
        encoded_key = obj["key"]
    except (KeyError, TypeError):
        raise ValueError(f"{where}: ObjectCreated record without s3.bucket.name and s3.object.key") from None
    if not isinstance(bucket, str) or not isinstance(encoded_key, str) or not encoded_key:
        raise ValueError(f"{where}: s3.bucket.name and s3.object.key must be non-empty strings")
    try:
        key = decode_event_key(encoded_key)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{where}: key {encoded_key!r} is not URL-encoded UTF-8") from exc
    batch.objects.append(
        S3Object(
            bucket=bucket,
            key=key,
            size=int(obj.get("size") or 0),
            event_name=bare,
            sequencer=str(obj.get("sequencer") or ""),
            event_time=str(record.get("eventTime") or ""),
        )
    )


def _add_sqs_record(batch: S3Batch, record: Mapping[str, Any], index: int) -> None:
    """An SQS record whose body is an S3 notification; a body that is not one is
    skipped (it is poison for this consumer, and a retry will not change it)."""
    try:
        body = json.loads(record.get("body") or "")
        inner = parse_s3_event(body)
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        batch.skipped.append(Skipped(f"SQS Records[{index}] body: {exc}", record))
        return
    batch.objects.extend(inner.objects)
    batch.skipped.extend(inner.skipped)


def _event_time(now: float) -> str:
    stamp = datetime.fromtimestamp(now, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def s3_event_for(
    bucket: str,
    keys: Sequence[str],
    event_name: str = "ObjectCreated:Put",
    *,
    region: str = "us-east-1",
    size: int = 0,
    now: float | None = None,
) -> dict[str, Any]:
    """A notification shaped like the one S3 sends to Lambda, one record per key.

    For tests, the local runtime and redrive: feeding it to the handler exercises the
    same decoding path as a real delivery. Sequencers increase with the key's position.
    """
    now = time.time() if now is None else now
    base = int(now * 1_000_000) << 8
    records = []
    for index, key in enumerate(keys):
        request_id = f"{base + index:016X}"[-16:]
        records.append(
            {
                "eventVersion": "2.1",
                "eventSource": S3_SOURCE,
                "awsRegion": region,
                "eventTime": _event_time(now),
                "eventName": event_name,
                "userIdentity": {"principalId": "AWS:AIDAFANOUTLOCAL"},
                "requestParameters": {"sourceIPAddress": "127.0.0.1"},
                "responseElements": {
                    "x-amz-request-id": request_id,
                    "x-amz-id-2": f"fanout/local/{request_id}",
                },
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "fanout-local",
                    "bucket": {
                        "name": bucket,
                        "ownerIdentity": {"principalId": "A3FANOUTLOCAL"},
                        "arn": f"arn:aws:s3:::{bucket}",
                    },
                    "object": {
                        "key": encode_event_key(key),
                        "size": size,
                        "eTag": "d41d8cd98f00b204e9800998ecf8427e",
                        "sequencer": f"{base + index:018X}",
                    },
                },
            }
        )
    return {"Records": records}
