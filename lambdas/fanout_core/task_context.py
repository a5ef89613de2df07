"""What a stage's work is given (``TaskContext``, ``Task``) and what it reports (``TaskResult``).

The core reaches the outside world only through these: the bucket through ``Storage``,
the API through ``Api``; it knows nothing of Lambda, boto3 or event shapes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from fanout_core.bodies import Manifest, TaskBody
from fanout_core.keys import TaskAddress
from fanout_core.settings import EnvironmentSettings
from fanout_core.storage import Storage

if TYPE_CHECKING:
    from fanout_core.stages import Stage, StageTable


class Api(Protocol):
    """What the core needs of the API client: one list per level of the description."""

    def list(self, level_name: str, ids: tuple[str, ...]) -> Iterator[dict[str, Any]]:
        """Every item of ``level_name`` under the units ``ids`` (one per level above, top
        first): checked items for a level with units, rows (column name -> value, ready
        for Parquet) for the leaf."""
        ...


@dataclass(frozen=True, kw_only=True)
class TaskContext:
    storage: Storage
    client: Api
    settings: EnvironmentSettings
    table: StageTable
    """The run's stage table, required: a context built without one used to fall back to the
    product's and refuse every task of another table (worker processes did)."""
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))


@dataclass(frozen=True)
class Task:
    """One task, its key parsed and its body read and checked against that key."""

    address: TaskAddress
    body: TaskBody | Manifest
    attempt: int = 1
    """Which attempt this is: a retry may follow one that finished the work but not its bookkeeping."""

    @property
    def stage(self) -> Stage:
        return self.address.stage


@dataclass(kw_only=True)
class TaskResult:
    stage: str
    key: str
    skipped: bool = False
    """The done marker existed: a duplicate delivery, nothing was fetched."""
    children: int = 0
    """Child task objects this run created (not counting ones that existed)."""
    files: int = 0
    records: int = 0
    duplicates: int = 0
    """Ids a listing named more than once, collapsed into one unit each."""
    failed_units: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
