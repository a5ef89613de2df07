"""Engine ``stepfunctions``: a run's seed manifest starts the run's one execution.

The bucket notifies this function of every object created under the first stage's
prefix; a seed manifest (``<prefix><run>.json``) starts an execution of the run state
machine named after the run id, and anything else there (the parts the seed splits
into, written by the execution itself) is ignored. Execution names are unique per
state machine, so a duplicate notification, or a second upload of the same seed,
starts nothing: ``StartExecution`` answers ``ExecutionAlreadyExists`` (or, for the same
input while the first still runs, the running execution). A Standard execution's name
is reserved for 90 days after it closes; a run id reused later starts a new execution,
which re-runs only what has no done marker (they expire after 30 days).

``execution_input`` is the one source of what an execution reads: the starter and
``fanout redrive`` (a fresh execution over unfinished tasks) both use it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from fanout_aws.events import Scope, decode_event
from fanout_core.errors import FanoutError
from fanout_core.settings import EnvironmentSettings
from fanout_core.stages import STAGES, Stage, StageTable

log = logging.getLogger("fanout")

SEED_ITEMS = "seed"
RUN_PREFIXES = "run_prefixes"
RUN_ID = "run_id"


COUNTED_TASKS = 1000
"""The leaf's tasks the definition counts before its Map: one ``ListObjectsV2`` page."""
SIZING_TRANSITIONS = 3
"""States a run passes through to size the leaf's batches: the count, the choice, the
size (``stacks.constructs.sfn_engine.sizing_states``); a state transition each."""


def batch_size(items_per_batch: int, *, fans_out: bool, tasks: int, max_concurrency: int) -> int:
    """Task keys per child of a stage's Map (its ``ItemBatcher``). A stage that fans out
    runs one task per child: its tasks are few, each one's children are the next stage's
    work, and the next Map waits for the slowest child, so batching them would run
    siblings one after another while the stage's cap stays idle (10 middle-stage tasks in
    batches of 4 kept 3 of 16 slots busy for 9 s in the fleet bench). The leaf stage,
    nearly all the tasks and nothing after it, takes as many of its ``tasks`` as fill
    ``max_concurrency`` children once (one wave), at most ``items_per_batch``: a child's
    end idles its instance and voids the rest of its budget slice, and a last wave of a
    few children runs below R (docs/engines.md, "Sizing the leaf's batches"). Beyond
    ``COUNTED_TASKS`` the count stops, so the batch is smaller than one wave needs: more
    waves, never fewer children than slots."""
    if fans_out:
        return 1
    counted = min(max(tasks, 0), COUNTED_TASKS)
    return max(1, min(items_per_batch, -(-counted // max(max_concurrency, 1))))


@dataclass(frozen=True)
class Batching:
    """What sizes a run's children (``batch_size``): the most keys a leaf child takes and
    the leaf's cap (its Map's ``MaxConcurrency``)."""

    items_per_batch: int = 1
    leaf_cap: int = 1

    @classmethod
    def of(cls, settings: EnvironmentSettings, table: StageTable = STAGES) -> Batching:
        return cls(settings.items_per_batch, settings.stage(table.leaf.name).reserved_concurrency)

    def size(self, tasks: int, *, fans_out: bool) -> int:
        return batch_size(self.items_per_batch, fans_out=fans_out, tasks=tasks, max_concurrency=self.leaf_cap)


def stage_batch_size(settings: EnvironmentSettings, stage: Stage, tasks: int) -> int:
    """``batch_size`` of ``stage`` in ``settings``' definition for ``tasks`` listed tasks
    (the stack's, the fleet bench's and the cost model's one source)."""
    batching = Batching(settings.items_per_batch, settings.stage(stage.name).reserved_concurrency)
    return batching.size(tasks, fans_out=not stage.writes_parquet)


def execution_input(run_id: str, table: StageTable = STAGES) -> dict[str, Any]:
    """What one run's execution reads: the seed task's batch, and each stage's listing
    prefix for the run (``stacks.constructs.sfn_engine`` reads them by these names)."""
    return {
        RUN_ID: run_id,
        SEED_ITEMS: [{"Key": table.seed(run_id).key}],
        RUN_PREFIXES: {stage.name: stage.run_prefix(run_id) for stage in table},
    }


def start_run(
    client: Any, state_machine_arn: str, run_id: str, *, name: str | None = None, table: StageTable = STAGES
) -> str | None:
    """Start an execution of ``run_id`` of ``table`` named ``name`` (the run id itself by
    default, so a duplicate start is refused); its ARN, or None when one of that name exists."""
    try:
        answer = client.start_execution(
            stateMachineArn=state_machine_arn,
            name=name or run_id,
            input=json.dumps(execution_input(run_id, table), sort_keys=True),
        )
    except client.exceptions.ExecutionAlreadyExists:
        return None
    return str(answer["executionArn"])


def seed_runs(event: object, bucket: str, table: StageTable = STAGES) -> list[str]:
    """The run ids whose seed manifest ``event`` says was created in ``bucket``, in
    event order without repeats; everything else is logged once and left."""
    scope = Scope(bucket=bucket, stage=table.first, max_attempts=1)
    decoded = decode_event(event, scope)
    for refusal in decoded.refusals:
        log.warning(json.dumps({"refused": True, "reason": refusal.reason, "key": refusal.key}))
    runs: list[str] = []
    for item in decoded.attempts:
        try:
            address = table.parse(item.key)
        except FanoutError as exc:
            log.warning(json.dumps({"refused": True, "reason": str(exc)[:500], "key": item.key}))
            continue
        if address.is_seed and address.run_id not in runs:
            runs.append(address.run_id)
    return runs


def starter_handler() -> Any:
    """The Lambda entrypoint: clients built at cold start, one execution per new seed.
    A failing ``StartExecution`` raises, so Lambda's asynchronous retries try again."""
    import os

    import boto3

    from fanout_aws.config import ENV_BUCKET, ENV_STATE_MACHINE_ARN, table_from_environ

    client = boto3.client("stepfunctions")
    bucket, arn = os.environ[ENV_BUCKET], os.environ[ENV_STATE_MACHINE_ARN]
    table = table_from_environ()  # the description's table, picked once at cold start

    def handler(event: Any, _context: Any) -> dict[str, list[str]]:
        started: list[str] = []
        existing: list[str] = []
        for run_id in seed_runs(event, bucket, table):
            execution = start_run(client, arn, run_id, table=table)
            # A name taken by a closed execution, or by a running one with another input,
            # answers ExecutionAlreadyExists; the same input while running answers that
            # execution (nothing new either way).
            (started if execution is not None else existing).append(run_id)
            outcome = {"run_id": run_id, "outcome": "running" if execution else "already_exists"}
            if execution:
                outcome["execution_arn"] = execution
            log.info(json.dumps(outcome))
        return {"running": started, "already_exists": existing}

    return handler
