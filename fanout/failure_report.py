"""A run's failure records read back as what failed, why, and what to do next.

The summaries of ``local run``, ``demo`` and ``redrive``, ``fanout status`` and ``fanout
failures`` all read failures through this module, so they group, word and filter them
the same way, in the kinds of ``fanout_core.error_kinds``.
"""

from __future__ import annotations

import shlex
import shutil
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from fanout.bucket import StorageSpec
from fanout_core import keys
from fanout_core.error_kinds import HINTS, KINDS, kind_in
from fanout_core.failures import FailureRecord
from fanout_core.stages import STAGES, StageTable
from fanout_core.storage import NoSuchKey, Storage

LEGACY_CLASSES = frozenset(
    {"TransientError", "PermanentError", "BadRecord", "BadTask", "BadManifest", "TooManyRecords"}
)
"""Error class names ``redrive --error-class`` took before kinds existed; still matched."""


class UnknownKind(ValueError):
    """An ``--error-class`` that names no kind."""


def check_kind(value: str) -> str:
    """``value`` if it is a kind (or an old class name), else ``UnknownKind`` naming them all."""
    if value in KINDS or value in LEGACY_CLASSES:
        return value
    raise UnknownKind(f"unknown error kind {value!r}; kinds: {', '.join(KINDS)}")


@dataclass(frozen=True)
class FailedItem:
    """One failed whole task (``unit_id`` None) or one failed unit of a task."""

    stage: str
    task_key: str
    unit_id: str | None
    error_kind: str
    error_class: str
    status: int | None
    message: str
    ids: dict[str, str]

    def matches(self, kind: str | None) -> bool:
        return kind is None or kind in (self.error_kind, self.error_class)


@dataclass(frozen=True)
class FailureGroup:
    """The failures that share a stage, a kind and an HTTP status."""

    stage: str
    error_kind: str
    status: int | None
    tasks: int
    units: int
    example_id: str
    example_message: str

    @property
    def meaning(self) -> str:
        return KINDS.get(self.error_kind, "")

    @property
    def hint(self) -> str | None:
        return HINTS.get(self.error_kind)

    def to_json(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "error_kind": self.error_kind,
            "status": self.status,
            "tasks": self.tasks,
            "units": self.units,
            "example_id": self.example_id,
            "example_message": self.example_message,
            "meaning": self.meaning,
            "hint": self.hint,
        }


def read_failures(
    storage: Storage, run_id: str, *, stage: str | None = None, table: StageTable = STAGES
) -> list[FailureRecord]:
    """Every readable failure record of the run (of one stage), in the table's order."""
    keys.check_run_id(run_id)
    stages = [table.named(stage)] if stage else list(table)
    found: list[FailureRecord] = []
    for st in stages:
        record_keys = list(storage.list(keys.failed_key(st.run_prefix(run_id))))
        if st is table.first:
            seed_record = table.seed(run_id).failed_key
            if storage.exists(seed_record):
                record_keys.insert(0, seed_record)
        for rk in record_keys:
            try:
                found.append(FailureRecord.from_bytes(storage.get(rk)))
            except (NoSuchKey, ValueError, TypeError):
                continue
    return found


def record_matches(record: FailureRecord, kind: str | None, table: StageTable = STAGES) -> bool:
    """A record matches a kind if it, or any of its failed units, failed with it."""
    return any(item.matches(kind) for item in items_of(record, table))


def items_of(record: FailureRecord, table: StageTable = STAGES) -> list[FailedItem]:
    """The record as failed items: itself for a whole task, else one per failed unit."""
    stage = record.stage or "?"
    if record.kind != "units" or not record.units:
        return [
            FailedItem(
                stage,
                record.task_key,
                None,
                record.error_kind,
                record.error_class,
                record.status,
                record.message,
                {},
            )
        ]
    return [
        FailedItem(
            stage,
            record.task_key,
            unit_id(unit, record.stage, table),
            kind_in(unit),
            str(unit.get("error_class", "")),
            unit.get("status") if isinstance(unit.get("status"), int) else None,
            str(unit.get("message", "")),
            {k: str(v) for k, v in unit.items() if k not in _ERROR_FIELDS},
        )
        for unit in record.units
    ]


_ERROR_FIELDS = {"error_class", "error_kind", "message", "status"}


def unit_id(unit: dict[str, Any], stage: str | None, table: StageTable = STAGES) -> str:
    """The failed unit's own id (its stage's unit type says which field that is)."""
    try:
        return str(table.named(stage or "").body.unit_from_fields(unit).id)
    except Exception:  # an old or foreign record: the deepest id it names
        named = [v for k, v in unit.items() if k.endswith("_id")]
        return str(named[-1]) if named else "?"


def failed_items(
    records: Iterable[FailureRecord], kind: str | None = None, table: StageTable = STAGES
) -> list[FailedItem]:
    return [item for record in records for item in items_of(record, table) if item.matches(kind)]


