"""Fleet: what the deployed design achieves against Hermes' limit R, measured on one machine.

``python -m bench.fleet [--rate 200] [--server-rate 150] [--warriors 10] [--runs dev:static,...]``
``[--billing] [--json]``

Each stage runs as a fleet of "instances" (threads), at most its reserved concurrency
(the environment's settings from cdk.json, read by ``fanout_core.settings``), each with
the pacer and Hermes client a Lambda cold start builds (``assembly.instance_pacer``,
``assembly.hermes_client``), and nothing shared between instances, except with pacing
``shared`` the fleet's one budget item (an in-process store with a modelled 5 ms
UpdateItem, the same conditional writes as the table: leases of slices, give-backs,
repairs; the JSON reports them as ``budget_writes``, split by kind in
``budget_writes_by_kind``, and the table as writes per call). Task objects are
dispatched as S3 events would be: every object created under a stage's prefix is an
event for that stage; an idle warm instance takes it, else a new instance starts (after
``--cold-start-s``, billed as init) while the stage is under its reservation, else the
event waits (Lambda's internal queue). Each event runs the core's ``attempt_task`` /
``run_task`` over a local directory, with retries re-dispatched after their delay. The
simulator (its own process) enforces R with a token bucket and answers every request
after 30-80 ms (jittered).

R is scaled from the environments' own (dev 50, prod 500) to ``--rate`` (default 200) so
that a tree of >= 10,000 calls takes about a minute per run, and every reservation is
scaled with it (dev 2/4/8 becomes 8/16/32, prod 5/20/100 becomes 2/8/40; the retry
consumers' 2 become 8 and 1, though retries return to the stage's own fleet): each
instance keeps the deployed share of R, and with it the deployed ratio of pacing to
latency (Little's law). An environment whose ``engine`` is ``queue`` (``dev-queue``) is
dispatched as its event source mappings would: each task object reaches its stage after
a delivery delay (S3 to SQS, then a poll: 0.05-0.5 s, a model), and a stage's mapping
starts at 5 concurrent invocations and grows by 300 a minute up to the reservation; SQS
requests are counted (3 per queued task, 3 per retry in either engine). Weights are the
environments'; the retry delays are the local ones (0.05-1 s) instead of minutes.
An environment whose ``engine`` is ``stepfunctions`` (``dev-sfn``, ``prod-sfn``) is
dispatched as its state machine would (``MapFleet``): stage barriers, batches of the
definition's size (``fanout_aws.sfn_starter.stage_batch_size``), ``MaxConcurrency``
children, whole-batch retries, a modelled Map start (``MAP_START_S``) and child start
(``CHILD_START_S``); it reports its Standard state transitions, child workflows and each
Map's timeline (``map_timeline``: start, first child, tail, end, most children at once).
An override ``stage=N`` sets a scaled reservation.

``--server-rate`` limits the simulator below the R the fleet is told (a limit told too
high): the figures are then against the server's limit, what the pacing has to find.

Figures per run: accepted calls/s / R over the whole run and its middle 80 % (steady),
the share of 429s, run time / (N / R) with N the calls the tree needs, and instance-seconds
(init + invocations: what Lambda bills, times memory) per 1,000 calls; with ``shared``,
the budget's writes per call (what the table bills; target <= 0.2); where the time the run
took beyond accepted / R went (``lost_s``: before the fleet first reached 0.9 R, after it last
did, between) and when each stage got its first task (``first_task_s``). ``--billing`` adds
prod-shaped variants of reservation and weights (the idle-billing table).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import shutil
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from bench.common import TOKEN, machine, print_table
from fanout.simulator import SimConfig, Universe, run_in_subprocess
from fanout_aws.sfn_starter import SIZING_TRANSITIONS, stage_batch_size
from fanout_core.api_client import CallStats
from fanout_core.assembly import hermes_client, instance_pacer, retry_policy
from fanout_core.fleet_budget import MemoryBudgetStore
from fanout_core.pipeline import TaskContext, TaskResult, run_task
from fanout_core.retry import Attempt, GaveUp, RetryLater, attempt_task
from fanout_core.settings import EnvironmentSettings, load_environment
from fanout_core.stages import STAGES, Stage
from fanout_core.storage import LocalDirStorage, Storage

CDK_JSON = Path(__file__).resolve().parents[1] / "cdk.json"
PAGE_SIZE = 100
RUN_ID = "fleet"
BUDGET_WRITE_S = 0.005
"""A DynamoDB UpdateItem in the same region (a model)."""
QUEUE_DELIVERY_S = (0.05, 0.5)
"""Engine queue: from the object's creation to the poller's receive (S3 to SQS, then a
long poll); a model, not a measurement (nothing here reaches AWS)."""
ESM_START = 5
ESM_GROWTH_PER_S = 5.0
"""An SQS event source mapping starts at 5 concurrent invocations and adds up to 300 a
minute (standard mode; aws-facts.md)."""
DEFAULT_RUNS = "dev:static,dev:adaptive,dev:shared,prod:static,prod:adaptive,prod:shared"
BILLING_RUNS = (
    "prod:shared:data_groups=20",
    "prod:shared:data_groups=12",
    "prod:adaptive:weights=1/1/1",
)
"""The idle-billing variants: the shared budget with the data_groups reservation halved and
cut to Little's law; equal stage weights with adaptive pacing (under ``shared`` the
weights only set the share an instance falls back to when the table fails)."""


@dataclasses.dataclass(frozen=True)
class RunSpec:
    env: str
    pacing: str
    reserved: dict[str, int]
    weights: dict[str, float]

    @property
    def label(self) -> str:
        extra = [f"{k}={v}" for k, v in self.reserved.items()]
        if self.weights:
            extra.append("weights=" + "/".join(f"{w:g}" for w in self.weights.values()))
        return ":".join([self.env, self.pacing, *([",".join(extra)] if extra else [])])


def parse_run(text: str) -> RunSpec:
    """``env:pacing[:stage=reserved,...,weights=a/b/c]``."""
    env, _, rest = text.partition(":")
    pacing, _, extra = rest.partition(":")
    reserved: dict[str, int] = {}
    weights: dict[str, float] = {}
    for part in filter(None, extra.split(",")):
        name, _, value = part.partition("=")
        if name == "weights":
            weights = dict(zip(STAGES.names, (float(v) for v in value.split("/")), strict=True))
        elif name in STAGES.names:
            reserved[name] = int(value)
        else:
            raise SystemExit(f"unknown override {name!r} in run {text!r}")
    return RunSpec(env, pacing or "static", reserved, weights)


def fleet_settings(spec: RunSpec, rate: float) -> EnvironmentSettings:
    """The environment's settings with R scaled to ``rate`` and every reservation with it, the
    retry consumers' too (so each instance's share of R, and what it can do at the latency,
    stay the deployed ones),
    local retry delays, the run's pacing and overrides."""
    settings = load_environment(spec.env, CDK_JSON)
    scale = rate / settings.hermes_rate_limit
    stages = {
        name: dataclasses.replace(
            s,
            reserved_concurrency=max(1, round(s.reserved_concurrency * scale)),
            # not modelled as instances (retries return to the stage's fleet), but part of
            # the divisor of an instance's static share: scaled too, or the share would grow
            retry_concurrency=max(1, round(s.retry_concurrency * scale)),
        )
        for name, s in settings.stages.items()
    }
    for name, value in spec.reserved.items():
        stages[name] = dataclasses.replace(stages[name], reserved_concurrency=value)
    for name, weight in spec.weights.items():
        stages[name] = dataclasses.replace(stages[name], rate_weight=weight)
    return dataclasses.replace(
        settings,
        hermes_rate_limit=rate,
        pacing=spec.pacing,
        retry_base_delay_s=0.05,
        retry_max_delay_s=1.0,
        stages=stages,
    )


