"""The CLI's boto3 clients (CloudFormation, SQS, CloudWatch, S3 tags), built in one place
with bounds: a connect and a read timeout, and botocore's standard retry mode with a small
number of attempts. Without them an endpoint that accepts and never answers holds a
command forever, and one that answers with something that is not AWS's is a traceback.

``AWS_ERRORS`` is what any call on such a client may raise for an AWS-side reason;
``aws_problem`` says it in a short line.
"""

from __future__ import annotations

import threading
from typing import Any

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ConnectTimeoutError, ReadTimeoutError
from botocore.parsers import ResponseParserError

from fanout.cli.common import one_line

CONNECT_TIMEOUT_S = 5
"""Seconds to open a connection to an AWS endpoint."""
READ_TIMEOUT_S = 10
"""Seconds to wait for each read of an answer (no CLI call long-polls)."""
MAX_ATTEMPTS = 2
"""Attempts per call in all, the first included (botocore's standard mode, jittered back-off)."""

AWS_ERRORS: tuple[type[BaseException], ...] = (BotoCoreError, ClientError, ResponseParserError)
"""What a call on a CLI client raises when AWS (or the endpoint) refuses or fails it."""

_lock = threading.Lock()
_session: Any = None


def cli_config() -> Config:
    return Config(
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=READ_TIMEOUT_S,
        retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
    )


def cli_client(service: str, *, region: str | None = None, endpoint_url: str | None = None) -> Any:
    """A bounded client of ``service`` from one shared session (made one at a time: boto3
    sessions are not thread-safe)."""
    import boto3

    global _session
    with _lock:
        if _session is None:
            _session = boto3.session.Session()
        return _session.client(service, region_name=region, endpoint_url=endpoint_url, config=cli_config())


def aws_problem(exc: BaseException) -> str:
    """A boto3 error as a short reason: the service's error code and message, or the
    client's own error (no credentials, endpoint unreachable, an answer that is not AWS's)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "Error" in response:
        error = response["Error"]
        return one_line(f"{error.get('Code', 'error')}: {error.get('Message', '')}".strip())
    if isinstance(exc, ResponseParserError):
        return "the endpoint answered with something that is not an AWS response"
    if isinstance(exc, ReadTimeoutError):
        return f"no answer from the endpoint within {READ_TIMEOUT_S} s ({MAX_ATTEMPTS} attempts)"
    if isinstance(exc, ConnectTimeoutError):
        return f"no connection to the endpoint within {CONNECT_TIMEOUT_S} s ({MAX_ATTEMPTS} attempts)"
    return one_line(f"{type(exc).__name__}: {exc}")
