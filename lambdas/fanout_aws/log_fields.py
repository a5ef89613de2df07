"""Every field a handler logs or records from an event is cut here: an event is outside
input, and a 200 KB ``eventSource``, bucket name or field name must not become a 200 KB log
line. A cut value keeps its head and says its full length.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

FIELD_MAX = 300
"""Characters of one field (or one value echoed in a reason) a log line or record shows."""
NAME_MAX = 60
"""Characters of a field's name."""
LONG_FIELDS = {"error": 500, "reason": 1000, "task_key": 1100, "key": 1100, "traceback": 4000}
"""Fields that may be longer: a reason quotes cut values; a key is at most 1,024 bytes."""
RESERVED_RENAMES = {"message": "detail", "name": "task_name", "args": "arguments"}
"""Field names ``logging.LogRecord`` keeps for itself (``extra=`` may not set them)."""


def cut(text: str, limit: int = FIELD_MAX) -> str:
    """``text``, or its head and its length when it is longer than ``limit``."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} chars)"


def shown(value: object, limit: int = 120) -> str:
    """An outside value quoted in a reason: its repr, cut."""
    return cut(repr(value), limit)


def bounded(fields: Mapping[Any, Any]) -> dict[str, Any]:
    """``fields`` with every name and every string value cut."""
    out: dict[str, Any] = {}
    for name, value in fields.items():
        key = cut(str(name), NAME_MAX)
        out[key] = cut(value, LONG_FIELDS.get(key, FIELD_MAX)) if isinstance(value, str) else value
    return out


def log_fields(logger: logging.Logger, level: int, message: str, fields: Mapping[str, Any]) -> None:
    """One log line whose (cut) fields are top-level keys of Lambda's JSON log (``extra=``)."""
    extra = {RESERVED_RENAMES.get(k, k): v for k, v in bounded(fields).items()}
    logger.log(level, cut(message, 2 * LONG_FIELDS["task_key"]), extra=extra)