class EventStorage:
    """Storage whose created task objects are events for their stage, like the bucket's."""

    def __init__(self, inner: Storage, fleet: Fleet) -> None:
        self.inner, self.fleet = inner, fleet

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def put(self, key: str, body: bytes) -> None:
        self.inner.put(key, body)
        self.fleet.event(key)

    def put_if_absent(self, key: str, body: bytes) -> bool:
        created = self.inner.put_if_absent(key, body)
        if created:
            self.fleet.event(key)
        return created


@dataclasses.dataclass
class StageFleet:
    stage: Stage
    reserved: int
    first_event_at: float | None = None
    waiting: deque[Attempt] = dataclasses.field(default_factory=deque)
    instances: int = 0
    idle: int = 0
    busy_s: float = 0.0
    init_s: float = 0.0
    invocations: int = 0
    stats: CallStats = dataclasses.field(default_factory=CallStats)
    cv: threading.Condition = dataclasses.field(default_factory=threading.Condition)


class Fleet:
    """Per stage, up to its reservation of instances, each a thread with its own pacer."""

    def __init__(
        self,
        settings: EnvironmentSettings,
        url: str,
        storage: Storage,
        cold_start_s: float,
        queue_delivery_s: tuple[float, float] = QUEUE_DELIVERY_S,
    ) -> None:
        self.settings, self.url, self.cold_start_s = settings, url, cold_start_s
        self.queued = settings.engine == "queue"
        self.queue_delivery_s = queue_delivery_s
        self.sqs_requests = 0
        self.tasks = 0
        self._rng = random.Random(7)
        self.storage = EventStorage(storage, self)
        self.policy = retry_policy(settings)
        self.lock = threading.Lock()  # one lock; a condition per stage wakes only its instances
        self.stages = {
            s.name: StageFleet(
                s, settings.stage(s.name).reserved_concurrency, cv=threading.Condition(self.lock)
            )
            for s in STAGES
        }
        self.cv = threading.Condition(self.lock)  # the run's end
        self.outstanding = 0
        self.threads: list[threading.Thread] = []
        self.gave_up = 0
        # pacing "shared": one budget for the fleet, a modelled DynamoDB item (one or two
        # conditional UpdateItems per leased slice, ~5 ms each, during which the instance's
        # threads wait, as on the table; its writes are what the table bills)
        self.budget = MemoryBudgetStore(latency_s=BUDGET_WRITE_S) if settings.pacing == "shared" else None

    def event(self, key: str) -> None:
        stage = STAGES.for_key(key)
        if stage is None:
            return
        with self.cv:
            self.tasks += 1
        if not self.queued:
            self.dispatch(stage.name, Attempt(key=key))
            return
        # Engine queue: S3 sends the notification to the stage's queue (one request), and
        # the mapping's poller receives it some time later.
        with self.cv:
            self.outstanding += 1  # in the queue already: the run is not over
            self.sqs_requests += 1
            delay = self._rng.uniform(*self.queue_delivery_s)
        timer = threading.Timer(delay, self._delivered, (stage.name, Attempt(key=key)))
        timer.daemon = True
        timer.start()

    def _delivered(self, stage_name: str, attempt: Attempt) -> None:
        self.dispatch(stage_name, attempt)
        with self.cv:
            self.outstanding -= 1
            if self.outstanding == 0:
                self._wake_all()

    def _allowed(self, f: StageFleet, now: float) -> int:
        """Instances the stage may run now: its reservation; in engine queue, the event
        source mapping's concurrency, which starts at 5 and grows by 300 a minute."""
        if not self.queued or f.first_event_at is None:
            return f.reserved
        grown = ESM_START + ESM_GROWTH_PER_S * (now - f.first_event_at)
        return min(f.reserved, int(grown))

    def dispatch(self, stage_name: str, attempt: Attempt) -> None:
        f = self.stages[stage_name]
        with self.cv:
            self.outstanding += 1
            if self.queued or attempt.number > 1:
                self.sqs_requests += 2  # a mapping's receive and its delete (batch size 1)
            if f.first_event_at is None:
                f.first_event_at = time.monotonic()
            f.waiting.append(attempt)
            if f.idle == 0:
                self._start_instance(f)
            f.cv.notify()

    def _start_instance(self, f: StageFleet) -> None:
        """A new instance when the stage may have one more (the lock is held)."""
        if f.instances < self._allowed(f, time.monotonic()):
            f.instances += 1
            t = threading.Thread(target=self._instance, args=(f,), daemon=True)
            self.threads.append(t)
            t.start()

    def _cold_start(self, f: StageFleet) -> TaskContext:
        """A new instance of the stage: its init time (billed) and its own client and pacer."""
        t0 = time.monotonic()
        time.sleep(self.cold_start_s)
        client = hermes_client(
            self.settings,
            url=self.url,
            token=TOKEN,
            pacer=instance_pacer(self.settings, f.stage.name, budget=self.budget),
            stats=f.stats,
            pool_size=2,
        )
        with self.cv:
            f.init_s += time.monotonic() - t0
        return TaskContext(storage=self.storage, client=client, settings=self.settings, table=STAGES)

    def _instance(self, f: StageFleet) -> None:
        """One Lambda instance: a cold start, then invocations until the run is over."""
        ctx = self._cold_start(f)

        def work(a: Attempt) -> TaskResult:
            return run_task(a.key, ctx, attempts=a.number, first_attempt_at=a.first_attempt_at)

        while True:
            with self.cv:
                f.idle += 1
                while not f.waiting and self.outstanding > 0:
                    f.cv.wait()
                f.idle -= 1
                if not f.waiting:
                    return
                attempt = f.waiting.popleft()
            start = time.monotonic()
            outcome = attempt_task(attempt, work, self.storage.inner, self.policy, table=STAGES)
            spent = time.monotonic() - start
            if isinstance(outcome, RetryLater):
                timer = threading.Timer(outcome.delay_s, self.dispatch, (f.stage.name, outcome.attempt))
                timer.daemon = True
                timer.start()
            with self.cv:
                if isinstance(outcome, RetryLater):
                    self.sqs_requests += 1  # the retry's SendMessage (both engines)
                if f.waiting and f.idle == 0:
                    self._start_instance(f)  # the mapping has scaled up meanwhile
                f.busy_s += spent
                f.invocations += 1
                self.gave_up += isinstance(outcome, GaveUp)
                self.outstanding -= 1
                if self.outstanding == 0:
                    self._wake_all()

    def _wake_all(self) -> None:
        """The run is over: every instance and the waiter (the lock is held)."""
        self.cv.notify_all()
        for f in self.stages.values():
            f.cv.notify_all()

    def calls(self) -> tuple[int, int]:
        snaps = [f.stats.snapshot() for f in self.stages.values()]
        return int(sum(s["calls"] for s in snaps)), int(sum(s["throttled"] for s in snaps))

    def wait(self, samples: list[tuple[float, int, int]], every_s: float = 0.5) -> None:
        while True:
            with self.cv:
                if self.outstanding == 0:
                    break
                self.cv.wait(timeout=every_s)
            samples.append((time.monotonic(), *self.calls()))
        samples.append((time.monotonic(), *self.calls()))
        with self.lock:
            self._wake_all()
        for t in self.threads:
            t.join(timeout=5)


