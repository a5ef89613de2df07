"""Wiring for a local run: settings, storage, Hermes clients and the runtime, in one call.

The CLI, the demo, the tests and the benchmarks all start runs through ``start_run``
so they exercise exactly the same path.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from fanout.local import LocalRuntime, RunReport
from fanout.shared_pacing import SharedBudget
from fanout.workers import LeafPool, StorageSpec, make_worker_spec
from fanout_core import keys
from fanout_core.bodies import parse_manifest
from fanout_core.errors import BadManifest, SettingsError
from fanout_core.hermes import CallStats, HermesClient
from fanout_core.pacing import NoPacer
from fanout_core.settings import EnvironmentSettings, load_environment, parse_environment
from fanout_core.stages import STAGES, Stage
from fanout_core.storage import NoSuchKey, Storage


def find_settings(env: str = "local", config: str | Path | None = None) -> EnvironmentSettings:
    """The environment from cdk.json: ``config``, else ./cdk.json, else the project's own."""
    candidates = [Path(config)] if config else [Path("cdk.json"), Path(__file__).parents[1] / "cdk.json"]
    for path in candidates:
        if path.is_file():
            return load_environment(env, path)
    if config:
        raise SettingsError(f"settings file {config} does not exist")
    if env != "local":
        raise SettingsError(f"no cdk.json found to read environment {env!r} from")
    return parse_environment("local", {})


@dataclass
class RunOutcome:
    run_id: str
    report: RunReport
    stats: dict[str, CallStats]
    resumed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def calls(self) -> int:
        return sum(s.calls for s in self.stats.values())

    @property
    def throttled(self) -> int:
        return sum(s.throttled for s in self.stats.values())

    @property
    def client_retries(self) -> int:
        return sum(s.retries for s in self.stats.values())


def seed_manifest(storage: Storage, run_id: str, body: bytes) -> bool:
    """Validate and write the seed (True if new); a different manifest for the run is an error."""
    keys.check_run_id(run_id)
    parse_manifest(body)
    key = keys.manifest_key(run_id)
    if storage.put_if_absent(key, body):
        return True
    try:
        existing = storage.get(key)
    except NoSuchKey:  # pragma: no cover - deleted between the two calls
        existing = b""
    if json.loads(existing or b"null") != json.loads(body):
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
    concurrency: dict[str, int] | None = None,
) -> tuple[Callable[[Stage], HermesClient], dict[str, CallStats]]:
    """One client per stage; all pace against ``budget`` (None: no pacing)."""
    stats = {s.name: CallStats() for s in STAGES}

    def factory(stage: Stage) -> HermesClient:
        workers = (concurrency or {}).get(stage.name) or settings.stage(stage.name).reserved_concurrency
        return HermesClient(
            hermes_url,
            token,
            page_size=settings.hermes_page_size,
            read_timeout=settings.hermes_timeout_s,
            pacer=budget.pacer() if budget is not None else NoPacer(),
            stats=stats[stage.name],
            pool_size=max(8, workers),
        )

    return factory, stats


def make_budget(settings: EnvironmentSettings, concurrency: dict[str, int] | None) -> SharedBudget:
    """The run's one rate budget: R from the settings, a burst of one call per worker."""
    caps = [(concurrency or {}).get(s.name) or settings.stage(s.name).reserved_concurrency for s in STAGES]
    burst = max(1.0, min(float(sum(caps)), settings.hermes_rate_limit / 20))
    return SharedBudget(settings.hermes_rate_limit, burst)


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
    wrap_storage: Callable[[Storage], Storage] | None = None,
    prepare: Callable[[Storage], Any] | None = None,
    processes: int = 1,
    storage_spec: StorageSpec | None = None,
) -> RunOutcome:
    """Seed (if ``manifest`` is given) and run ``run_id`` to the end, resuming what is unfinished."""
    seeded = manifest is not None and seed_manifest(storage, run_id, manifest)
    budget = make_budget(settings, concurrency) if pacing else None
    factory, stats = make_clients(settings, hermes_url, token, budget=budget, concurrency=concurrency)
    printer = ProgressPrinter(progress, stats) if progress is not None else None
    pool = (
        _leaf_pool(settings, storage_spec, hermes_url, token, concurrency, budget, processes, stats)
        if processes > 1
        else None
    )
    try:
        runtime = LocalRuntime(
            wrap_storage(storage) if wrap_storage else storage,
            settings,
            factory,
            concurrency=concurrency,
            duplicate_rate=duplicate_rate,
            seed=seed,
            on_change=printer.update if printer else None,
            leaf=pool.run if pool else None,
        )
        resumed = runtime.resume(run_id) - int(seeded)
        prepared = prepare(runtime.storage) if prepare is not None else None
        if printer:
            printer.start()
        try:
            report = runtime.run()
        finally:
            if printer:
                printer.stop(runtime.report)
    finally:
        if pool:
            pool.close()
    return RunOutcome(
        run_id=run_id, report=report, stats=stats, resumed=resumed, extra={"prepared": prepared}
    )


