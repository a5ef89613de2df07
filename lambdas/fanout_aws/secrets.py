"""The Hermes token: read from Secrets Manager, checked once at cold start, and kept
out of every log line the handler writes."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, quote_plus

from fanout_core.errors import ConfigurationError, SettingsError

REDACTED = "***"


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
    "ResourceNotFoundException": "does not exist: create it before the first run (docs/deploy.md)",
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


def check_token(token: str, where: str) -> str:
    """``token`` if it can go into an ``Authorization`` header as it is.

    Raises ``SettingsError`` for an empty token, surrounding whitespace, or any control
    character (CR and LF would split the header). The message never echoes the token.
    """
    if not token:
        raise SettingsError(f"the Hermes token in {where} is empty; store the bare token")
    if token != token.strip() or any(ord(c) < 32 or ord(c) == 127 for c in token):
        raise SettingsError(
            f"the Hermes token in {where} holds a line break, a control character or "
            "surrounding whitespace; store the bare token"
        )
    return token


def redact(text: str, secret: str | None) -> str:
    """``text`` with ``secret`` (as it is, and URL-encoded) replaced by ``***``."""
    if not secret:
        return text
    for form in sorted(
        {secret, quote(secret), quote(secret, safe=""), quote_plus(secret)}, key=len, reverse=True
    ):
        text = text.replace(form, REDACTED)
    return text
