"""Start (or resume) one local run: build its parts from the settings, seed it, run it to the end.

The CLI, the demo, the tests and the benchmarks all start runs through ``start_run``
so they exercise exactly the same path.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from fanout.api_choice import Client, api_client, check_recorded_api, record_api
from fanout.at_work import THREADS_PER_PLACE, AtWork
from fanout.bucket import StorageSpec
from fanout.leaf_workers import LeafPool, make_worker_spec
from fanout.local_runtime import LocalRuntime, RunReport
from fanout.progress import ProgressPrinter
from fanout.shared_pacing import SharedBudget
from fanout.status import run_status
from fanout_core import learned_limit
from fanout_core.api_client import CallStats, check_token
from fanout_core.assembly import stage_concurrency
from fanout_core.bodies import parse_manifest
from fanout_core.errors import BadManifest
from fanout_core.learned_limit import LearnedLimit, start_rate
from fanout_core.pacing import NoPacer
from fanout_core.settings import EnvironmentSettings
from fanout_core.stages import STAGES, Stage, StageTable
from fanout_core.storage import NoSuchKey, Storage


@dataclass
class RunOutcome:
    run_id: str
    report: RunReport
    stats: dict[str, CallStats]
    resumed: int = 0
    """Unfinished tasks of an earlier invocation that this one picked up."""
    prepared: Any = None
    """What ``start_run``'s ``prepare`` callback returned (a redrive's result, say)."""
    failure_records: list[str] = field(default_factory=list)
    """Every task of the run with a failure record in the bucket, whoever wrote it."""
    compaction: Any = None
    """With ``compact``, the ``fanout_core.compaction.CompactionResult`` of the finished run."""
    limit: LearnedLimit | None = None
    """The limit kept for this API (learned by this run, or the one it started from)."""

    @property
    def ok(self) -> bool:
        """No task of the run has a failure record, in this invocation or an earlier one."""
        return not self.failure_records

    @property
    def earlier_failures(self) -> list[str]:
        """Failure records this invocation found rather than wrote."""
        mine = set(self.report.failures)
        return [k for k in self.failure_records if k not in mine]

    @property
    def calls(self) -> int:
        return sum(s.calls for s in self.stats.values())

    @property
    def throttled(self) -> int:
        return sum(s.throttled for s in self.stats.values())

    @property
    def client_retries(self) -> int:
        return sum(s.retries for s in self.stats.values())


def seed_manifest(storage: Storage, run_id: str, body: bytes, table: StageTable = STAGES) -> bool:
    """Validate and write the seed (True if new); a different manifest for the run is an error."""
    parse_manifest(body, table.api)
    key = table.seed(run_id).key
    if storage.put_if_absent(key, body):
        return True
    try:
        existing = storage.get(key)
    except NoSuchKey:  # pragma: no cover - deleted between the two calls
        existing = b""
    try:
        parse_manifest(existing, table.api)
    except BadManifest as exc:
        raise BadManifest(
            f"run {run_id!r} already has an object at {key} that is no manifest ({exc}); "
            "remove it, or use a new run id"
        ) from None
    if json.loads(existing) != json.loads(body):
        raise BadManifest(
            f"run {run_id!r} already has a different manifest at {key}; "
            "use a new run id, or the same manifest to resume"
        )
    return False


def make_clients(
    settings: EnvironmentSettings,
    hermes_url: str,
    token: str,
    *,
    budget: SharedBudget | None = None,
    concurrency: dict[str, int],
    table: StageTable = STAGES,
    at_work: AtWork | None = None,
) -> tuple[Callable[[Stage], Client], dict[str, CallStats]]:
    """One client of the table's API per stage; all pace against ``budget`` (None: no
    pacing); the leaf stage's gives its place in ``at_work`` up while it waits to retry."""
    stats = {s.name: CallStats() for s in table}

    def factory(stage: Stage) -> Client:
        leaf = at_work is not None and stage.name == table.leaf.name
        return api_client(
            settings,
            table.api,
            url=hermes_url,
            secret=token,
            pacer=budget.pacer() if budget is not None else NoPacer(),
            stats=stats[stage.name],
            pool_size=max(8, concurrency[stage.name]),
            sleep=at_work.sleep if leaf and at_work is not None else time.sleep,
        )

    return factory, stats


def make_budget(
    settings: EnvironmentSettings, concurrency: dict[str, int], learned: LearnedLimit | None = None
) -> SharedBudget:
    """The run's one adaptive rate budget: bounded by R, starting at a limit an earlier run
    learned (as a rate known safe), else at ``hermes_rate_start`` (R if not given); a burst
    of one call per worker."""
    kept = start_rate(learned, settings.hermes_rate_limit)
    start = kept or settings.hermes_rate_start or settings.hermes_rate_limit
    burst = max(1.0, min(float(sum(concurrency.values())), min(start, settings.hermes_rate_limit) / 20))
    return SharedBudget(settings.hermes_rate_limit, burst, start=start, known=kept is not None)


