"""The stage table: the one place that names the stages, their prefixes and their work.

The table is made from an API description (``table_for``): every level but the last is
a stage, which handles that level's units and lists the next level under each of them.
Each ``Stage`` says where its tasks live (prefix and the id folders of its keys), its
level and the level it lists, the body its task objects hold, and the function that does
its work. The CDK stack (functions, notification filters, IAM scopes), the local runtime
(dispatch by prefix), the pipeline core (``run_task``), the CLI (status, redrive) and the
audit all read a ``StageTable``; ``STAGES``, the built-in description's, is the one the
product runs by default.

The first stage also reads the run's seed manifest, ``<its prefix><run>.json``, which
it splits into parts of its own units; the last stage's children are output files. A
2-level API has one stage that does both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from fanout_core import keys
from fanout_core.api_description import ApiDescription, Level, builtin
from fanout_core.bodies import TaskFormat
from fanout_core.errors import BadTask
from fanout_core.fan_out import fan_out
from fanout_core.records import write_records

if TYPE_CHECKING:
    from fanout_core.task_context import Task, TaskContext, TaskResult

DATA_PREFIX = "data/"
COMPACTED_PREFIX = "compacted/"
"""A complete run's output rewritten into few large files, one generation at a time
(``fanout_core.compaction``); the run's ``current.json`` there names the generation to read."""
QUERY_PREFIX = "athena/"
"""One Athena symlink manifest per compacted run, listing its current files (the Glue table's location)."""
DONE_PREFIX = keys.DONE_PREFIX
FAILED_PREFIX = keys.FAILED_PREFIX
PLANS_PREFIX = keys.PLANS_PREFIX
ARCHIVE_PREFIX = keys.ARCHIVE_PREFIX
TASK_SUFFIX = keys.TASK_SUFFIX

Work = Callable[["Task", "TaskContext", "TaskResult"], None]
STAGE_HANDLER = "fanout_aws.handlers.stage.handler"
"""The one Lambda entrypoint of every stage; it learns its stage from ``FANOUT_STAGE``."""


@dataclass(frozen=True, kw_only=True, repr=False)
class Stage:
    name: str
    input_prefix: str
    levels: tuple[str, ...]
    """The id folders of its task keys after ``run=``: the folders of the levels above."""
    level: Level = field(compare=False)
    """The level whose units its tasks hold."""
    child: Level = field(compare=False)
    """The level it lists under each unit (the leaf's items are the output rows)."""
    body: TaskFormat = field(compare=False)
    """Reads and writes its task bodies."""
    work: Work
    """What one task does: ``fan_out`` (list each unit's children, write child tasks)
    or ``write_records`` (list each unit's rows, write Parquet)."""
    handler: str
    """Dotted path of the Lambda entrypoint, ``module.function``."""
    description: str = ""

    def __repr__(self) -> str:
        return f"Stage({self.name!r}, {self.input_prefix!r})"

    @property
    def function_id(self) -> str:
        return "".join(part.capitalize() for part in self.name.split("_"))

    @property
    def writes_parquet(self) -> bool:
        return self.work is write_records

    def address(self, run_id: str, ids: tuple[str, ...], part: int) -> keys.TaskAddress:
        return keys.address_for(self, run_id, ids, part)

    def run_prefix(self, run_id: str) -> str:
        """Listing prefix of one run's tasks of this stage (the seed is not under it)."""
        return f"{self.input_prefix}run={keys.check_run_id(run_id)}/"


