"""Keeping secrets out of text, and refusing a token no header can carry: the one place both
runtimes (the local runtime and CLI, the Lambda handlers) take ``redact`` and ``check_token`` from.

``redact`` replaces a secret wherever it appears in a piece of text: as written, percent-
encoded (the way it shows in a URL or a query), escaped the way ``repr`` shows it inside an
exception message (str or the bytes a header is encoded to), JSON-escaped (an error body
that echoes it), and each of those escaped once more (an exception's message that quotes
another's repr).
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import quote, quote_plus

from fanout_core.errors import SettingsError

if TYPE_CHECKING:
    from fanout_core.api_description import Auth

MASK = "***"


def _escaped(text: str) -> set[str]:
    """The spellings of ``text`` one encoding or escaping step away."""
    return {
        quote(text, safe=""),
        quote(text),
        quote_plus(text),
        repr(text)[1:-1],
        ascii(text)[1:-1],
        json.dumps(text)[1:-1],
        json.dumps(text, ensure_ascii=False)[1:-1],
        repr(text.encode("utf-8", "backslashreplace"))[2:-1],
        repr(text.encode("latin-1", "backslashreplace"))[2:-1],  # how http.client encodes a header
    }


@functools.lru_cache(maxsize=32)
def secret_forms(secret: str) -> tuple[str, ...]:
    """Every way ``secret`` may be spelled in a message, longest first; none for ``""``."""
    if not secret:
        return ()
    forms = {secret}
    for once in _escaped(secret):
        forms.add(once)
        forms |= _escaped(once)
    return tuple(sorted(forms, key=len, reverse=True))


def redact(text: str, secrets: str | Iterable[str] | None) -> str:
    """``text`` with every form of every (non-empty) secret replaced by ``***``.

    ``secrets`` is one secret or several; ``None`` or ``""`` changes nothing.
    """
    if secrets is None:
        return text
    for secret in (secrets,) if isinstance(secrets, str) else secrets:
        for form in secret_forms(secret):
            if form in text:
                text = text.replace(form, MASK)
    return text


def check_token(token: str, where: str | None = None, api: str = "Hermes", noun: str = "token") -> str:
    """``token`` if it can go into an ``Authorization`` header as it is; ``where`` names
    its source in the message (``"secret 'x'"``, ``"$HERMES_TOKEN"``); ``api`` and ``noun``
    name the API and what the secret is (``the Shops API key``).

    Raises ``SettingsError`` for a non-string or empty token, whitespace at either end, a
    C0 or C1 control character or DEL (CR and LF would split the header), or a character
    latin-1 cannot encode (http.client would fail on every call). A token that needs
    trimming is refused, not trimmed: a pasted line break usually means a wrong value was
    pasted. The message never echoes the token.
    """
    source = f" in {where}" if where else ""
    what = f"the {api} {noun}"
    if not isinstance(token, str):
        raise SettingsError(f"{what}{source} must be a string, got {type(token).__name__}")
    if not token:
        raise SettingsError(f"{what}{source} is empty; store the bare {noun} {api} issued")
    if "\r" in token or "\n" in token:
        found = "a line break"
    elif token[0].isspace() or token[-1].isspace():
        found = "whitespace at an end"
    elif any(ord(c) < 32 or 127 <= ord(c) <= 159 for c in token):
        found = "a control character"
    else:
        found = ""
    if found:
        raise SettingsError(
            f"{what} holds whitespace or a control character ({where or 'it'} holds {found}); "
            "a line break or a space at either end is most likely a copy-paste accident: "
            f"store the bare {noun}"
        )
    try:
        token.encode("latin-1")
    except UnicodeEncodeError as exc:
        raise SettingsError(
            f"{what}{source} holds a character an HTTP header cannot carry (at position {exc.start})"
        ) from None
    return token


@dataclass(frozen=True)
class Credentials:
    """What a described API's auth adds to every call, and every text to keep out of messages."""

    headers: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, str] = field(default_factory=dict)
    """Query parameters (``api_key`` in the query): masked wherever a URL is shown."""
    secrets: tuple[str, ...] = ()


def credentials(auth: Auth, secret: str, where: str | None = None, api: str = "Hermes") -> Credentials:
    """The headers or query parameters ``auth`` sends with ``secret``, checked as a token is
    (``check_token``). ``bearer``: ``Authorization: Bearer <secret>``; ``api_key``: the
    secret in the named header or query parameter; ``basic``: the secret is ``user:password``;
    ``none``: nothing is sent and the secret is ignored."""
    if auth.type == "none":
        return Credentials()
    noun = {"api_key": "API key", "basic": "credentials"}.get(auth.type, "token")
    check_token(secret, where, api, noun)
    if auth.type == "bearer":
        return Credentials(headers={"Authorization": f"Bearer {secret}"}, secrets=(secret,))
    if auth.type == "api_key":
        name = auth.name or ""
        if auth.location == "query":
            return Credentials(params={name: secret}, secrets=(secret,))
        return Credentials(headers={name: secret}, secrets=(secret,))
    _user, colon, password = secret.partition(":")
    if not colon:
        source = f" in {where}" if where else ""
        raise SettingsError(f"the {api} {noun}{source} must be user:password (it holds no ':')")
    packed = base64.b64encode(secret.encode("latin-1")).decode("ascii")
    # The password alone and the packed pair are secrets too (a message may show either).
    return Credentials(
        headers={"Authorization": f"Basic {packed}"},
        secrets=tuple(s for s in (secret, packed, password) if len(s) >= 4 or s == secret),
    )