def _leaf_pool(
    settings: EnvironmentSettings,
    storage_spec: StorageSpec | None,
    hermes_url: str,
    token: str,
    concurrency: dict[str, int] | None,
    budget: SharedBudget | None,
    processes: int,
    stats: dict[str, CallStats],
) -> LeafPool:
    """Worker processes for the Parquet-writing stage, its concurrency split among them."""
    if storage_spec is None:
        raise ValueError("worker processes need a StorageSpec to open the bucket themselves")
    leaf = next(s for s in STAGES if s.writes_parquet)
    workers = (concurrency or {}).get(leaf.name) or settings.stage(leaf.name).reserved_concurrency
    processes = min(processes, workers)
    spec = make_worker_spec(
        storage=storage_spec,
        settings=settings,
        hermes_url=hermes_url,
        token=token,
        threads=-(-workers // processes),
        budget=budget,
    )
    return LeafPool(spec, processes, stats[leaf.name])


class ProgressPrinter:
    """Live per-stage progress on a stream: one rewritten line on a terminal, else a line every 2 s."""

    def __init__(self, stream: TextIO, stats: dict[str, CallStats]):
        self.stream = stream
        self.stats = stats
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self._report: RunReport | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._t0 = time.monotonic()

    def update(self, report: RunReport) -> None:
        self._report = report

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._thread.start()

    def stop(self, report: RunReport) -> None:
        self._report = report
        self._stop.set()
        self._thread.join(timeout=2)
        self._emit(final=True)

    def _loop(self) -> None:
        interval = 0.25 if self.tty else 2.0
        while not self._stop.wait(interval):
            self._emit()

    def line(self) -> str:
        report = self._report
        elapsed = time.monotonic() - self._t0
        calls = sum(s.calls for s in self.stats.values())
        throttled = sum(s.throttled for s in self.stats.values())
        parts = []
        for stage in STAGES:
            c = report.stages[stage.name] if report else None
            if c is None:
                parts.append(f"{stage.name} -")
                continue
            done = c.finished + c.skipped
            parts.append(
                f"{stage.name} {done} done {c.in_flight} running {c.queued} queued {c.failed} failed"
            )
        rate = calls / elapsed if elapsed > 0 else 0.0
        return f"[{elapsed:6.1f}s] " + " | ".join(parts) + f" | {calls} calls ({rate:.0f}/s) 429s {throttled}"

    def _emit(self, final: bool = False) -> None:
        text = self.line()
        if self.tty:
            self.stream.write("\r\x1b[2K" + text + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


def summary_rows(outcome: RunOutcome, where: str) -> list[tuple[str, str]]:
    report = outcome.report
    elapsed = report.elapsed_s
    rows: list[tuple[str, str]] = []
    for stage in STAGES:
        c = report.stages[stage.name]
        s = outcome.stats[stage.name]
        rows.append(
            (
                f"stage {stage.name}",
                f"{c.finished} tasks finished, {c.skipped} duplicates skipped, {c.retries} retried, "
                f"{c.failed} failed, {c.unit_failures} units failed; {s.calls} calls, {s.throttled} 429s",
            )
        )
    files = sum(c.files for c in report.stages.values())
    records = sum(c.records for c in report.stages.values())
    retries = sum(c.retries for c in report.stages.values()) + outcome.client_retries
    rows += [
        ("run", outcome.run_id),
        ("API calls", str(outcome.calls)),
        ("429s seen", str(outcome.throttled)),
        ("retries", f"{retries} ({outcome.client_retries} by the client, the rest by the runtime)"),
        ("failures", f"{len(report.failures)} task(s) with a failure record"),
        ("elapsed", f"{elapsed:.1f} s"),
        ("calls/s", f"{outcome.calls / elapsed:.0f}" if elapsed > 0 else "-"),
        ("files written", str(files)),
        ("rows written", str(records)),
        ("output", where),
    ]
    if outcome.resumed:
        rows.insert(-1, ("resumed", f"{outcome.resumed} unfinished task(s) picked up from a previous run"))
    return rows


def print_table(rows: list[tuple[str, str]], stream: TextIO = sys.stdout) -> None:
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        stream.write(f"  {k.ljust(width)}  {v}\n")
    stream.flush()