def group_failures(items: Iterable[FailedItem]) -> list[FailureGroup]:
    """Failures grouped by (stage, kind, status), largest group first."""
    groups: dict[tuple[str, str, int | None], list[FailedItem]] = {}
    for item in items:
        groups.setdefault((item.stage, item.error_kind, item.status), []).append(item)
    out = []
    for (stage, kind, status), members in groups.items():
        first = members[0]
        out.append(
            FailureGroup(
                stage=stage,
                error_kind=kind,
                status=status,
                tasks=len({m.task_key for m in members}),
                units=sum(1 for m in members if m.unit_id is not None),
                example_id=first.unit_id if first.unit_id is not None else first.task_key,
                example_message=first.message,
            )
        )
    return sorted(out, key=lambda g: (-g.tasks - g.units, g.stage, g.error_kind))


def redrive_command(
    run_id: str,
    spec: StorageSpec,
    *,
    hermes_url: str | None = None,
    stage: str | None = None,
    kind: str | None = None,
    env: str | None = None,
    config: str | None = None,
    api: str | None = None,
) -> str:
    """The exact ``fanout redrive`` that re-triggers these failures (locally it runs them too);
    ``api``: the description file a described API's run was crawled with."""
    argv = ["fanout", "redrive", run_id, *spec.argv()]
    if api:
        argv += ["--api", api]
    if not spec.bucket:
        argv += ["--api-url" if api else "--hermes-url", hermes_url or (_API_URL if api else _URL)]
    if stage:
        argv += ["--stage", stage]
    if kind:
        argv += ["--error-class", kind]
    if env and env != "local":
        argv += ["--env", env]
    if config:
        argv += ["--config", config]
    return " ".join(a if a is _URL or a is _API_URL else shlex.quote(a) for a in argv)


_URL = '"$HERMES_URL"'
"""Where a redrive command needs the Hermes URL and this command does not know it."""
_API_URL = '"$API_URL"'
"""The same, for a described API's base URL."""


def cut(text: str, width: int) -> str:
    """One line of at most ``width`` characters."""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: max(0, width - 3)] + "..."


def terminal_width() -> int:
    return max(60, shutil.get_terminal_size((100, 24)).columns)


def render_groups(groups: list[FailureGroup], width: int | None = None) -> list[str]:
    """The failures-by-reason block of a summary: a row per group, an example, what to do."""
    if not groups:
        return []
    width = width or terminal_width()
    stage_w = max(5, *(len(g.stage) for g in groups))
    kind_w = max(4, *(len(g.error_kind) for g in groups))
    lines = [
        "failures by reason:",
        f"  {'stage':<{stage_w}}  {'kind':<{kind_w}}  {'HTTP':>4}  {'tasks':>5}  {'units':>5}",
    ]
    for g in groups:
        status = str(g.status) if g.status is not None else "-"
        lines.append(
            f"  {g.stage:<{stage_w}}  {g.error_kind:<{kind_w}}  {status:>4}  {g.tasks:>5}  {g.units:>5}"
        )
        lines.append("    " + cut(f"e.g. {g.example_id}: {g.example_message}", width - 6))
        lines += textwrap.wrap(
            g.hint or g.meaning, width - 2, initial_indent="    next: ", subsequent_indent="          "
        )
    return lines


def item_to_json(item: FailedItem) -> dict[str, Any]:
    return {
        "unit_id": item.unit_id,
        "error_kind": item.error_kind,
        "error_class": item.error_class,
        "status": item.status,
        "message": item.message,
        "ids": item.ids,
    }


def record_to_json(
    record: FailureRecord, kind: str | None = None, table: StageTable = STAGES
) -> dict[str, Any]:
    """A failure record as ``fanout failures --json`` lists it (units: only those of ``kind``)."""
    units = [i for i in items_of(record, table) if i.unit_id is not None and i.matches(kind)]
    return {
        "stage": record.stage,
        "task_key": record.task_key,
        "kind": record.kind,
        "error_kind": record.error_kind,
        "error_class": record.error_class,
        "status": record.status,
        "message": record.message,
        "transient": record.transient,
        "attempts": record.attempts,
        "first_attempt_at": record.first_attempt_at,
        "last_attempt_at": record.last_attempt_at,
        "units": [item_to_json(u) for u in units],
    }


def render_listing(
    records: list[FailureRecord], kind: str | None = None, table: StageTable = STAGES
) -> list[str]:
    """``fanout failures``: every failed task, and under it each failed unit, with its message."""
    lines: list[str] = []
    for record in records:
        status = f"HTTP {record.status}" if record.status is not None else "no HTTP status"
        tries = f"{record.attempts} attempt{'s' if record.attempts != 1 else ''}"
        units = [i for i in items_of(record, table) if i.unit_id is not None and i.matches(kind)]
        if record.kind == "units" and record.units:
            lines.append(f"{record.stage}  task {record.task_key}  ({len(units)} failed unit(s), {tries})")
            for u in units:
                unit_status = f"HTTP {u.status}" if u.status is not None else "-"
                lines.append(f"  unit {u.unit_id}  {u.error_kind}  {unit_status}")
                lines.append(f"    {' '.join(u.message.split())}")
        else:
            lines.append(f"{record.stage}  task {record.task_key}  {record.error_kind}  {status}  {tries}")
            lines.append(f"    {' '.join(record.message.split())}")
    return lines
