"""Worker processes for the leaf stage of the local runtime.

The leaf stage (the one that writes Parquet) does most of the work (for Hermes about 98%
of the calls, all of the Parquet encoding), and Python threads share one core through the
GIL. On a machine
with more cores the local runtime runs that stage's tasks in worker processes, each
with its own threads, API client and storage adapter; the runtime's own threads
keep the events, the retry decisions and the failure records, exactly as before.
The leaf stage creates no task objects, so nothing a worker writes needs to notify
the runtime.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import multiprocessing
import os
import pickle
import queue
import signal
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from fanout.api_choice import api_client
from fanout.at_work import AtWork
from fanout.bucket import StorageSpec
from fanout.settings_files import parse_for
from fanout.shared_pacing import SharedBudget
from fanout_core import strict_json
from fanout_core.api_client import CallStats
from fanout_core.deadlines import task_deadline
from fanout_core.errors import SettingsError, TransientError
from fanout_core.pacing import NoPacer
from fanout_core.pipeline import TaskContext, TaskResult, run_task
from fanout_core.settings import EnvironmentSettings, environment_to_json
from fanout_core.stages import StageTable


@dataclass(frozen=True, kw_only=True)
class WorkerSpec:
    storage: StorageSpec
    env_name: str
    settings_json: str
    hermes_url: str
    token: str
    threads: int
    places: int
    """Of ``threads``, how many tasks may be at work at once (``fanout.at_work``)."""
    budget: SharedBudget | None
    """The run's shared rate budget, or None: no pacing."""
    table: StageTable
    """The run's stage table, pickled to each worker: a worker that rebuilt the product's
    table would refuse every task of a run whose prefixes differ."""


@dataclass
class _Reply:
    job: int
    result: TaskResult | None
    error: BaseException | None
    stats: dict[str, float]


COUNTS_ONLY = -1
"""The job of a reply that carries only counts. A worker sends one each second, so the
runtime's figures (its progress line, a bench's samples) follow the calls as they are
made, not as the tasks that made them end."""
COUNTS_EVERY_S = 1.0


def _exit_with_parent(parent: int) -> None:
    """A runtime killed with SIGKILL cannot stop its workers: they notice and go too."""
    while os.getppid() == parent:
        time.sleep(0.2)
    os._exit(1)


def _worker_main(spec: WorkerSpec, index: int, conn: Connection) -> None:
    """One worker process: jobs arrive on its own pipe, ``spec.threads`` threads run them."""
    # Ctrl-C reaches every process of the terminal's group; the runtime stops its workers
    # itself (LeafPool.kill), so a worker printing its own KeyboardInterrupt is only noise.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    # pandas and fastparquet take a second to import: do it while the first tasks fetch.
    threading.Thread(target=importlib.import_module, args=("fanout_core.output",), daemon=True).start()
    settings = parse_for(spec.env_name, strict_json.loads(spec.settings_json), spec.table.names)
    storage = spec.storage.build(process_index=index)
    stats = CallStats()
    threads: list[threading.Thread] = []
    idle = 0
    closing = False
    hands = threading.Lock()

    def more_hands() -> None:
        """A task gave its place up to wait out a retry: start one more thread, up to
        ``spec.threads``, if none is idle. A crawl that meets no 429 keeps one per place."""
        with hands:
            if not closing and idle == 0 and len(threads) < spec.threads:
                threads.append(threading.Thread(target=loop, daemon=True))
                threads[-1].start()

    at_work = AtWork(spec.places, on_sleep=lambda: more_hands())
    client = api_client(
        settings,
        spec.table.api,
        url=spec.hermes_url,
        secret=spec.token,
        pacer=spec.budget.pacer() if spec.budget is not None else NoPacer(),
        stats=stats,
        pool_size=max(4, spec.places),
        sleep=at_work.sleep,
    )
    ctx = TaskContext(storage=storage, client=client, settings=settings, table=spec.table)
    time_given_s = settings.stage(spec.table.leaf.name).timeout_s
    send_lock = threading.Lock()
    reported = stats.snapshot()
    jobs: queue.Queue[tuple[int, str, int, str] | None] = queue.Queue()

    def reply(job_id: int, result: TaskResult | None, error: BaseException | None) -> None:
        nonlocal reported
        with send_lock:  # counts since the last reply: the threads share one client
            now = stats.snapshot()
            delta = {k: now[k] - reported[k] for k in now}
            if job_id == COUNTS_ONLY and not any(delta.values()):
                return
            reported = now
            conn.send(_Reply(job_id, result, error, delta))

    def send_counts() -> None:
        while True:
            time.sleep(COUNTS_EVERY_S)
            try:
                reply(COUNTS_ONLY, None, None)
            except (OSError, ValueError):  # the runtime has gone or closed the pipe
                return

    def next_job() -> tuple[int, str, int, str] | None:
        nonlocal idle
        with hands:
            idle += 1
        try:
            return jobs.get()
        finally:
            with hands:
                idle -= 1

    def loop() -> None:
        while (job := next_job()) is not None:
            job_id, key, attempts, first = job
            result: TaskResult | None = None
            error: BaseException | None = None
            try:
                with at_work.working():
                    client.set_deadline(task_deadline(time_given_s))
                    result = run_task(key, ctx, attempts=attempts, first_attempt_at=first)
            except Exception as exc:
                error = exc
                try:
                    pickle.dumps(error)
                except Exception:  # an error that would not pickle: send what it said
                    error = TransientError(f"{type(exc).__name__}: {exc}")
            reply(job_id, result, error)

    with hands:
        for _ in range(min(spec.places, spec.threads)):
            threads.append(threading.Thread(target=loop, daemon=True))
            threads[-1].start()
    threading.Thread(target=send_counts, daemon=True).start()
    while True:  # the pipe is ours alone, so a killed sibling can hold no lock we need
        try:
            job = conn.recv()
        except (EOFError, OSError):
            job = None
        if job is None:
            with hands:
                closing = True
            for _ in threads:
                jobs.put(None)
            break
        jobs.put(job)
    for t in threads:
        t.join()