MAP_START_S = 1.0
"""Engine stepfunctions: from a stage's end to its next Map's first child (the Map state's
transition, the ItemReader's listing, the Map Run's start); a model, not a measurement."""
CHILD_START_S = (0.05, 0.25)
"""Engine stepfunctions: a child workflow's start before its Lambda task is invoked (a model)."""


class MapFleet(Fleet):
    """Engine ``stepfunctions``, dispatched as its state machine would: the seed task, then
    stage after stage (a barrier: a stage's Map lists its tasks only when the stage above
    has finished), the keys in batches of the definition's ``MaxItemsPerBatch``
    (``stage_batch_size``: one for a stage that fans out), at most ``MaxConcurrency``
    (the stage's reservation) children at once, each child's Lambda running its batch's
    tasks one after another and the whole batch retried (after the largest backoff its
    transient tasks asked for) until no task asks for another try. Instances stay warm
    across a stage's Maps; no SQS at all. Counts the Standard state transitions."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.transitions = 0
        self.child_workflows = 0
        self._seed: str | None = None
        self._warm: dict[str, list[TaskContext]] = {name: [] for name in self.stages}
        self._t0 = time.monotonic()
        self.timeline: dict[str, dict[str, Any]] = {}
        """Per Map (and the seed task): when it started, its first child started, a slot
        first went idle for good (its tail), it ended (s from the run's start); children,
        batch size, MaxConcurrency and the most children at once."""

    def event(self, key: str) -> None:
        """A created task object: nothing happens until its stage's Map lists it."""
        if STAGES.for_key(key) is None:
            return
        with self.cv:
            self.tasks += 1
            if self._seed is None:
                self._seed = key

    def wait(self, samples: list[tuple[float, int, int]], every_s: float = 0.5) -> None:
        driver = threading.Thread(target=self._drive, daemon=True)
        driver.start()
        while driver.is_alive():
            driver.join(timeout=every_s)
            samples.append((time.monotonic(), *self.calls()))

    def _drive(self) -> None:
        assert self._seed is not None
        self._t0 = time.monotonic()
        self.transitions += 1  # the seed task
        self._run_map(STAGES.first, [[self._seed]], child_workflows=False)
        for stage in STAGES:
            time.sleep(MAP_START_S)
            self.transitions += 1  # the Map state
            listed = sorted(
                k for k in self.storage.inner.list(stage.run_prefix(RUN_ID)) if k.endswith(".json")
            )
            if stage.writes_parquet:
                self.transitions += SIZING_TRANSITIONS  # count, choose, size
            n = stage_batch_size(self.settings, stage, len(listed))  # the definition's ItemBatcher
            self._run_map(stage, [listed[i : i + n] for i in range(0, len(listed), n)])

    def _since(self) -> float:
        return round(time.monotonic() - self._t0, 2)

    def _context(self, f: StageFleet) -> TaskContext:
        """A warm instance of the stage, or a cold start (billed as init)."""
        with self.cv:
            if self._warm[f.stage.name]:
                return self._warm[f.stage.name].pop()
            f.instances += 1
        return self._cold_start(f)

    def _run_map(self, stage: Stage, batches: list[list[str]], *, child_workflows: bool = True) -> None:
        f = self.stages[stage.name]
        pending = deque(batches)
        name = stage.name if child_workflows else "seed"
        line = self.timeline.setdefault(name, {"map_start_s": self._since(), "children": len(batches)})
        line.update(batch=max((len(b) for b in batches), default=0), max_concurrency=f.reserved)
        active = [0, 0]  # children running now, the most at once

        def child() -> None:
            while True:
                with self.cv:
                    if not pending:
                        return
                    batch = pending.popleft()
                    self.child_workflows += child_workflows
                if child_workflows:
                    time.sleep(self._rng.uniform(*CHILD_START_S))
                with self.cv:
                    line.setdefault("first_child_s", self._since())
                    active[0] += 1
                    active[1] = max(active)
                self._child(f, batch)
                with self.cv:
                    active[0] -= 1
                    if not pending and active[0] < min(f.reserved, len(batches)):
                        line.setdefault("tail_from_s", self._since())  # a slot idle for good

        workers = [threading.Thread(target=child, daemon=True) for _ in range(min(f.reserved, len(batches)))]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        line.update(end_s=self._since(), most_at_once=active[1])

    def _child(self, f: StageFleet, batch: list[str]) -> None:
        """One child: its Lambda task on the batch, retried whole while a task asks."""
        ctx = self._context(f)

        def work(a: Attempt) -> TaskResult:
            return run_task(a.key, ctx, attempts=a.number, first_attempt_at=a.first_attempt_at)

        attempts = [Attempt(key=k) for k in batch]
        while attempts:
            start = time.monotonic()
            outcomes = [
                attempt_task(a, work, self.storage.inner, self.policy, table=STAGES) for a in attempts
            ]
            retry = [o for o in outcomes if isinstance(o, RetryLater)]
            with self.cv:
                f.busy_s += time.monotonic() - start
                f.invocations += 1
                self.transitions += 1
                self.gave_up += sum(isinstance(o, GaveUp) for o in outcomes)
            if not retry:
                break
            time.sleep(max(o.delay_s for o in retry))
            attempts = [a.next() for a in attempts]  # the whole batch; finished ones are skipped
        with self.cv:
            self._warm[f.stage.name].append(ctx)


def steady_rate(samples: list[tuple[float, int, int]], lo: float = 0.1, hi: float = 0.9) -> float | None:
    """Accepted calls/s between ``lo`` and ``hi`` of the run (None if too short)."""
    if len(samples) < 5:
        return None
    t0, t1 = samples[0][0], samples[-1][0]
    a = min(samples, key=lambda s: abs(s[0] - (t0 + lo * (t1 - t0))))
    b = min(samples, key=lambda s: abs(s[0] - (t0 + hi * (t1 - t0))))
    if b[0] <= a[0]:
        return None
    return ((b[1] - b[2]) - (a[1] - a[2])) / (b[0] - a[0])


def lost_seconds(
    samples: list[tuple[float, int, int]], ceiling: float, level: float = 0.9
) -> dict[str, float] | None:
    """Where the run's time beyond accepted / R went: R-seconds not used before the first
    sampling interval at ``level`` x R or more (the start: cold starts, the listing stages),
    after the last one (the tail: the last tasks, fewer instances busy than R needs) and
    between them. The three add up to elapsed - accepted / R."""
    if len(samples) < 3 or ceiling <= 0:
        return None
    t0, end = samples[0][0], samples[-1]
    full = [
        i
        for i in range(1, len(samples))
        if (samples[i][1] - samples[i][2]) - (samples[i - 1][1] - samples[i - 1][2])
        >= level * ceiling * (samples[i][0] - samples[i - 1][0])
    ]
    if not full:
        return None
    a, b = samples[full[0] - 1], samples[full[-1]]

    def lost(x: tuple[float, int, int], y: tuple[float, int, int]) -> float:
        return round((y[0] - x[0]) - ((y[1] - y[2]) - (x[1] - x[2])) / ceiling, 2)

    return {
        "start": lost(samples[0], a),
        "middle": lost(a, b),
        "tail": lost(b, end),
        "start_at_r_s": round(a[0] - t0, 2),
    }


def run_once(
    spec: RunSpec, config: SimConfig, rate: float, work: Path, cold_start_s: float
) -> dict[str, Any]:
    """One crawl of a fresh rate-limited simulator by a fleet shaped like ``spec``."""
    from fanout.audit import compare, output_rows
    from fanout.start_run import seed_manifest
    from fanout_core.bodies import manifest_body

    settings = fleet_settings(spec, rate)
    ceiling = min(rate, config.rate_limit or rate)  # a told R is a hard bound; the server's is real
    out = work / spec.label.replace(":", "_").replace("/", "-").replace(",", "_")
    storage = LocalDirStorage(out)
    universe = Universe(config)
    needed = universe.expected_calls(PAGE_SIZE)
    load_before = machine()["load_1m"]
    with run_in_subprocess(config) as url:
        engine_fleet = MapFleet if settings.engine == "stepfunctions" else Fleet
        fleet = engine_fleet(settings, url, storage, cold_start_s)
        samples: list[tuple[float, int, int]] = [(time.monotonic(), 0, 0)]
        start = time.monotonic()
        seed_manifest(storage, RUN_ID, manifest_body(None), STAGES)
        fleet.event(STAGES.seed(RUN_ID).key)
        fleet.wait(samples)
        elapsed = time.monotonic() - start
    found, files = output_rows(storage, RUN_ID)
    comparison = compare(found, universe.expected_rows())
    calls, throttled = fleet.calls()
    accepted = calls - throttled
    steady = steady_rate(samples)
    billed = sum(f.busy_s + f.init_s for f in fleet.stages.values())
    gb_s = sum(
        (f.busy_s + f.init_s) * settings.stage(name).memory_mb / 1024 for name, f in fleet.stages.items()
    )
    return {
        "run": spec.label,
        "env": spec.env,
        "pacing": spec.pacing,
        "rate_limit": ceiling,
        "rate_told": rate,
        "reserved": {name: f.reserved for name, f in fleet.stages.items()},
        "weights": {name: settings.stage(name).rate_weight for name in fleet.stages},
        "elapsed_s": round(elapsed, 2),
        "ideal_s": round(needed / ceiling, 2),
        "time_vs_ideal": round(elapsed / (needed / ceiling), 3),
        "calls": calls,
        "calls_needed": needed,
        "accepted_vs_rate": round(accepted / elapsed / ceiling, 3),
        "steady_accepted_vs_rate": round(steady / ceiling, 3) if steady is not None else None,
        "lost_s": lost_seconds(samples, ceiling),
        "first_task_s": {
            name: None if f.first_event_at is None else round(f.first_event_at - start, 2)
            for name, f in fleet.stages.items()
        },
        "throttled": throttled,
        "throttled_share": round(throttled / calls, 4) if calls else 0.0,
        "instances": {name: f.instances for name, f in fleet.stages.items()},
        "invocations": sum(f.invocations for f in fleet.stages.values()),
        "instance_s": round(billed, 1),
        "instance_s_per_1k_calls": round(1000 * billed / max(calls, 1), 1),
        "gb_s_per_1k_calls": round(1000 * gb_s / max(calls, 1), 1),
        "engine": settings.engine,
        "budget_writes": fleet.budget.writes if fleet.budget else 0,
        "budget_writes_per_call": round(fleet.budget.writes / max(calls, 1), 3) if fleet.budget else None,
        "budget_writes_by_kind": dict(sorted(fleet.budget.by_kind.items())) if fleet.budget else {},
        "tasks": fleet.tasks,
        "sqs_requests": fleet.sqs_requests,
        "sqs_requests_per_task": round(fleet.sqs_requests / max(fleet.tasks, 1), 2),
        "state_transitions": getattr(fleet, "transitions", 0),
        "child_workflows": getattr(fleet, "child_workflows", 0),
        "map_timeline": getattr(fleet, "timeline", None),
        "per_stage": {
            name: {
                "calls": int(f.stats.calls),
                "throttled": int(f.stats.throttled),
                "instances": f.instances,
                "instance_s": round(f.busy_s + f.init_s, 1),
                "paced_s": round(f.stats.paced_s, 1),
            }
            for name, f in fleet.stages.items()
        },
        "rows_exact": comparison.exact and fleet.gave_up == 0,
        "files": files,
        "verify": comparison.summary(),
        "load_1m_before": load_before,
    }


def judge(r: dict[str, Any]) -> list[dict[str, Any]]:
    writes = r["budget_writes_per_call"]
    leased = (
        [{"target": f"budget writes <= 0.2 per call ({r['run']})", "value": writes, "met": writes <= 0.2}]
        if writes is not None
        else []
    )
    return [
        *leased,
        {
            "target": f"calls/s / R >= 0.95 ({r['run']})",
            "value": r["accepted_vs_rate"],
            "met": r["accepted_vs_rate"] >= 0.95,
        },
        {
            "target": f"429s <= 1 % ({r['run']})",
            "value": f"{100 * r['throttled_share']:.2f} %",
            "met": r["throttled_share"] <= 0.01,
        },
        {
            "target": f"time / (N/R) <= 1.08 ({r['run']})",
            "value": r["time_vs_ideal"],
            "met": r["time_vs_ideal"] <= 1.08,
        },
    ]


def run(args: argparse.Namespace) -> dict[str, Any]:
    server_rate = args.server_rate or args.rate
    if server_rate > args.rate:
        raise SystemExit("--server-rate is for a limit told too high: give one below --rate")
    config = SimConfig.from_size(
        "full",
        warriors=args.warriors,
        records_per_group=args.records_per_group,
        token=TOKEN,
        rate_limit=server_rate,
        latency_s=args.latency_ms[0] / 1000.0,
        latency_jitter_s=(args.latency_ms[1] - args.latency_ms[0]) / 1000.0,
    )
    if args.size:
        config = dataclasses.replace(
            SimConfig.from_size(args.size),
            token=TOKEN,
            rate_limit=server_rate,
            latency_s=config.latency_s,
            latency_jitter_s=config.latency_jitter_s,
        )
    needed = Universe(config).expected_calls(PAGE_SIZE)
    specs = [parse_run(r) for r in _split_runs(args.runs)]
    if args.billing:
        specs += [parse_run(r) for r in BILLING_RUNS]
    ceiling = min(args.rate, server_rate)
    told = f", told R = {args.rate:g}" if server_rate != args.rate else ""
    sys.stderr.write(
        f"fleet: {needed:,} calls, server limited to {server_rate:g}/s{told}"
        f" (ideal {needed / ceiling:.1f} s)\n"
    )
    now = machine()
    load, cpus = now["load_1m"], now["cpus"] or 1
    if load > cpus:
        sys.stderr.write(
            f"fleet: the machine is busy (load {load:g} on {cpus} cores): the fleet's threads and the"
            " simulator need the cores, so every run's figures will be low; compare rows, not targets\n"
        )
    results = []
    work = Path(tempfile.mkdtemp(prefix="fanout-fleet-"))
    try:
        for spec in specs:
            sys.stderr.write(f"  {spec.label}: crawling (load {machine()['load_1m']}) ...\n")
            r = run_once(spec, config, args.rate, work, args.cold_start_s)
            sys.stderr.write(
                f"  {spec.label}: {r['elapsed_s']} s, {r['accepted_vs_rate']} R, {r['verify']}\n"
            )
            results.append(r)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "benchmark": "fleet",
        "machine": machine(),
        "rate_limit": ceiling,
        "rate_told": args.rate,
        "server_rate": server_rate,
        "calls_needed": needed,
        "latency_ms": list(args.latency_ms),
        "cold_start_s": args.cold_start_s,
        "runs": results,
        "targets": [t for r in results for t in judge(r)],
    }


