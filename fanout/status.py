"""Run status read from the bucket alone, so it is the same for a local and a deployed run."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fanout_core import keys
from fanout_core.compaction import output_files
from fanout_core.retry import RetryPolicy
from fanout_core.settings import EnvironmentSettings
from fanout_core.stages import STAGES, TASK_SUFFIX, Stage, StageTable
from fanout_core.storage import Storage


@dataclass
class StageStatus:
    stage: str
    written: int = 0
    finished: int = 0
    failed_keys: list[str] = field(default_factory=list)
    """Tasks with a failure record (the whole task, or some of its units)."""
    pending: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    """Pending tasks older than the stale threshold: most likely lost in flight."""

    @property
    def open(self) -> int:
        return len(self.pending)

    @property
    def failed(self) -> int:
        return len(self.failed_keys)


@dataclass
class RunStatus:
    run_id: str
    seeded: bool
    stages: list[StageStatus]
    data_files: int

    @property
    def complete(self) -> bool:
        """Every task has finished or has a failure record (and the run was seeded)."""
        return self.seeded and all(s.open == 0 for s in self.stages)

    @property
    def failed(self) -> int:
        return sum(s.failed for s in self.stages)

    @property
    def failed_keys(self) -> list[str]:
        return [k for s in self.stages for k in s.failed_keys]

    @property
    def stale(self) -> list[str]:
        return [k for s in self.stages for k in s.stale]


def _stage_tasks(storage: Storage, table: StageTable, stage: Stage, run_id: str) -> list[str]:
    found = [k for k in storage.list(stage.run_prefix(run_id)) if k.endswith(TASK_SUFFIX)]
    if stage is table.first:
        seed = table.seed(run_id).key
        if storage.exists(seed):
            found.insert(0, seed)
    return found


def stale_after_s(settings: EnvironmentSettings, stage: str) -> float:
    """How long a task may stay pending before it counts as lost.

    Lambda keeps an event for up to the maximum event age, then our retries may take
    up to ``max_attempts`` backoffs and runs; past all of that nothing will run it.
    """
    st = settings.stage(stage)
    policy = RetryPolicy.from_settings(settings)
    backoffs = sum(
        min(policy.max_delay_s, policy.base_delay_s * 2 ** (n - 1)) for n in range(1, policy.max_attempts)
    )
    return st.max_event_age_s + backoffs + st.timeout_s * policy.max_attempts


def run_status(
    storage: Storage,
    run_id: str,
    *,
    stale_after: Callable[[str], float] | None = None,
    now: float | None = None,
    table: StageTable = STAGES,
) -> RunStatus:
    """Count each stage's tasks; with ``stale_after`` (seconds per stage), find the lost ones."""
    keys.check_run_id(run_id)
    clock = time.time() if now is None else now
    seed = table.seed(run_id)
    stages = []
    for stage in table:
        tasks = _stage_tasks(storage, table, stage, run_id)
        done = set(storage.list(keys.done_key(stage.run_prefix(run_id))))
        failed = set(storage.list(keys.failed_key(stage.run_prefix(run_id))))
        if stage is table.first:
            for marker, bucket in ((seed.done_key, done), (seed.failed_key, failed)):
                if storage.exists(marker):
                    bucket.add(marker)
        status = StageStatus(stage.name, written=len(tasks))
        for key in tasks:
            if keys.failed_key(key) in failed:
                status.failed_keys.append(key)
            elif keys.done_key(key) in done:
                status.finished += 1
            else:
                status.pending.append(key)
                if stale_after is not None:
                    written_at = storage.last_modified(key)
                    if written_at is not None and clock - written_at > stale_after(stage.name):
                        status.stale.append(key)
        stages.append(status)
    data_files = len(output_files(storage, run_id, table))
    return RunStatus(
        run_id=run_id,
        seeded=storage.exists(seed.key),
        stages=stages,
        data_files=data_files,
    )
