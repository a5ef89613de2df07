"""The Hermes token on AWS: read from Secrets Manager and checked once at cold start.

Checking it and keeping it out of every log line are not AWS matters: ``check_token`` and
``redact`` are the core's (``fanout_core.secrets``), re-exported here so the handler and the
local runtime provably use the same functions.
"""

from __future__ import annotations

import json
from typing import Any

from fanout_core.errors import ConfigurationError, SettingsError
from fanout_core.secrets import check_token, redact

__all__ = ["UNREADABLE", "check_token", "read_secret", "redact"]


def read_secret(client: Any, secret_id: str) -> str:
    """The Hermes token: the secret's string, or its ``token`` field if it is JSON.

    Checked with ``check_token``: a token that needs trimming is refused, not trimmed,
    since a line break pasted into a secret usually means the wrong value was pasted.
    A secret that does not exist or that the role may not read (or decrypt) is a
    ``SettingsError`` naming the cause: no retry fixes it. Anything else (throttling,
    a 5xx) propagates for Lambda to retry.
    """
    try:
        value = client.get_secret_value(SecretId=secret_id).get("SecretString")
    except Exception as exc:
        code = _error_code(exc)
        if code not in UNREADABLE:
            raise
        raise ConfigurationError(f"secret {secret_id!r} {UNREADABLE[code]} ({code})") from None
    if not isinstance(value, str):
        raise SettingsError(f"secret {secret_id!r} holds no SecretString; store the bare Hermes token")
    try:
        doc = json.loads(value)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("token"), str):
        value = doc["token"]
    return check_token(value, f"secret {secret_id!r}")


UNREADABLE = {
    "ResourceNotFoundException": "does not exist: create it before the first run (docs/deploying.md)",
    "AccessDeniedException": "may not be read by the function's role",
    "DecryptionFailure": "cannot be decrypted with the role's access to its KMS key",
    "InvalidRequestException": "is not readable now (scheduled for deletion?)",
}
"""Secrets Manager errors only a change to the secret or the role can fix."""


def _error_code(exc: BaseException) -> str | None:
    """The ``Error.Code`` of a botocore ``ClientError`` (duck-typed: no botocore import)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        return code if isinstance(code, str) else None
    return None