def _split_runs(text: str) -> list[str]:
    """Runs are separated by ``+`` or by a comma that starts a new ``env:``."""
    runs: list[str] = []
    for part in text.replace("+", ",").split(","):
        if ":" in part.split("=")[0] or not runs:
            runs.append(part)
        else:
            runs[-1] += "," + part
    return [r for r in runs if r]


def print_report(result: dict[str, Any]) -> None:
    m = result["machine"]
    print(
        f"fleet: {result['calls_needed']:,} calls needed at R = {result['rate_limit']:g}/s"
        + (f" (told {result['rate_told']:g})" if result["rate_told"] != result["rate_limit"] else "")
        + ", latency "
        f"{result['latency_ms'][0]:g}-{result['latency_ms'][1]:g} ms, "
        f"cold start {result['cold_start_s']:g} s; "
        f"{m['cpus']} cores, load {m['load_1m']} at the end"
    )
    headers = [
        "run",
        "reserved",
        "elapsed s",
        "x N/R",
        "calls/s / R",
        "steady / R",
        "429 %",
        "instances",
        "inst-s",
        "inst-s / 1k calls",
        "GB-s / 1k calls",
        "SQS req / task",
        "budget writes / call",
        "lost s start/mid/tail",
        "rows exact",
    ]
    rows = [
        [
            r["run"],
            "/".join(str(v) for v in r["reserved"].values()),
            r["elapsed_s"],
            r["time_vs_ideal"],
            r["accepted_vs_rate"],
            r["steady_accepted_vs_rate"],
            100 * r["throttled_share"],
            "/".join(str(v) for v in r["instances"].values()),
            r["instance_s"],
            r["instance_s_per_1k_calls"],
            r["gb_s_per_1k_calls"],
            r["sqs_requests_per_task"],
            "-" if r["budget_writes_per_call"] is None else r["budget_writes_per_call"],
            "-" if not r["lost_s"] else "/".join(f"{r['lost_s'][k]:g}" for k in ("start", "middle", "tail")),
            r["rows_exact"],
        ]
        for r in result["runs"]
    ]
    print_table(headers, rows, digits=3)
    print()
    print_table(
        ["target", "this run", "met"],
        [[t["target"], t["value"], t["met"]] for t in result["targets"]],
        digits=3,
    )
    print_map_timelines(result["runs"])


