"""What the API client checks and reads around its calls: the base URL and the secret
(refused at construction, never shown), identifiers as path segments, status classes and
Retry-After."""

from __future__ import annotations

import email.utils
import time
from datetime import UTC
from urllib.parse import quote, urlsplit

import requests

from fanout_core.errors import SettingsError

TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
PERMANENT_STATUSES = frozenset({400, 401, 403, 404})
MAX_RETRY_AFTER_S = 300.0
"""A Retry-After above this is absurd; it is clamped rather than obeyed."""


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delay-seconds or HTTP-date), clamped.

    Missing or unreadable gives None (the caller's own backoff applies); negative or
    past dates give 0; absurd values are clamped to ``MAX_RETRY_AFTER_S``.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        if when.tzinfo is None:  # asctime dates carry no zone; every HTTP-date is GMT
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def encode_segment(ident: str) -> str:
    """One identifier as one path segment: percent-encoded, and "." and ".." too.

    Left bare, "." and ".." are dot segments that every HTTP stack on the way removes
    (RFC 3986 section 5.2.4); encoded, they reach the server, which decodes them.
    """
    if ident == ".":
        return "%2E"
    if ident == "..":
        return "%2E%2E"
    return quote(ident, safe="")


# Errors of requests that mean the call could not even be built: retrying cannot help.
UNSENDABLE = (
    requests.exceptions.InvalidHeader,
    requests.exceptions.InvalidURL,
    requests.exceptions.InvalidSchema,
    requests.exceptions.MissingSchema,
)


def check_base_url(url: str, what: str = "the Hermes URL") -> str:
    """An API's base URL without its trailing slash; a one-line SettingsError if it is no URL.
    ``what`` names it in messages (``the Shops URL``)."""
    if not isinstance(url, str):
        raise SettingsError(f"{what} must be a string, got {type(url).__name__}")
    shown = repr(url)
    if any(c.isspace() or ord(c) < 32 or 127 <= ord(c) <= 159 for c in url):
        raise SettingsError(f"{what} {shown} holds whitespace or a control character")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise SettingsError(f"{what} {shown} is not a URL: {exc}") from None
    if parts.username is not None or parts.password is not None:
        shown = repr(parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl())
        raise SettingsError(
            f"{what} {shown} must not hold a user name or password (the secret goes in a header or the query)"
        )
    if parts.scheme not in ("http", "https") or not url.lower().startswith(("http://", "https://")):
        raise SettingsError(f"{what} {shown} must start with http:// or https://")
    if not parts.hostname:
        raise SettingsError(f"{what} {shown} names no host")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0 or (port is None and parts.netloc.endswith(":")):
        raise SettingsError(f"{what} {shown} has a port that is not a number from 1 to 65535")
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise SettingsError(f"{what} {shown} must not have a query or fragment")
    try:
        prepared = requests.PreparedRequest()
        prepared.prepare_url(url, None)
    except requests.RequestException as exc:
        raise SettingsError(f"{what} {shown} is not a URL: {exc}") from None
    return (prepared.url or url).rstrip("/")


def connection_kind(error: BaseException) -> str:
    """``connection_refused`` when the host answered but nothing listens, else ``unreachable``.

    requests wraps the socket error two or three levels deep (ConnectionError ->
    MaxRetryError -> NewConnectionError -> ConnectionRefusedError), and only the chain
    says which it was.
    """
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ConnectionRefusedError):
            return "connection_refused"
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
        pending.extend(a for a in current.args if isinstance(a, BaseException))
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException):
            pending.append(reason)
    return "unreachable"
