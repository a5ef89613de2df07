"""The local runtime: the pipeline core under S3-notification and Lambda semantics.

Writing a task object dispatches it to the stage whose prefix matches, as the
bucket's notifications would; each stage runs at most its reserved concurrency of
tasks at once (at work: a leaf task waiting to retry gives its place up,
``fanout.at_work``), each within a deadline derived from its stage's ``timeout_s`` as on
Lambda (``fanout_core.deadlines``); a task that raises is retried with jittered
exponential backoff (the retry extension, with short delays locally) and then leaves
one failure record. A run started again over the same bucket resumes: tasks with a done marker
or a failure record are not run again.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import random
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from fanout.api_choice import Client
from fanout.at_work import AtWork
from fanout.status import run_status
from fanout_core.assembly import stage_concurrency
from fanout_core.deadlines import task_deadline
from fanout_core.errors import StorageFault
from fanout_core.pipeline import TaskContext, TaskResult, run_task
from fanout_core.retry import Attempt, Finished, RetryLater, RetryPolicy, attempt_task, now_iso
from fanout_core.settings import EnvironmentSettings
from fanout_core.stages import STAGES, Stage, StageTable
from fanout_core.storage import Storage


class NotifyingStorage:
    """A storage adapter that tells the runtime of every object created under a stage prefix."""

    def __init__(self, inner: Storage, notify: Callable[[str], None], table: StageTable = STAGES):
        self.inner = inner
        self._notify = notify
        self._table = table

    def get(self, key: str) -> bytes:
        return self.inner.get(key)

    def put(self, key: str, body: bytes) -> None:
        self.inner.put(key, body)
        if self._table.for_key(key) is not None:
            self._notify(key)

    def put_if_absent(self, key: str, body: bytes) -> bool:
        created = self.inner.put_if_absent(key, body)
        if created and self._table.for_key(key) is not None:
            self._notify(key)
        return created

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def last_modified(self, key: str) -> float | None:
        return self.inner.last_modified(key)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def list(self, prefix: str) -> Any:
        return self.inner.list(prefix)


@dataclass
class StageCounts:
    started: int = 0
    finished: int = 0
    skipped: int = 0
    failed: int = 0
    retries: int = 0
    children: int = 0
    files: int = 0
    records: int = 0
    unit_failures: int = 0
    duplicates: int = 0
    """Ids that listings repeated, collapsed into one unit each."""
    in_flight: int = 0
    queued: int = 0
    delayed: int = 0
    """Tasks waiting out a retry's backoff."""

    @property
    def known(self) -> int:
        """Tasks of this stage seen so far: the total a progress bar grows towards."""
        return self.finished + self.skipped + self.failed + self.in_flight + self.queued + self.delayed


@dataclass
class RunReport:
    stages: dict[str, StageCounts]
    """Per stage name, in the run's table's order (the runtime fills it from its table)."""
    elapsed_s: float = 0.0
    duplicates: int = 0
    """Events delivered a second time on purpose (``duplicate_rate``)."""
    failures: list[str] = field(default_factory=list)
    """Task keys that ended with a failure record in this run (whole task or some units)."""

    @property
    def ok(self) -> bool:
        return not self.failures


@dataclass(order=True)
class _Event:
    due: float
    seq: int
    key: str = field(compare=False)
    attempt: int = field(compare=False, default=1)
    first_attempt_at: str | None = field(compare=False, default=None)