class StageTable:
    """An ordered chain of stages: each one's children are the next one's tasks."""

    def __init__(
        self,
        stages: tuple[Stage, ...],
        *,
        api: ApiDescription,
        output_prefix: str = DATA_PREFIX,
        compacted_prefix: str = COMPACTED_PREFIX,
        query_prefix: str = QUERY_PREFIX,
    ):
        prefixes = [s.input_prefix for s in stages] + [output_prefix, compacted_prefix, query_prefix]
        for a in prefixes:
            for b in prefixes:
                if a is not b and a.startswith(b):
                    raise ValueError(f"prefixes {a!r} and {b!r} overlap (S3 would refuse the notifications)")
        if len({s.name for s in stages}) != len(stages):
            raise ValueError("stage names must be distinct")
        self.stages = stages
        self.api = api
        """The description the table was made from: its levels, client and rows."""
        self.output_prefix = output_prefix
        self.compacted_prefix = compacted_prefix
        self.query_prefix = query_prefix

    def __iter__(self) -> Any:
        return iter(self.stages)

    def __len__(self) -> int:
        return len(self.stages)

    def __getitem__(self, index: int) -> Stage:
        return self.stages[index]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.stages)

    @property
    def first(self) -> Stage:
        return self.stages[0]

    @property
    def leaf(self) -> Stage:
        return self.stages[-1]

    def named(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(f"unknown stage {name!r}; stages are {', '.join(self.names)}")

    def child_of(self, stage: Stage) -> Stage | None:
        """The stage whose tasks ``stage`` creates (None for the leaf)."""
        index = self.stages.index(stage)
        return self.stages[index + 1] if index + 1 < len(self.stages) else None

    def output_prefix_of(self, stage: Stage) -> str:
        child = self.child_of(stage)
        return child.input_prefix if child else self.output_prefix

    def for_key(self, key: str) -> Stage | None:
        """The stage an object at ``key`` triggers, as the bucket's notifications would."""
        for stage in self.stages:
            if key.startswith(stage.input_prefix) and key.endswith(TASK_SUFFIX):
                return stage
        return None

    def parse(self, key: str) -> keys.TaskAddress:
        """The address of the task at ``key``; BadTask if ``key`` is no task of this table."""
        if not isinstance(key, str):
            raise BadTask(f"a task key must be a string, got {type(key).__name__}")
        stage = self.for_key(key)
        if stage is None:
            raise BadTask(f"{key[:300]!r} is under no stage's prefix")
        return keys.parse_in_stage(key, stage, seeds=stage is self.first)

    def seed(self, run_id: str) -> keys.TaskAddress:
        """The address of a run's seed manifest."""
        return keys.seed_address(self.first, run_id)

    def output_run_prefix(self, run_id: str) -> str:
        return f"{self.output_prefix}run={keys.check_run_id(run_id)}/"

    def compacted_run_prefix(self, run_id: str) -> str:
        return f"{self.compacted_prefix}run={keys.check_run_id(run_id)}/"

    def query_run_prefix(self, run_id: str) -> str:
        return f"{self.query_prefix}run={keys.check_run_id(run_id)}/"


def table_for(
    api: ApiDescription,
    *,
    output_prefix: str = DATA_PREFIX,
    compacted_prefix: str = COMPACTED_PREFIX,
    query_prefix: str = QUERY_PREFIX,
) -> StageTable:
    """The stage table of ``api``: one stage per level but the last, in order.

    Module-level work functions, not lambdas: the table pickles (by reference to them), so
    the local runtime hands the run's own table to its worker processes (fanout.leaf_workers).
    """
    stage_levels = api.stage_levels
    stages = []
    for index, level in enumerate(stage_levels):
        leaf = index == len(stage_levels) - 1
        stages.append(
            Stage(
                name=level.name,
                input_prefix=cast(str, level.prefix),
                levels=tuple(cast(str, lv.folder) for lv in stage_levels[:index]),
                level=level,
                child=api.levels[index + 1],
                body=TaskFormat(stage_levels[:index], level),
                work=write_records if leaf else fan_out,
                handler=STAGE_HANDLER,
                description=level.description,
            )
        )
    return StageTable(
        tuple(stages),
        api=api,
        output_prefix=output_prefix,
        compacted_prefix=compacted_prefix,
        query_prefix=query_prefix,
    )


STAGES = table_for(builtin())
STAGE_NAMES: tuple[str, ...] = STAGES.names
MANIFEST_PREFIX = STAGES.first.input_prefix


def stage_named(name: str) -> Stage:
    return STAGES.named(name)


def stage_for_key(key: str) -> Stage | None:
    return STAGES.for_key(key)