@dataclass
class _Worker:
    proc: Any
    conn: Connection
    jobs: dict[int, Future[TaskResult]]
    send_lock: threading.Lock


class LeafPool:
    """``processes`` worker processes x ``threads`` threads running ``run_task``.

    Each worker has a pipe of its own and the pool knows which jobs each one holds, so
    a worker killed mid-task fails exactly its own jobs (as transient: the runtime
    retries them, and run_task is idempotent) and is replaced; nothing else stalls.
    """

    def __init__(self, spec: WorkerSpec, processes: int, stats: CallStats):
        self._mp = multiprocessing.get_context("spawn")  # never fork a process that has threads
        self._spec = spec
        self._stats = stats
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._closing = False
        self._workers = [self._start(i) for i in range(processes)]
        self._collector = threading.Thread(target=self._collect, name="leaf-replies", daemon=True)
        self._collector.start()

    def _start(self, index: int) -> _Worker:
        parent, child = self._mp.Pipe(duplex=True)
        proc = self._mp.Process(target=_worker_main, args=(self._spec, index, child), daemon=True)
        proc.start()
        child.close()
        return _Worker(proc=proc, conn=parent, jobs={}, send_lock=threading.Lock())

    def run(self, key: str, attempts: int, first_attempt_at: str) -> TaskResult:
        """Run one task in the least busy worker process; raises what the task raised."""
        future: Future[TaskResult] = Future()
        job = next(self._ids)
        with self._lock:
            worker = min(self._workers, key=lambda w: len(w.jobs))
            worker.jobs[job] = future
        try:
            with worker.send_lock:
                worker.conn.send((job, key, attempts, first_attempt_at))
        except OSError:
            self._lost(worker)
        return future.result()

    def _collect(self) -> None:
        while not self._closing:
            conns: dict[Any, _Worker] = {w.conn: w for w in self._workers}
            for conn in wait(list(conns), timeout=0.5):
                worker = conns[conn]
                try:
                    reply: _Reply = worker.conn.recv()
                except (EOFError, OSError):
                    self._lost(worker)
                    continue
                self._stats.add(**reply.stats)
                with self._lock:
                    future = worker.jobs.pop(reply.job, None)
                if future is None:
                    continue
                if reply.error is not None or reply.result is None:
                    future.set_exception(reply.error or RuntimeError("a worker replied with nothing"))
                else:
                    future.set_result(reply.result)
            for worker in list(self._workers):
                if not worker.proc.is_alive():
                    self._lost(worker)

    def _lost(self, worker: _Worker) -> None:
        """A dead worker: fail its jobs as transient and start a replacement."""
        with self._lock:
            if worker not in self._workers:
                return
            index = self._workers.index(worker)
            pending, worker.jobs = worker.jobs, {}
            if not self._closing:
                self._workers[index] = self._start(index)
        for future in pending.values():
            future.set_exception(TransientError("a leaf worker process died while the task ran"))
        with contextlib.suppress(OSError):  # kill() may have closed it already
            worker.conn.close()

    def kill(self) -> None:
        """Stop every worker now (Ctrl-C): their unfinished tasks have no done marker, so the
        next run of the same command runs them again."""
        self._closing = True
        for worker in self._workers:
            worker.proc.kill()
        for worker in self._workers:
            worker.proc.join(timeout=2)
        self._collector.join(timeout=2)  # it sees _closing within 0.5 s; then no one reads the pipes
        for worker in self._workers:
            with contextlib.suppress(OSError):  # the collector closed it already
                worker.conn.close()

    def close(self) -> None:
        self._closing = True
        self._collector.join(timeout=5)
        for worker in self._workers:
            try:
                with worker.send_lock:
                    worker.conn.send(None)
            except OSError:
                pass
        for worker in self._workers:
            worker.proc.join(timeout=10)
            if worker.proc.is_alive():
                worker.proc.kill()
            worker.conn.close()


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
    places: int,
    budget: SharedBudget | None,
    table: StageTable,
) -> WorkerSpec:
    """What each worker process is started with; ``table`` must pickle (a ``SettingsError``
    naming why if not: a stage's ``lists`` or ``work`` given as a lambda does not)."""
    try:
        pickle.dumps(table)
    except Exception as exc:
        raise SettingsError(
            f"the stage table cannot go to worker processes ({type(exc).__name__}: {exc}); "
            "make its functions module-level, or run with one process"
        ) from None
    return WorkerSpec(
        storage=storage,
        env_name=settings.name,
        settings_json=environment_to_json(settings),
        hermes_url=hermes_url,
        token=token,
        threads=threads,
        places=places,
        budget=budget,
        table=table,
    )
