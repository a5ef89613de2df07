"""The work of every listing stage: list each unit's children, batch them, write child tasks.

The children are decided once. The first attempt lists every unit, collapses ids a
listing repeats, sorts and batches the children and writes that decision, create-only,
as the task's *plan* (``plans/<task key>``) before it creates any child; every later
attempt and every duplicate delivery reads the plan instead of listing again. So a
listing that changes while the run is under way cannot shift batch boundaries between
attempts, and no unit can land in two batches. The seed manifest is split the same way,
its listing being the manifest's ids or every unit of the first level the API lists.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fanout_core.bodies import Manifest, TaskBody, TaskFormat, Unit, chunks, dumps
from fanout_core.error_kinds import failure_fields
from fanout_core.errors import BadTask, PermanentError

if TYPE_CHECKING:
    from fanout_core.stages import Stage
    from fanout_core.task_context import Task, TaskContext, TaskResult


@dataclass
class Plan:
    """A listing task's decision: its children (key and body), failed units, repeats collapsed."""

    children: list[tuple[str, bytes]] = field(default_factory=list)
    failed_units: list[dict[str, Any]] = field(default_factory=list)
    duplicates: int = 0

    def to_bytes(self) -> bytes:
        return dumps(
            {
                "children": [{"key": k, "body": json.loads(b)} for k, b in self.children],
                "failed_units": self.failed_units,
                "duplicates": self.duplicates,
            }
        )

    @classmethod
    def from_bytes(cls, body: bytes) -> Plan:
        try:
            doc = json.loads(body)
            return cls(
                children=[(str(c["key"]), dumps(c["body"])) for c in doc["children"]],
                failed_units=list(doc["failed_units"]),
                duplicates=int(doc["duplicates"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise BadTask(f"the task's plan is unreadable: {exc}") from None


@dataclass(frozen=True)
class _Parent:
    """One unit to expand: the units down to it (carried fields only), how to list its
    children, and the failed-unit fields naming it."""

    above: tuple[Unit, ...]
    failure_ids: dict[str, str]
    listing: Callable[[], Iterable[Unit]]
    missing: list[dict[str, Any]] = field(default_factory=list)
    """Units a seed named that its listing lacks (filled while listing)."""


def _units(ctx: TaskContext, fmt: TaskFormat, ids: tuple[str, ...]) -> Callable[[], Iterable[Unit]]:
    """The units of ``fmt``'s level the API lists under ``ids``."""

    def listing() -> Iterable[Unit]:
        return (fmt.unit_from_item(item) for item in ctx.client.list(fmt.level.name, ids))

    return listing


def fan_out(task: Task, ctx: TaskContext, result: TaskResult) -> None:
    """A listing stage's task: each unit's children become the next stage's tasks."""
    child = ctx.table.child_of(task.stage)
    body = task.body
    if child is None or isinstance(body, Manifest):
        raise BadTask(f"stage {task.stage.name} has no stage below it to fan out to")
    level = task.stage.level
    parents = [
        _Parent(
            above=(*body.above, TaskFormat.carried(level, unit)),
            failure_ids=body.unit_ids(unit),
            listing=_units(ctx, child.body, (*body.path, unit.id)),
        )
        for unit in body.units
    ]
    _carry_out(task, ctx, result, child, parents)


def split_seed(task: Task, ctx: TaskContext, result: TaskResult) -> None:
    """The seed: its units (named, or every one the API lists) become parts of the first stage.

    Named units of a level that keeps no field are taken as they are (a name the API does
    not know fails at the next listing); a level that keeps fields lists its units to read
    them, and a named unit the listing lacks fails here, as not found."""
    manifest = task.body
    assert isinstance(manifest, Manifest)
    fmt = ctx.table.first.body
    level = fmt.level
    id_name = str(level.id_name)
    listed = _units(ctx, fmt, ())
    missing: list[dict[str, Any]] = []

    def listing() -> Iterable[Unit]:
        named = manifest.ids
        if named is not None and fmt.plain:
            return [Unit(id_name, ident) for ident in named]
        units = list(listed())
        if named is not None:
            by_id = {u.id: u for u in units}
            for ident in named:
                if ident not in by_id:
                    error = PermanentError(f"the API lists no {level.name} {ident!r}", kind="not_found")
                    missing.append({id_name: ident, **failure_fields(error)})
            return [by_id[ident] for ident in named if ident in by_id]
        if not units:
            raise PermanentError(f"the API lists no {level.name}", kind="not_found")
        return units

    # A listing error here fails the whole task: the seed has no units of its own.
    parent = _Parent(above=(), failure_ids={}, listing=listing, missing=missing)
    _carry_out(task, ctx, result, ctx.table.first, [parent], whole_task=True)


def _carry_out(
    task: Task,
    ctx: TaskContext,
    result: TaskResult,
    child: Stage,
    parents: list[_Parent],
    *,
    whole_task: bool = False,
) -> None:
    plan, reused = _plan(task, ctx, child, parents, whole_task=whole_task)
    written = _children_written(ctx, plan) if reused else set()
    for key, body in plan.children:
        if key not in written and ctx.storage.put_if_absent(key, body):
            result.children += 1
    result.failed_units.extend(plan.failed_units)
    result.duplicates += plan.duplicates


def _children_written(ctx: TaskContext, plan: Plan) -> set[str]:
    """The plan's children an earlier attempt already wrote: one listing per folder.

    Each attempt then only writes what is left, so a task with many children makes
    durable progress through a storm of throttled writes (S3 SlowDown) instead of
    needing one attempt in which every write succeeds."""
    wanted = {key for key, _ in plan.children}
    folders = sorted({key.rsplit("/", 1)[0] + "/" for key in wanted})
    return {key for folder in folders for key in ctx.storage.list(folder) if key in wanted}


def _plan(
    task: Task, ctx: TaskContext, child: Stage, parents: list[_Parent], *, whole_task: bool
) -> tuple[Plan, bool]:
    """The task's plan, and whether an earlier attempt decided it: read if one wrote it,
    else listed, written and kept."""
    plan_key = task.address.plan_key
    if ctx.storage.exists(plan_key):  # exists, not a bare get: S3 answers 403 for a missing key
        return Plan.from_bytes(ctx.storage.get(plan_key)), True
    plan = Plan()
    per_task = ctx.settings.stage(child.name).units_per_task
    for parent in parents:
        try:
            units, repeats = _distinct_sorted(parent.listing())
        except PermanentError as exc:
            if whole_task:
                raise
            plan.failed_units.append({**parent.failure_ids, **failure_fields(exc)})
            continue
        plan.failed_units.extend(parent.missing)
        plan.duplicates += repeats
        ids = tuple(u.id for u in parent.above)
        for index, batch in enumerate(chunks(units, per_task)):
            body: TaskBody = child.body.make(task.address.run_id, parent.above, tuple(batch))
            address = child.address(task.address.run_id, ids, index)
            plan.children.append((address.key, body.to_bytes()))
    if not ctx.storage.put_if_absent(plan_key, plan.to_bytes()):
        return Plan.from_bytes(ctx.storage.get(plan_key)), True  # a concurrent attempt decided first
    return plan, False


def _distinct_sorted(units: Iterable[Unit]) -> tuple[list[Unit], int]:
    """Units by id, each id once (its first listing wins); and how many repeats were dropped."""
    kept: dict[str, Unit] = {}
    repeats = 0
    for unit in units:
        if unit.id in kept:
            repeats += 1
        else:
            kept[unit.id] = unit
    return [kept[i] for i in sorted(kept)], repeats
