"""The one JSON reader for documents from outside (manifests, task bodies, settings files,
prices, event bodies): ``json.loads``, except that an object repeating a key is refused.

Python's reader keeps the last of repeated keys silently, so a manifest
``{"shops": "all", "shops": [7]}`` would crawl one unit where its writer may have meant
all of them; a document that says two things is not guessed at.
"""

from __future__ import annotations

import json
from typing import Any


class RepeatedKey(ValueError):
    """An object in the document names one key twice."""


def loads(text: str | bytes) -> Any:
    """``json.loads(text)``; RepeatedKey (a ValueError) naming the first key given twice."""
    return json.loads(text, object_pairs_hook=_unique)


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for key, value in pairs:
        if key in doc:
            shown = key if len(key) <= 40 else key[:37] + "..."
            raise RepeatedKey(f"the key {shown!r} is given twice in one object")
        doc[key] = value
    return doc