class LocalRuntime:
    """Runs tasks until none is queued, running or waiting for a retry."""

    def __init__(
        self,
        storage: Storage,
        settings: EnvironmentSettings,
        client_for_stage: Callable[[Stage], Client],
        *,
        concurrency: dict[str, int] | None = None,
        policy: RetryPolicy | None = None,
        duplicate_rate: float = 0.0,
        seed: int | None = None,
        on_change: Callable[[RunReport], None] | None = None,
        leaf: Callable[[str, int, str], TaskResult] | None = None,
        table: StageTable = STAGES,
        leaf_threads: int | None = None,
        at_work: AtWork | None = None,
    ):
        """``leaf``, if given, runs the Parquet-writing stage's tasks elsewhere (worker
        processes, see ``fanout.leaf_workers``); retries and failure records stay here.
        ``leaf_threads`` (default: its concurrency) run that stage's tasks, and ``at_work``,
        if given, bounds those at work here (``fanout.at_work``)."""
        self.settings = settings
        self.table = table
        self.storage = NotifyingStorage(storage, self.notify, table)
        self.policy = policy or RetryPolicy.from_settings(settings)
        self.concurrency = stage_concurrency(settings, table, concurrency)
        self.duplicate_rate = duplicate_rate
        self._rng = random.Random(seed)
        self._clients = {s.name: client_for_stage(s) for s in table}
        self._on_change = on_change
        self._leaf = leaf
        self._leaf_threads = leaf_threads
        self._at_work = at_work
        self.report = RunReport(stages={s.name: StageCounts() for s in table})
        lock = threading.RLock()
        self._lock = threading.Condition(lock)
        """The runtime's state; the run and the retry timer wait on it."""
        self._work = {s.name: threading.Condition(lock) for s in table}
        """A stage's workers wait on their own condition, so an event wakes one of them,
        not every thread of every stage (the leaf alone has 8 per place: fanout.at_work)."""
        self._ready: dict[str, deque[_Event]] = {s.name: deque() for s in table}
        self._delayed: list[_Event] = []
        self._seq = itertools.count()
        self._outstanding = 0
        self._stopping = False
        self.fault: StorageFault | None = None
        """What stopped the run early: the bucket refused a write (see ``run``)."""
        self._threads: list[threading.Thread] = []
        self._started = time.monotonic()

    # -- events ---------------------------------------------------------------------
    def notify(self, key: str) -> None:
        """An object was created at ``key``: deliver its event (sometimes twice, if asked)."""
        copies = 2 if self.duplicate_rate and self._rng.random() < self.duplicate_rate else 1
        if copies == 2:
            with self._lock:
                self.report.duplicates += 1
        for _ in range(copies):
            self._enqueue(_Event(0.0, next(self._seq), key))

    def _enqueue(self, event: _Event) -> None:
        stage = self.table.for_key(event.key)
        if stage is None:
            return
        with self._lock:
            self._outstanding += 1
            if event.due > time.monotonic():
                heapq.heappush(self._delayed, event)
                self.report.stages[stage.name].delayed += 1
                self._lock.notify_all()  # the timer
            else:
                self._ready[stage.name].append(event)
                self.report.stages[stage.name].queued += 1
                self._work[stage.name].notify()

    def resume(self, run_id: str) -> int:
        """Queue every task of ``run_id`` that has neither a done marker nor a failure record."""
        status = run_status(self.storage.inner, run_id, table=self.table)
        pending = [key for stage in status.stages for key in stage.pending]
        for key in pending:
            self._enqueue(_Event(0.0, next(self._seq), key))
        return len(pending)

    # -- running --------------------------------------------------------------------
    def run(self, initial: Iterable[str] = ()) -> RunReport:
        """Deliver ``initial`` keys' events, then run until the pipeline is idle.

        Raises StorageFault, soon after the first one, when the bucket refuses a write (a
        full disk, a read-only directory): no task could finish, and a retry per task and a
        message per retry would only flood the terminal. Tasks still running are left to
        end by their deadline; what they wrote is kept, and the next run resumes them."""
        self._started = time.monotonic()
        for key in initial:
            self._enqueue(_Event(0.0, next(self._seq), key))
        for stage in self.table:
            threads = self.concurrency[stage.name]
            if stage.writes_parquet and self._leaf_threads is not None:
                threads = max(threads, self._leaf_threads)
            for i in range(threads):
                t = threading.Thread(
                    target=self._worker, args=(stage,), name=f"{stage.name}-{i}", daemon=True
                )
                t.start()
                self._threads.append(t)
        timer = threading.Thread(target=self._timer, name="retry-timer", daemon=True)
        timer.start()
        with self._lock:
            while self._outstanding > 0 and self.fault is None:
                self._lock.wait(timeout=0.5)
            self._stopping = True
            self._wake_all()
        # A halted run does not wait for tasks still in flight: all they write is atomic.
        give_up_at = time.monotonic() + (1 if self.fault is not None else 5)
        for t in [*self._threads, timer]:
            t.join(timeout=max(0.0, give_up_at - time.monotonic()))
        self._threads.clear()
        self.report.elapsed_s = time.monotonic() - self._started
        self._changed()
        if self.fault is not None:
            raise self.fault
        return self.report

    def _halt(self, fault: StorageFault) -> None:
        """Stop the run: the bucket cannot take writes, so nothing else can finish."""
        with self._lock:
            if self.fault is None:
                self.fault = fault
            self._stopping = True
            self._wake_all()

    def stop(self) -> None:
        """Take no further task (Ctrl-C); tasks already running are left to the process's end."""
        with self._lock:
            self._stopping = True
            self._wake_all()

    def _wake_all(self) -> None:
        """Every waiting thread (the lock held): the run is stopping."""
        self._lock.notify_all()
        for condition in self._work.values():
            condition.notify_all()

    def _timer(self) -> None:
        with self._lock:
            while not self._stopping:
                now = time.monotonic()
                while self._delayed and self._delayed[0].due <= now:
                    event = heapq.heappop(self._delayed)
                    stage = self.table.for_key(event.key)
                    assert stage is not None
                    self._ready[stage.name].append(event)
                    self.report.stages[stage.name].delayed -= 1
                    self.report.stages[stage.name].queued += 1
                    self._work[stage.name].notify()
                wait = self._delayed[0].due - now if self._delayed else 0.5
                self._lock.wait(timeout=min(max(wait, 0.001), 0.5))

    def _worker(self, stage: Stage) -> None:
        ready = self._ready[stage.name]
        counts = self.report.stages[stage.name]
        while True:
            with self._lock:
                while not ready and not self._stopping:
                    self._work[stage.name].wait(timeout=0.5)
                if self._stopping:
                    return
                event = ready.popleft()
                counts.queued -= 1
                counts.in_flight += 1
                counts.started += 1
            try:
                self._attempt(stage, event)
            finally:
                with self._lock:
                    counts.in_flight -= 1
                    self._outstanding -= 1
                    self._lock.notify_all()
                self._changed()

    def _attempt(self, stage: Stage, event: _Event) -> None:
        counts = self.report.stages[stage.name]
        client = self._clients[stage.name]
        ctx = TaskContext(storage=self.storage, client=client, settings=self.settings, table=self.table)
        attempt = Attempt(
            key=event.key, number=event.attempt, first_attempt_at=event.first_attempt_at or now_iso()
        )

        # Worker processes write without notifying: the seed, which writes the first stage's
        # parts, runs here even when that stage is the leaf (an API of two levels).
        leaf = self._leaf if stage.writes_parquet and not self._is_seed(event.key) else None

        at_work = self._at_work if stage.writes_parquet else None

        def work(a: Attempt) -> TaskResult:
            if leaf is not None:  # the worker process sets the same deadline itself
                return leaf(a.key, a.number, a.first_attempt_at)
            with at_work.working() if at_work is not None else contextlib.nullcontext():
                client.set_deadline(task_deadline(self.settings.stage(stage.name).timeout_s))
                return run_task(a.key, ctx, attempts=a.number, first_attempt_at=a.first_attempt_at)

        try:
            outcome = attempt_task(attempt, work, self.storage, self.policy, self._rng, table=self.table)
        except StorageFault as fault:
            self._halt(fault)
            return
        except Exception as exc:  # the failure record could not be written: try again shortly
            print(
                f"fanout: {event.key}: its failure record was not written ({type(exc).__name__}: "
                f"{str(exc)[:300]}); trying again",
                file=sys.stderr,
            )
            outcome = RetryLater(attempt, 1.0, RuntimeError("failure record not written"))
        if isinstance(outcome, RetryLater) and isinstance(outcome.error, StorageFault):
            self._halt(outcome.error)
            return
        if isinstance(outcome, Finished):
            with self._lock:
                self._count(counts, outcome.result)
        elif isinstance(outcome, RetryLater):
            with self._lock:
                counts.retries += 1
            nxt = outcome.attempt
            self._enqueue(
                _Event(
                    time.monotonic() + outcome.delay_s,
                    next(self._seq),
                    nxt.key,
                    nxt.number,
                    nxt.first_attempt_at,
                )
            )
        else:
            with self._lock:
                counts.failed += 1
                self.report.failures.append(event.key)

    def _is_seed(self, key: str) -> bool:
        try:
            return self.table.parse(key).is_seed
        except Exception:  # not a task key: run_task will say so, wherever it runs
            return False

    def _count(self, counts: StageCounts, result: TaskResult) -> None:
        if result.skipped:
            counts.skipped += 1
            return
        counts.finished += 1
        counts.children += result.children
        counts.files += result.files
        counts.records += result.records
        counts.duplicates += result.duplicates
        if result.failed_units:
            counts.unit_failures += len(result.failed_units)
            self.report.failures.append(result.key)

    def _changed(self) -> None:
        if self._on_change is not None:
            self.report.elapsed_s = time.monotonic() - self._started
            self._on_change(self.report)
