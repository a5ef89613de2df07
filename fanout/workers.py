"""Worker processes for the leaf stage of the local runtime.

The data_groups stage does most of the work (about 98% of the calls, all of the
Parquet encoding), and Python threads share one core through the GIL. On a machine
with more cores the local runtime runs that stage's tasks in worker processes, each
with its own threads, Hermes client and storage adapter; the runtime's own threads
keep the events, the retry decisions and the failure records, exactly as before.
The leaf stage creates no task objects, so nothing a worker writes needs to notify
the runtime.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import pickle
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from fanout_core.errors import TransientError
from fanout_core.hermes import CallStats, HermesClient
from fanout_core.pacing import NoPacer, Pacer
from fanout_core.pipeline import TaskContext, TaskResult, run_task
from fanout_core.settings import EnvironmentSettings, environment_from_json, environment_to_json
from fanout_core.storage import LocalDirStorage, Storage


@dataclass(frozen=True, kw_only=True)
class StorageSpec:
    """How to build the same storage in another process."""

    bucket_dir: str | None = None
    bucket: str | None = None
    endpoint_url: str | None = None
    region: str | None = None
    fault_rate: float = 0.0
    fault_seed: int | None = None

    def build(self, *, process_index: int = 0) -> Storage:
        storage: Storage
        if self.bucket:
            from fanout_aws.s3_storage import S3Storage

            storage = S3Storage(self.bucket, endpoint_url=self.endpoint_url, region=self.region)
        else:
            storage = LocalDirStorage(self.bucket_dir or "fanout-data")
        if self.fault_rate:
            from fanout.faults import FlakyStorage

            seed = None if self.fault_seed is None else self.fault_seed + 7919 * process_index
            storage = FlakyStorage(storage, self.fault_rate, seed=seed)
        return storage


@dataclass(frozen=True, kw_only=True)
class WorkerSpec:
    storage: StorageSpec
    env_name: str
    settings_json: str
    hermes_url: str
    token: str
    threads: int
    rate: float | None
    """Calls/s this process may make (its share of the stage's), or None: no pacing."""


@dataclass
class _Reply:
    job: int
    result: TaskResult | None
    error: BaseException | None
    stats: dict[str, float]


def _exit_with_parent(parent: int) -> None:
    """A runtime killed with SIGKILL cannot stop its workers: they notice and go too."""
    while os.getppid() == parent:
        time.sleep(0.2)
    os._exit(1)


def _worker_main(spec: WorkerSpec, index: int, jobs: Any, replies: Any) -> None:
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    settings = environment_from_json(spec.env_name, spec.settings_json)
    storage = spec.storage.build(process_index=index)
    stats = CallStats()
    hermes = HermesClient(
        spec.hermes_url,
        spec.token,
        page_size=settings.hermes_page_size,
        read_timeout=settings.hermes_timeout_s,
        pacer=Pacer(spec.rate, burst=max(1.0, spec.threads)) if spec.rate else NoPacer(),
        stats=stats,
        pool_size=max(4, spec.threads),
    )
    ctx = TaskContext(storage=storage, hermes=hermes, settings=settings)
    lock = threading.Lock()
    reported = stats.snapshot()

    def unreported() -> dict[str, float]:
        """Counts since the last reply of this process (threads share one client)."""
        nonlocal reported
        with lock:
            now = stats.snapshot()
            delta = {k: now[k] - reported[k] for k in now}
            reported = now
        return delta

    def loop() -> None:
        while True:
            job = jobs.get()
            if job is None:
                return
            job_id, key, attempts, first = job
            result: TaskResult | None = None
            error: BaseException | None = None
            try:
                result = run_task(key, ctx, attempts=attempts, first_attempt_at=first)
            except Exception as exc:
                error = exc
            if error is not None:
                try:  # the queue pickles in a background thread, where a failure is lost
                    pickle.dumps(error)
                except Exception:
                    error = TransientError(f"{type(error).__name__}: {error}")
            replies.put(_Reply(job_id, result, error, unreported()))

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(spec.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


class LeafPool:
    """``processes`` worker processes x ``threads`` threads running ``run_task``."""

    def __init__(self, spec: WorkerSpec, processes: int, stats: CallStats):
        self._mp = multiprocessing.get_context("spawn")  # never fork a process that has threads
        self._spec = spec
        self._jobs = self._mp.Queue()
        self._replies = self._mp.Queue()
        self._stats = stats
        self._ids = itertools.count()
        self._futures: dict[int, Future[TaskResult]] = {}
        self._lock = threading.Lock()
        self._closing = False
        self._procs = [self._start(i) for i in range(processes)]
        self._collector = threading.Thread(target=self._collect, name="leaf-replies", daemon=True)
        self._collector.start()

    def _start(self, index: int) -> Any:
        proc = self._mp.Process(
            target=_worker_main, args=(self._spec, index, self._jobs, self._replies), daemon=True
        )
        proc.start()
        return proc

    def run(self, key: str, attempts: int, first_attempt_at: str) -> TaskResult:
        """Run one task in a worker process; raises what the task raised."""
        future: Future[TaskResult] = Future()
        job = next(self._ids)
        with self._lock:
            self._futures[job] = future
        self._jobs.put((job, key, attempts, first_attempt_at))
        return future.result()

    def _collect(self) -> None:
        checked = time.monotonic()
        while True:
            try:
                reply = self._replies.get(timeout=0.5)
            except queue.Empty:
                reply = False
            if reply is None:
                return
            if time.monotonic() - checked > 0.5:
                checked = time.monotonic()
                self._replace_dead_workers()
            if reply is False:
                continue
            self._stats.add(**reply.stats)
            with self._lock:
                future = self._futures.pop(reply.job, None)
            if future is None:
                continue  # failed over already (a worker died); this late answer is moot
            if reply.error is not None:
                future.set_exception(reply.error)
            else:
                future.set_result(reply.result)

    def _replace_dead_workers(self) -> None:
        """A worker killed mid-task took its jobs with it: fail every pending job as
        transient (the runtime retries them; run_task is idempotent) and start a new one."""
        dead = [i for i, p in enumerate(self._procs) if not p.is_alive()]
        if not dead or self._closing:
            return
        with self._lock:
            pending, self._futures = self._futures, {}
        for future in pending.values():
            future.set_exception(TransientError("a leaf worker process died while the task ran"))
        for i in dead:
            self._procs[i] = self._start(i)

    def close(self) -> None:
        self._closing = True
        for _ in range(len(self._procs) * self._spec.threads):
            self._jobs.put(None)
        for p in self._procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
        self._replies.put(None)
        self._collector.join(timeout=5)
        self._jobs.close()
        self._replies.close()


def default_processes() -> int:
    """One worker process per core the machine has (at least one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def make_worker_spec(
    *,
    storage: StorageSpec,
    settings: EnvironmentSettings,
    hermes_url: str,
    token: str,
    threads: int,
    rate: float | None,
) -> WorkerSpec:
    return WorkerSpec(
        storage=storage,
        env_name=settings.name,
        settings_json=environment_to_json(settings),
        hermes_url=hermes_url,
        token=token,
        threads=threads,
        rate=rate,
    )
