"""Fixtures of the core tier: settings, a bucket in a temp folder, and a Hermes made of dicts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fanout_core.errors import PermanentError, TransientError
from fanout_core.settings import EnvironmentSettings, parse_environment
from fanout_core.storage import LocalDirStorage

TEST_ENVIRONMENT: dict[str, Any] = {
    "hermes_url": "http://127.0.0.1:9",
    "hermes_rate_limit": 1000,
    "max_attempts": 3,
    "retry_base_delay_s": 0.01,
    "retry_max_delay_s": 0.04,
    "stages": {
        "warriors": {"reserved_concurrency": 2, "units_per_task": 2},
        "troops": {"reserved_concurrency": 2, "units_per_task": 2},
        "data_groups": {"reserved_concurrency": 2, "units_per_task": 2},
    },
}


@pytest.fixture
def settings() -> EnvironmentSettings:
    """Two units per task at every stage, so batching shows with a handful of ids."""
    return parse_environment("test", TEST_ENVIRONMENT)


@pytest.fixture
def store(tmp_path: Path) -> LocalDirStorage:
    return LocalDirStorage(tmp_path / "bucket")


class FakeHermes:
    """The core's ``fanout_core.task_context.Api`` protocol for Hermes' levels, served from dicts.

    ``troops`` maps warrior id -> troop dicts, ``data_groups`` maps (warrior, troop) -> group
    dicts, ``records`` maps (warrior, troop, group) -> record dicts. A list whose path names
    an id in ``not_found`` raises ``PermanentError(status=404)``, one naming an id in
    ``transient`` raises ``TransientError(status=503)``; ``warriors_error`` is raised by
    ``list_warriors``, which names no id. Like the real client, every list is
    a generator: the "request" (counted in ``calls``) happens when iteration starts.
    """

    def __init__(
        self,
        *,
        warriors: list[str] | None = None,
        troops: dict[str, list[dict[str, Any]]] | None = None,
        data_groups: dict[tuple[str, str], list[dict[str, Any]]] | None = None,
        records: dict[tuple[str, str, str], list[dict[str, Any]]] | None = None,
        not_found: set[str] | frozenset[str] = frozenset(),
        transient: set[str] | frozenset[str] = frozenset(),
        warriors_error: Exception | None = None,
    ):
        self.warriors = list(warriors or [])
        self.troops = troops or {}
        self.data_groups = data_groups or {}
        self.records = records or {}
        self.not_found = set(not_found)
        self.transient = set(transient)
        self.warriors_error = warriors_error
        self.calls: Counter[str] = Counter()
        self.paths: list[tuple[str, ...]] = []

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())

    def _serve(
        self, method: str, ids: tuple[str, ...], items: list[dict[str, Any]]
    ) -> Iterator[dict[str, Any]]:
        self.calls[method] += 1
        self.paths.append((method, *ids))
        if method == "list_warriors" and self.warriors_error is not None:
            raise self.warriors_error
        for ident in ids:
            if ident in self.not_found:
                raise PermanentError(f"{method} {ids!r}: 404 (not_found: {ident!r})", status=404)
            if ident in self.transient:
                raise TransientError(f"{method} {ids!r}: 503 (unavailable)", status=503)
        yield from (dict(item) for item in items)

    def list(self, level_name: str, ids: tuple[str, ...]) -> Iterator[dict[str, Any]]:
        """The core's ``list(level, ids)`` protocol over Hermes' four lists."""
        method = {
            "warriors": self.list_warriors,
            "troops": self.list_troops,
            "data_groups": self.list_data_groups,
            "records": self.list_records,
        }[level_name]
        return method(*ids)  # type: ignore[operator]

    def list_warriors(self) -> Iterator[dict[str, Any]]:
        return self._serve("list_warriors", (), [{"warrior_id": w, "name": w.upper()} for w in self.warriors])

    def list_troops(self, warrior_id: str) -> Iterator[dict[str, Any]]:
        return self._serve("list_troops", (warrior_id,), self.troops.get(warrior_id, []))

    def list_data_groups(self, warrior_id: str, troop_id: str) -> Iterator[dict[str, Any]]:
        ids = (warrior_id, troop_id)
        return self._serve("list_data_groups", ids, self.data_groups.get(ids, []))

    def list_records(self, warrior_id: str, troop_id: str, data_group_id: str) -> Iterator[dict[str, Any]]:
        ids = (warrior_id, troop_id, data_group_id)
        return self._serve("list_records", ids, self.records.get(ids, []))


@pytest.fixture
def fake_hermes():
    """Build a FakeHermes: ``fake_hermes(warriors=[...], troops={...}, not_found={...})``."""
    return FakeHermes
