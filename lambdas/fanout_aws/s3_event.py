"""S3 notifications built the way S3 builds them: for tests, the local tooling and
redrive, so feeding one to a handler exercises the same decoding path as a real
delivery. Decoding lives in ``fanout_aws.events``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus

from fanout_aws.events import S3_SOURCE


def encode_event_key(key: str) -> str:
    """A key encoded the way S3 encodes it in notifications.

    S3 uses form encoding in the style of Java's ``URLEncoder``: a space becomes ``+``;
    letters, digits and ``. - _ *`` stay bare; every other byte of the UTF-8 form is
    ``%XX`` (so ``+`` is ``%2B``, ``=`` is ``%3D``, ``~`` is ``%7E``), except that ``/``
    is kept. Python's ``quote_plus`` differs only in keeping ``~`` and encoding ``*``.
    """
    return quote_plus(key, safe="/*").replace("~", "%7E")


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