def start_run(
    storage: Storage,
    settings: EnvironmentSettings,
    *,
    run_id: str,
    manifest: bytes | None,
    hermes_url: str,
    token: str,
    concurrency: dict[str, int] | None = None,
    pacing: bool = True,
    duplicate_rate: float = 0.0,
    seed: int | None = None,
    progress: TextIO | None = None,
    estimated_calls: float | None = None,
    wrap_storage: Callable[[Storage], Storage] | None = None,
    prepare: Callable[[Storage], Any] | None = None,
    processes: int = 1,
    storage_spec: StorageSpec | None = None,
    table: StageTable = STAGES,
    compact: bool = False,
) -> RunOutcome:
    """Seed (if ``manifest`` is given) and run ``run_id`` to the end, resuming what is unfinished;
    with ``compact``, then compact its output if no task failed (``fanout.compact``).
    ``estimated_calls`` (a plan's) gives the live display its ETA from the first second."""
    if table.api.auth.type != "none":
        check_token(token)  # refused (SettingsError, never showing it) before any worker starts
    if manifest is not None:
        parse_manifest(manifest, table.api)
        table.seed(run_id)  # a bad run id is refused before anything is built
    check_recorded_api(storage, table, run_id)  # a run crawled with another description: refused
    caps = stage_concurrency(settings, table, concurrency)
    remember = pacing and settings.remember_limit
    kept = learned_limit.read(storage, hermes_url) if remember else None
    budget = make_budget(settings, caps, kept) if pacing else None
    # The leaf stage runs THREADS_PER_PLACE threads per place, at most its concurrency at
    # work (fanout.at_work): here, or in each worker process for its share.
    at_work = AtWork(caps[table.leaf.name]) if processes <= 1 else None
    factory, stats = make_clients(
        settings, hermes_url, token, budget=budget, concurrency=caps, table=table, at_work=at_work
    )
    # Built before any worker process starts: a client that cannot be built is one line here.
    clients = {s.name: factory(s) for s in table}
    printer = (
        ProgressPrinter(
            progress,
            stats,
            table,
            rate_limit=settings.hermes_rate_limit if pacing else None,
            estimated_calls=estimated_calls,
        )
        if progress is not None
        else None
    )
    pool = (
        _leaf_pool(
            settings,
            storage_spec,
            hermes_url,
            token,
            caps[table.leaf.name],
            budget,
            processes,
            stats[table.leaf.name],
            table,
        )
        if processes > 1
        else None
    )
    try:
        runtime = LocalRuntime(
            wrap_storage(storage) if wrap_storage else storage,
            settings,
            lambda stage: clients[stage.name],
            concurrency=caps,
            duplicate_rate=duplicate_rate,
            seed=seed,
            on_change=printer.update if printer else None,
            leaf=pool.run if pool else None,
            table=table,
            leaf_threads=caps[table.leaf.name] * THREADS_PER_PLACE,
            at_work=at_work,
        )
        resumed = runtime.resume(run_id)
        # The seed is written after the scan for unfinished tasks, without injected faults;
        # a new one is delivered like any created object.
        if manifest is not None:
            record_api(storage, table, run_id)
        if manifest is not None and seed_manifest(storage, run_id, manifest, table):
            runtime.notify(table.seed(run_id).key)
        prepared = prepare(runtime.storage) if prepare is not None else None
        if printer:
            printer.start()
        try:
            report = runtime.run()
        except KeyboardInterrupt:
            runtime.stop()
            if pool:
                pool.kill()
                pool = None
            raise
        finally:
            if printer:
                printer.stop(runtime.report)
    finally:
        if pool:
            pool.close()
    began = budget.learned() if budget is not None and remember else None
    if began is not None and report.elapsed_s > 0:
        # What the server let through, averaged over the whole run (ramp-up and tail
        # included): a rate below its limit, which the next run starts under and probes past.
        calls = sum(s.calls for s in stats.values())
        throttled = sum(s.throttled for s in stats.values())
        held = (calls - throttled) / report.elapsed_s
        kept = learned_limit.write(storage, hermes_url, began, held)
    failed = run_status(storage, run_id, table=table).failed_keys
    if compact:
        from fanout.compact import compact_finished_run

        compaction = compact_finished_run(storage, run_id, storage_spec, progress, failed, table)
    return RunOutcome(
        run_id=run_id,
        report=report,
        stats=stats,
        resumed=resumed,
        prepared=prepared,
        failure_records=failed,
        compaction=compaction if compact else None,
        limit=kept,
    )


def _leaf_pool(
    settings: EnvironmentSettings,
    storage_spec: StorageSpec | None,
    hermes_url: str,
    token: str,
    workers: int,
    budget: SharedBudget | None,
    processes: int,
    stats: CallStats,
    table: StageTable,
) -> LeafPool:
    """Worker processes for the Parquet-writing stage, its concurrency split among them."""
    if storage_spec is None:
        raise ValueError("worker processes need a StorageSpec to open the bucket themselves")
    processes = min(processes, workers)
    places = -(-workers // processes)
    spec = make_worker_spec(
        storage=storage_spec,
        settings=settings,
        hermes_url=hermes_url,
        token=token,
        threads=places * THREADS_PER_PLACE,
        places=places,
        budget=budget,
        table=table,
    )
    return LeafPool(spec, processes, stats)
