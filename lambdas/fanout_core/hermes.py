"""Transitional: Hermes' client as it was built before API descriptions, for the callers that
still build it by name (the local runtime, the CLI, the Lambda handler, the benches).

``HermesClient(base_url, token, **kw)`` is ``ApiClient(builtin(), base_url, token, **kw)``
with today's default page size; its level-named lists delegate to ``ApiClient.list``. This
module goes once the stage table calls ``list(level_name, ids)`` and the runtimes build
``ApiClient`` from the environment's description.
"""

from __future__ import annotations

from collections.abc import Iterator
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

    # The stage table's lists until it calls ``list`` itself.
    def list_warriors(self) -> Iterator[dict[str, Any]]:
        return self.list("warriors", ())

    def list_troops(self, warrior_id: str) -> Iterator[dict[str, Any]]:
        return self.list("troops", (warrior_id,))

    def list_data_groups(self, warrior_id: str, troop_id: str) -> Iterator[dict[str, Any]]:
        return self.list("data_groups", (warrior_id, troop_id))

    def list_records(self, warrior_id: str, troop_id: str, data_group_id: str) -> Iterator[dict[str, Any]]:
        return self.list("records", (warrior_id, troop_id, data_group_id))
