"""``Storage`` on an S3 bucket, with S3's own failures turned into the core's error types.

The core decides retry-or-give-up by exception type alone, so every botocore failure
leaves this module as ``TransientError`` (throttling, 5xx, timeouts, broken
connections: a later attempt can succeed) or ``PermanentError`` (missing bucket,
denied access: no retry can help). ``put_if_absent`` is the exactly-once primitive:
one ``PutObject`` with ``If-None-Match: *``, which S3 evaluates atomically, so there is
never a check-then-write window in this adapter.

boto3 is imported here and nowhere in ``fanout_core``, so the core runs without it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError

from fanout_core.errors import PermanentError, TransientError
from fanout_core.storage import NoSuchKey

log = logging.getLogger("fanout")

# Codes S3 (or botocore's retry layer, once it gives up) reports for conditions that
# pass: throttling, server trouble, timeouts, clock skew or an expiring session token
# (Lambda refreshes credentials; the next attempt signs with fresh ones).
TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TooManyRequests",
        "InternalError",
        "ServiceUnavailable",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "ExpiredToken",
        "OperationAborted",
        # A concurrent conditional write to the same key is in flight; the retry will
        # either win or see 412.
        "ConditionalRequestConflict",
    }
)
PERMANENT_CODES = frozenset({"AccessDenied", "NoSuchBucket", "InvalidAccessKeyId", "SignatureDoesNotMatch"})
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})

DEFAULT_PAGE_SIZE = 1000
"""ListObjectsV2's own maximum; smaller values only exist so tests can cross pages cheaply."""


def default_config() -> Config:
    """Retries in botocore first (standard mode: bounded exponential back-off with
    jitter on throttling and 5xx), and enough pooled connections for a thread pool of
    workers sharing one client."""
    return Config(
        retries={"max_attempts": 5, "mode": "standard"},
        max_pool_connections=64,
        connect_timeout=5,
        read_timeout=30,
    )


_session_lock = threading.Lock()
_session: boto3.session.Session | None = None


def make_client(
    *, endpoint_url: str | None = None, region: str | None = None, config: Config | None = None
) -> Any:
    """An S3 client from one shared session, created under a lock.

    boto3 sessions are not thread-safe, and a fresh session re-reads the service
    models from disk (a tenth of a second or more per client), so clients come from
    one session (as with ``boto3.client``) but are made one at a time.
    """
    global _session
    cfg = config or default_config()
    if endpoint_url is not None:
        # Local endpoints (moto server, MinIO) answer on one host name, not per bucket.
        cfg = cfg.merge(Config(s3={"addressing_style": "path"}))
    with _session_lock:
        if _session is None:
            _session = boto3.session.Session()
        return _session.client("s3", endpoint_url=endpoint_url, region_name=region, config=cfg)


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def http_status(error: ClientError) -> int | None:
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return int(status) if status is not None else None


def translate(error: BaseException, what: str) -> Exception:
    """The core's error for a botocore failure; ``what`` names the call for the message.

    Known codes decide first; otherwise 429 and 5xx are transient and other 4xx are
    permanent. A request botocore refuses to build (``ParamValidationError``) is a bug
    and permanent. Every other botocore failure (refused or dropped connections,
    timeouts, a body cut short, a slow credential provider) is transient: losing a task
    to a passing hiccup is worse than one more attempt.
    """
    if isinstance(error, ClientError):
        code, status = error_code(error), http_status(error)
        message = f"S3 {what}: {code or 'error'} (HTTP {status}): {error}"
        if code in TRANSIENT_CODES:
            return TransientError(message, status=status, kind="storage")
        if code in PERMANENT_CODES:
            return PermanentError(message, status=status, kind="storage")
        if status is not None and (status == 429 or status >= 500):
            return TransientError(message, status=status, kind="storage")
        if status is not None and 400 <= status < 500:
            return PermanentError(message, status=status, kind="storage")
        return TransientError(message, status=status, kind="storage")
    if isinstance(error, ParamValidationError):
        return PermanentError(f"S3 {what}: {error}", kind="storage")
    return TransientError(f"S3 {what}: {type(error).__name__}: {error}", kind="storage")