def print_map_timelines(runs: list[dict[str, Any]]) -> None:
    """Engine ``stepfunctions``: each Map's timeline, where such a run loses its time."""
    timed = [r for r in runs if r.get("map_timeline")]
    if not timed:
        return
    print()
    print_table(
        ["run", "map", "start s", "1st child s", "tail from s", "end s", "children", "batch", "max", "most"],
        [
            [
                r["run"],
                name,
                t["map_start_s"],
                t.get("first_child_s", "-"),
                t.get("tail_from_s", "-"),
                t["end_s"],
                t["children"],
                t["batch"],
                t["max_concurrency"],
                t["most_at_once"],
            ]
            for r in timed
            for name, t in r["map_timeline"].items()
        ],
        stream=sys.stdout,  # the one in use now (print_table's default is bound at import)
        digits=3,
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__.split("\n")[0])
    p.add_argument("--rate", type=float, default=200.0, help="Hermes' limit R in calls/s (default 200)")
    p.add_argument(
        "--server-rate",
        type=float,
        default=None,
        help="the simulator's real limit, below R: a limit told too high (the ratios are against it)",
    )
    p.add_argument("--warriors", type=int, default=10, help="warriors of the full preset (10: 10,211 calls)")
    p.add_argument(
        "--records-per-group",
        type=int,
        default=24,
        help="records per data group (24, the full preset's; fewer: less CPU per call on a busy machine)",
    )
    p.add_argument("--size", default=None, help="a named simulator preset instead (tiny for a smoke run)")
    p.add_argument("--latency-ms", type=float, nargs=2, default=(30.0, 80.0), help="min and max per request")
    p.add_argument("--cold-start-s", type=float, default=0.8, help="a new instance's init time")
    p.add_argument(
        "--runs", default=DEFAULT_RUNS, help=f"env:pacing[:stage=N,...,weights=a/b/c], ... ({DEFAULT_RUNS})"
    )
    p.add_argument("--billing", action="store_true", help="add the idle-billing variants of prod")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_report(result)
    return 0 if all(r["rows_exact"] for r in result["runs"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
