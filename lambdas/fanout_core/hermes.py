"""Transitional: Hermes' client as it was built before API descriptions, for the callers that
still build it by name (the local runtime, the CLI, the Lambda handler, the benches).

``HermesClient(base_url, token, **kw)`` is ``ApiClient(builtin(), base_url, token, **kw)``
with today's default page size, for tests and benches that speak to Hermes by name; the
runtimes build ``ApiClient`` from the run's description (``fanout_core.assembly``).
"""

from __future__ import annotations

from typing import Any

from fanout_core.api_client import (
    DEFAULT_MAX_ITEMS_PER_LIST,
    DEFAULT_MAX_PAGES,
    DEFAULT_REQUEST_DEADLINE_S,
    MAX_RETRY_AFTER_S,
    PACER_RESERVE_S,
    PERMANENT_STATUSES,
    PREVIEW_CHARS,
    TRANSIENT_STATUSES,
    ApiClient,
    CallStats,
    DeadlineAdapter,
    PacerLike,
    check_base_url,
    check_token,
    parse_retry_after,
    redact,
)
from fanout_core.api_description import builtin

__all__ = [
    "DEFAULT_MAX_ITEMS_PER_LIST",
    "DEFAULT_MAX_PAGES",
    "DEFAULT_REQUEST_DEADLINE_S",
    "MAX_RETRY_AFTER_S",
    "PACER_RESERVE_S",
    "PERMANENT_STATUSES",
    "PREVIEW_CHARS",
    "TRANSIENT_STATUSES",
    "CallStats",
    "DeadlineAdapter",
    "HermesClient",
    "PacerLike",
    "check_base_url",
    "check_token",
    "parse_retry_after",
    "redact",
]


class HermesClient(ApiClient):
    """``ApiClient`` of the built-in description (page size 100 unless told)."""

    def __init__(self, base_url: str, token: str, *, page_size: int = 100, **options: Any):
        super().__init__(builtin(), base_url, token, page_size=page_size, **options)
