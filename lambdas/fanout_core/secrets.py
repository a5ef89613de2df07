"""Keeping secrets out of text: error messages go into failure records and logs.

``redact`` replaces a secret wherever it appears in a piece of text: as written, percent-
encoded (the way it shows in a URL or a query) and escaped (the way ``repr`` shows it
inside an exception message).
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import quote, quote_plus

MASK = "***"


def secret_forms(secret: str) -> tuple[str, ...]:
    """Every way ``secret`` may be spelled in a message, longest first; none for ``""``."""
    if not secret:
        return ()
    forms = {
        secret,
        quote(secret, safe=""),
        quote(secret),
        quote_plus(secret),
        repr(secret)[1:-1],
        ascii(secret)[1:-1],
    }
    return tuple(sorted(forms, key=len, reverse=True))


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every form of every (non-empty) secret replaced by ``***``."""
    for secret in secrets:
        for form in secret_forms(secret):
            if form in text:
                text = text.replace(form, MASK)
    return text