class S3Storage:
    """One bucket as ``Storage``; keys are used verbatim (no prefixing, no encoding).

    One instance (and its client) may be shared by many threads: boto3 clients are
    thread-safe and the connection pool is sized for it.
    """

    def __init__(
        self,
        bucket: str,
        *,
        client: Any = None,
        endpoint_url: str | None = None,
        region: str | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        exists_by_head: bool = True,
    ):
        if not bucket:
            raise ValueError("bucket name is empty")
        if not 1 <= page_size <= DEFAULT_PAGE_SIZE:
            raise ValueError(f"page_size must be 1..{DEFAULT_PAGE_SIZE}, got {page_size}")
        self.bucket = bucket
        self.page_size = page_size
        self.client = client if client is not None else make_client(endpoint_url=endpoint_url, region=region)
        self.exists_by_head = exists_by_head
        """False for a role that may list only under ``s3:prefix`` conditions: ``exists`` then
        lists at once instead of a HEAD that S3 would answer 403 for a missing key."""
        self._warned_head_denied = False

    def __repr__(self) -> str:
        return f"S3Storage({self.bucket!r})"

    def get(self, key: str) -> bytes:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
            # The body streams after the call returned, so a dropped connection or a
            # short body surfaces here, inside the same error mapping. Read it through
            # StreamingBody itself: its ``with`` form hands out the raw stream, which
            # skips the length check and would return a truncated object silently.
            try:
                data: bytes = body.read()
            finally:
                body.close()
            return data
        except ClientError as exc:
            if error_code(exc) in _NOT_FOUND_CODES or self._denied_because_missing(exc, key):
                raise NoSuchKey(key) from None
            raise translate(exc, f"GetObject {key!r}") from exc
        except BotoCoreError as exc:
            raise translate(exc, f"GetObject {key!r}") from exc

    def _denied_because_missing(self, error: ClientError, key: str) -> bool:
        """S3 answers GetObject of a missing key with 403 unless the caller may list the
        bucket; a caller that may list only under an ``s3:prefix`` condition (the CLI's
        operator, a narrower role) gets a listing of the key itself before the 403 counts
        as denied."""
        if error_code(error) != "AccessDenied":
            return False
        try:
            return not self._listed(key)
        except Exception:  # the listing is denied too: the 403 stands
            return False

    def put(self, key: str, body: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=body)
        except (ClientError, BotoCoreError) as exc:
            raise translate(exc, f"PutObject {key!r}") from exc

    def put_if_absent(self, key: str, body: bytes) -> bool:
        """One conditional ``PutObject``: 412 means the key already exists.

        Caveat inherited from any network write: if a first attempt succeeded but its
        response was lost, botocore's retry (or the caller's) sees 412 and this returns
        False although the object is ours. The object exists either way, so S3's own
        notification for it still fires; callers must treat False as "exists", not as
        "someone else's content".
        """
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=body, IfNoneMatch="*")
            return True
        except ClientError as exc:
            if error_code(exc) == "PreconditionFailed" or http_status(exc) == 412:
                return False
            raise translate(exc, f"PutObject(If-None-Match) {key!r}") from exc
        except BotoCoreError as exc:
            raise translate(exc, f"PutObject(If-None-Match) {key!r}") from exc

    def exists(self, key: str) -> bool:
        """Whether exactly ``key`` exists: one HeadObject, billed as a GET (a listing is
        billed as a PUT, 12x more; every task checks its done marker).

        S3 answers a HEAD of a missing key 404 only when the caller may ``s3:ListBucket``
        the bucket for a request without an ``s3:prefix`` (the stage functions may:
        ``stacks.fanout_stack.stage_access``), else 403. A 403 is therefore settled with a
        listing of the key itself, which a prefix-limited grant covers: a caller without the
        wider grant stays correct and pays one request more (logged once per adapter). A
        missing bucket answers a HEAD 404 as well (a HEAD's answer has no body to tell), so
        it reads as "no such key", and the next read, listing or write says NoSuchBucket.
        """
        if not self.exists_by_head:
            return self._listed(key)
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if error_code(exc) in _NOT_FOUND_CODES:
                return False
            if http_status(exc) != 403:
                raise translate(exc, f"HeadObject {key!r}") from exc
        except BotoCoreError as exc:
            raise translate(exc, f"HeadObject {key!r}") from exc
        else:
            # A HEAD's answer has no body to parse: an endpoint that is not S3 (a proxy's
            # page, a wrong URL) would say "exists" to every key. S3 always sends these.
            if "ETag" not in head and "LastModified" not in head:
                raise TransientError(
                    f"S3 HeadObject {key!r}: the answer has no ETag or Last-Modified; is the endpoint S3?",
                    kind="storage",
                )
            return True
        if not self._warned_head_denied:
            self._warned_head_denied = True
            log.warning(
                "HeadObject answered 403: checking existence by listing instead",
                extra={"outcome": "exists_by_listing", "bucket": self.bucket},
            )
        return self._listed(key)

    def _listed(self, key: str) -> bool:
        """Whether exactly ``key`` exists, by ListObjectsV2 with the key as prefix (the key
        itself sorts first among the keys it prefixes)."""
        try:
            page = self.client.list_objects_v2(Bucket=self.bucket, Prefix=key, MaxKeys=1)
        except ClientError as exc:
            raise translate(exc, f"ListObjectsV2 {key!r}") from exc
        except BotoCoreError as exc:
            raise translate(exc, f"ListObjectsV2 {key!r}") from exc
        contents = page.get("Contents") or []
        return bool(contents) and contents[0].get("Key") == key

    def last_modified(self, key: str) -> float | None:
        """Epoch seconds of the object's LastModified; None if it does not exist."""
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if error_code(exc) in _NOT_FOUND_CODES:
                return None
            raise translate(exc, f"HeadObject {key!r}") from exc
        except BotoCoreError as exc:
            raise translate(exc, f"HeadObject {key!r}") from exc
        return float(head["LastModified"].timestamp())

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise translate(exc, f"DeleteObject {key!r}") from exc

    def list(self, prefix: str) -> Iterator[str]:
        """Keys page by page as S3 returns them: ascending by UTF-8 bytes, which is
        the same order as Python's ``sorted`` on the decoded strings.

        A generator, so a listing of millions of keys never sits in memory; errors
        (mapped like every other call) are raised while iterating.
        """
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=self.bucket, Prefix=prefix, PaginationConfig={"PageSize": self.page_size}
        )
        try:
            for page in pages:
                for item in page.get("Contents", ()):
                    yield item["Key"]
        except (ClientError, BotoCoreError) as exc:
            raise translate(exc, f"ListObjectsV2 prefix={prefix!r}") from exc
