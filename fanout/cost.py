"""What a run cost, or would cost deployed, from what its bucket recorded; and what the same
crawl would cost on a server.

Everything is counted from the bucket alone, so a local run and a deployed one are
estimated the same way:

- **Lambda**: one invocation per task attempt (a task is one done marker or failure
  record; a marker's or record's ``attempts`` adds the retries), billed duration per
  finished task = its done marker's ``seconds`` rounded up to the millisecond, times the
  stage's ``memory_mb`` from the environment's settings (``--env``, default ``dev``).
  The seconds are the task's work inside the handler: cold-start init and failed attempts
  are not measured, so duration is a lower bound.
- **S3 requests**, per attempt as ``fanout_core.pipeline`` makes them, an existence check
  being one HEAD (``S3Storage.exists``), billed as a GET: a listing task HEADs twice (done
  marker, plan), GETs its body and PUTs its plan, its children and its done marker; a
  retry repeats the two HEADs and the GET. A leaf task HEADs once (done marker), GETs its
  body, PUTs its file and done marker; a retry repeats the GET and HEADs twice (done
  marker, output); a first attempt whose every group failed, and so has no file to
  create, HEADs its output once more. A unit failure PUTs its record. The seed's upload
  is one PUT. Compaction: two GETs per input (plan, rewrite), PUTs of the plan, each
  output, ``current.json`` and the Athena manifest. LIST is billed like PUT, HEAD like
  GET; DELETE is free.
- **S3 storage**: the bytes of the run's objects for one month (output at rest, the
  intermediates until their 30-day expiry).
- **SQS**: three requests (send, receive, delete) per retry through a stage's retry queue;
  with ``engine: queue`` three more per task, its delivery through the stage queue.
- **Secrets Manager**: one ``GetSecretValue`` per cold start, at most one per concurrent
  instance of a stage (``min(invocations, reserved_concurrency)``).
- **DynamoDB**, with ``pacing: shared`` only: the budget item's conditional writes,
  ``budget_writes_per_call`` per Hermes call for the environment's R (measured by
  ``bench/fleet.py``; the bucket records no writes), on demand.
- **API calls** (for the server comparison): one list call per unit of every task, and a
  leaf task's pages beyond one per unit from its records (``ceil(records / page_size)``);
  the seed of ``"all"`` lists the first level, ``ceil(its units / page_size)`` calls.
- **Engine ``stepfunctions``** (``--env`` of that engine): the run's Standard state
  transitions (``stepfunctions_transitions``: the seed task, one per Map and the leaf's
  sizing in the parent, one per child workflow's task and one per retry of it); Lambda
  is invoked once per batch try instead of once per task try (``Batching``: the leaf's
  tasks in as many children as its cap, at most ``items_per_batch`` a child; one task a
  child in the stages above), and no retry passes through SQS.
- **A server instead**: the crawl cannot be faster than ``N / R`` (calls over the rate
  limit), billed per second with a 60-second minimum, on demand and on Spot; and the same
  instance running all day.

Not included: CloudWatch Logs and metrics, KMS, data transfer, the SQS event sources'
idle polling, free tiers. Prices: ``PRICES`` below, list prices per region as dated in
``PRICES_AS_OF``; override any of them with ``--prices FILE.json``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from fanout_aws.sfn_starter import SIZING_TRANSITIONS, Batching
from fanout_core import keys
from fanout_core.bodies import parse_manifest
from fanout_core.compaction import PLAN, current_files, generation_prefix, read_current
from fanout_core.settings import EnvironmentSettings
from fanout_core.stages import STAGES, TASK_SUFFIX, Stage, StageTable
from fanout_core.storage import LocalDirStorage, NoSuchKey, Storage

PRICES_AS_OF = "2025-01"
"""When these list prices were taken from aws.amazon.com/pricing (unchanged for years then).
Check them before budgeting; ``--prices`` overrides any of them."""

_COMMON = {
    "lambda_gb_second": "0.0000133334",  # arm64
    "lambda_request": "0.0000002",  # $0.20 per million
    "s3_put_per_1000": "0.005",  # PUT, COPY, POST, LIST
    "s3_get_per_1000": "0.0004",  # GET, SELECT and all other requests
    "s3_gb_month": "0.023",  # S3 Standard, first 50 TB
    "sqs_per_million": "0.40",  # standard queues
    "secrets_per_10000_calls": "0.05",
    "dynamodb_write_per_million": "0.625",  # on-demand write request units (us-east-1's)
    "sfn_transition_per_1000": "0.025",  # Standard workflows
    "sfn_express_request_per_million": "1.00",
    "sfn_express_gb_second": "0.00001667",  # billed in 64 MB steps
    "server_instance": "t4g.small",
}
NOT_PRICES = ("region", "as_of", "server_instance")
"""The keys of a price table that name it rather than price something."""
PRICES: dict[str, dict[str, str]] = {
    "us-east-1": {**_COMMON, "server_on_demand_hour": "0.0168", "server_spot_hour": "0.0050"},
    "us-west-2": {**_COMMON, "server_on_demand_hour": "0.0168", "server_spot_hour": "0.0050"},
    "eu-west-1": {**_COMMON, "server_on_demand_hour": "0.0184", "server_spot_hour": "0.0055"},
    "eu-central-1": {
        **_COMMON,
        "s3_put_per_1000": "0.0054",
        "s3_get_per_1000": "0.00043",
        "s3_gb_month": "0.0245",
        "lambda_gb_second": "0.0000133334",
        "server_on_demand_hour": "0.0192",
        "server_spot_hour": "0.0058",
    },
}
"""Spot prices move by the hour; the figure is a typical one for the instance then."""
DEFAULT_REGION = "us-east-1"
SERVER_MINIMUM_S = 60


@dataclass(frozen=True)
class BudgetShape:
    """What the shared budget's leases cost per Hermes call for a fleet shaped like an
    environment, as ``bench/fleet.py`` measured it (``command``)."""

    env: str
    rate: float
    """The environment's R: a slice's size turns on 1/R against Hermes' latency."""
    writes_per_call: Decimal
    bench_rate: float
    """The R the bench ran the shape at (its reservations scaled with it)."""
    bench_instances: int
    """The fleet the bench ran: the stages' reserved concurrency at ``bench_rate``."""
    command: str


BUDGET_WRITES_PER_CALL = (
    BudgetShape(
        "dev",
        50.0,
        Decimal("0.122"),
        50.0,
        14,
        "python -m bench.fleet --rate 50 --runs dev:shared --warriors 4 --records-per-group 8",
    ),
    BudgetShape("prod", 500.0, Decimal("0.169"), 200.0, 50, "python -m bench.fleet --runs prod:shared"),
)
"""Write request units per Hermes call of the shared budget (``fanout_core.fleet_budget``:
a lease of a slice of slots is one conditional write, two when the fleet's demand turned
the budget busy or idle since the instance's last lease; cuts and give-backs are rare),
per environment shape, measured on a quiet machine (docs/cost.md: the runs, the
machine's load; a loaded one's slow threads make smaller slices, 0.122-0.166 for dev at
load 4-12). dev at its own R and reservations: 0.122 and 0.121 in two runs at load 0.5
and 0.3. prod scaled to R 200 (at 500 one machine is the bottleneck; 1/R is 5 ms or 2 ms
against Hermes' 30-80 ms, so the slices differ little): 0.169 over 10,211 calls at load
0.7. ``tests/e2e/test_cost_and_report.py`` ties each row to a
fake-clock fleet of the bench's shape. It was 1.9 when every call reserved its own slot."""


def budget_writes_per_call(rate_limit: float) -> Decimal:
    """The measured shape whose R is nearest the run's (by ratio)."""
    rate = max(rate_limit, 1e-9)  # settings refuse R <= 0; a hand-made call gets the lowest shape
    return min(BUDGET_WRITES_PER_CALL, key=lambda s: abs(math.log(rate / s.rate))).writes_per_call


CENT = Decimal("0.01")


def prices_for(region: str | None, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    region = region or DEFAULT_REGION
    if region not in PRICES:
        raise ValueError(f"no default prices for region {region!r} (have {', '.join(PRICES)}); give --prices")
    table: dict[str, Any] = {"region": region, "as_of": PRICES_AS_OF, **PRICES[region]}
    for name, value in (overrides or {}).items():
        if name not in table:
            raise ValueError(f"unknown price {name[:40]!r}; the prices are {', '.join(sorted(table))}")
        table[name] = _checked_price(name, value)
    return table


MAX_PRICE = 1_000_000
"""USD: no unit price comes near it; a larger one is a typo, and 1e308 overflows in use."""


def _checked_price(name: str, value: Any) -> Any:
    """An override as given, if it is a price: a finite JSON number from 0 to MAX_PRICE (the
    instance's name, a non-empty string); ValueError naming the key otherwise."""
    if name in NOT_PRICES:
        if isinstance(value, str) and value.strip() and len(value) <= 100:
            return value
        raise ValueError(f"--prices: {name} must be a non-empty string (a name), got {_shown(value)}")
    # bool is an int to Python, and no price; "NaN" and "Infinity" are strings here.
    if type(value) not in (int, float) or not math.isfinite(value):
        raise ValueError(f"--prices: {name} must be a number of USD, got {_shown(value)}")
    if not 0 <= value <= MAX_PRICE:
        raise ValueError(f"--prices: {name} must be from 0 to {MAX_PRICE:,} USD, got {_shown(value)}")
    return value


def _shown(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, float) or math.isfinite(value) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass
class StageCounts:
    stage: str
    memory_mb: int
    reserved_concurrency: int
    tasks: int = 0
    finished: int = 0
    failed: int = 0
    invocations: int = 0
    billed_ms: int = 0
    s3_put: int = 0
    s3_list: int = 0
    """LISTs a task makes: none counted since existence checks are HEADs (a listing task's
    retry that reuses its plan lists its children's folders, not modelled)."""
    s3_get: int = 0
    """GETs and HEADs (existence checks): S3 bills them alike."""
    api_calls: int = 0

    @property
    def retries(self) -> int:
        return self.invocations - self.tasks

    @property
    def gb_seconds(self) -> Decimal:
        return Decimal(self.billed_ms) / 1000 * Decimal(self.memory_mb) / 1024

    @property
    def cold_starts(self) -> int:
        return min(self.invocations, self.reserved_concurrency)


@dataclass
class RunCounts:
    run_id: str
    stages: list[StageCounts]
    seed_puts: int = 1
    stored_bytes: int = 0
    output_bytes: int = 0
    output_files: int = 0
    compaction_get: int = 0
    compaction_put: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def api_calls(self) -> int:
        return sum(s.api_calls for s in self.stages)

    def total(self, name: str) -> int:
        return int(sum(getattr(s, name) for s in self.stages))


def _json(storage: Storage, key: str) -> dict[str, Any]:
    try:
        doc = json.loads(storage.get(key))
    except (NoSuchKey, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _tasks(storage: Storage, table: StageTable, stage: Stage, run_id: str) -> list[str]:
    found = [k for k in storage.list(stage.run_prefix(run_id)) if k.endswith(TASK_SUFFIX)]
    if stage is table.first and storage.exists(table.seed(run_id).key):
        found.insert(0, table.seed(run_id).key)
    return found


def count_run(
    storage: Storage, run_id: str, settings: EnvironmentSettings, table: StageTable = STAGES
) -> RunCounts:
    """Everything the estimate needs, read from the bucket."""
    keys.check_run_id(run_id)
    page = settings.hermes_page_size
    out = RunCounts(run_id, [])
    for stage in table:
        st = settings.stage(stage.name)
        counts = StageCounts(stage.name, st.memory_mb, st.reserved_concurrency)
        listing = stage is not table.leaf
        for key in _tasks(storage, table, stage, run_id):
            counts.tasks += 1
            done = _json(storage, keys.done_key(key))
            failure = _json(storage, keys.failed_key(key))
            attempts = max(
                int(done.get("attempts", 1) if done else 0), int(failure.get("attempts", 0) or 0), 1
            )
            counts.invocations += attempts
            counts.s3_get += attempts  # the task object
            # Existence checks are HEADs, billed as GETs (S3Storage.exists).
            if listing:
                counts.s3_get += 2 * attempts  # done marker, plan
            else:  # done marker; a retry also asks whether its file exists (fanout_core.records)
                counts.s3_get += 2 * attempts - 1
                if done and not int(done.get("files", 0)) and int(done.get("failed_units", 0)):
                    counts.s3_get += 1  # every group failed: no file to create would tell
            if failure:
                counts.failed += 1
                counts.s3_put += 1
            if done:
                counts.finished += 1
                counts.billed_ms += math.ceil(round(float(done.get("seconds", 0)) * 1000, 6))
                counts.s3_put += 1  # the done marker
                if listing:
                    counts.s3_put += 1 + int(done.get("children", 0))  # the plan, the children
                else:
                    counts.s3_put += int(done.get("files", 0))
            counts.api_calls += api_calls(storage, table, stage, key, done, page, run_id)
        out.stages.append(counts)
    out.stored_bytes = sum(_sizes(storage, _run_objects(storage, table, run_id)))
    files = current_files(storage, run_id, table)
    out.output_files = len(files)
    out.output_bytes = sum(_sizes(storage, files))
    current = read_current(storage, run_id, table)
    if current is not None:
        plan = _json(storage, generation_prefix(table, run_id, int(current["generation"])) + PLAN)
        inputs = sum(len(o["inputs"]) for o in plan.get("outputs", []))
        out.compaction_get = 2 * inputs
        out.compaction_put = 1 + len(plan.get("outputs", [])) + 2
    if not any(s.billed_ms for s in out.stages):
        out.notes.append("no done marker records seconds: Lambda duration is counted as 0")
    return out


def api_calls(
    storage: Storage,
    table: StageTable,
    stage: Stage,
    key: str,
    done: dict[str, Any],
    page: int,
    run_id: str,
) -> int:
    try:
        raw = storage.get(key)
    except NoSuchKey:
        return 0
    if key == table.seed(run_id).key:
        if parse_manifest(raw, table.api).ids is not None:
            return 0  # named units: nothing to list
        units = sum(1 for _ in _units_of_first_stage(storage, table, run_id))
        return max(1, math.ceil(units / page))
    try:
        units = len(stage.body.from_bytes(raw).units)
    except Exception:
        return 0
    if stage is table.leaf:
        return max(units, math.ceil(int(done.get("records", 0)) / page)) if done else units
    return units


def _units_of_first_stage(storage: Storage, table: StageTable, run_id: str) -> Iterator[Any]:
    for key in storage.list(table.first.run_prefix(run_id)):
        if key.endswith(TASK_SUFFIX):
            yield from table.first.body.from_bytes(storage.get(key)).units


def _run_objects(storage: Storage, table: StageTable, run_id: str) -> list[str]:
    found: list[str] = []
    prefixes = [s.run_prefix(run_id) for s in table]
    for p in list(prefixes):
        prefixes += [keys.done_key(p), keys.failed_key(p), keys.PLANS_PREFIX + p]
    prefixes += [
        table.output_run_prefix(run_id),
        table.compacted_run_prefix(run_id),
        table.query_run_prefix(run_id),
    ]
    for p in prefixes:
        found.extend(storage.list(p))
    seed = table.seed(run_id)
    found.extend(k for k in (seed.key, seed.done_key, seed.plan_key, seed.failed_key) if storage.exists(k))
    return found


def _sizes(storage: Storage, object_keys: list[str]) -> Iterator[int]:
    """Object sizes: stat on a directory, one listing per prefix on S3, else the bytes."""
    if isinstance(storage, LocalDirStorage):
        for key in object_keys:
            try:
                yield os.stat(storage.root.joinpath(*key.split("/"))).st_size
            except OSError:
                continue
        return
    client, bucket = getattr(storage, "client", None), getattr(storage, "bucket", None)
    if client is not None and isinstance(bucket, str):
        wanted = set(object_keys)
        folders = {k.rsplit("/", 1)[0] + "/" if "/" in k else "" for k in wanted}
        for prefix in sorted(_outermost(folders)):
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    if obj["Key"] in wanted:
                        yield int(obj["Size"])
        return
    for key in object_keys:  # pragma: no cover - another adapter
        yield len(storage.get(key))


def _outermost(prefixes: set[str]) -> set[str]:
    return {p for p in prefixes if not any(p != q and p.startswith(q) for q in prefixes)}


@dataclass(frozen=True)
class Line:
    component: str
    quantity: Decimal
    unit: str
    unit_price: Decimal
    cost: Decimal


def sfn_children(counts: RunCounts, batching: Batching) -> int:
    """Child workflows of a run on engine ``stepfunctions``: each stage's tasks in batches
    of the definition's size (``batch_size``: one task per child above the leaf, the last
    stage; the seed is the parent's own task, not a child)."""
    last = len(counts.stages) - 1
    seedless = [max(s.tasks - (1 if i == 0 else 0), 0) for i, s in enumerate(counts.stages)]
    return sum(math.ceil(n / batching.size(n, fans_out=i < last)) for i, n in enumerate(seedless))


def stepfunctions_transitions(counts: RunCounts, batching: Batching) -> int:
    """Standard state transitions of one run: in the parent the seed task, one per Map
    and the leaf's sizing; per child its task, and one per retry (a retry re-runs the
    child's batch: counting each task's retries is the upper bound)."""
    return (
        1 + len(counts.stages) + SIZING_TRANSITIONS + sfn_children(counts, batching) + counts.total("retries")
    )


EXPRESS_MIN_GB = Decimal("0.0625")
"""An Express workflow's duration is billed for at least 64 MB."""


def child_workflow_costs(
    tasks: list[int], batching: Batching, lambda_s: Decimal, retries: int, prices: dict[str, Any]
) -> dict[str, Decimal]:
    """Engine ``stepfunctions``: one run's child workflows priced as Standard (state
    transitions, as ``stepfunctions_transitions``) and as Express (a request per child
    and its duration, the Lambda time it waits for, at 64 MB), from each stage's task
    count (the first stage's seed included) and the run's Lambda seconds."""
    p = {k: Decimal(str(v)) for k, v in prices.items() if k.startswith("sfn_")}
    counts = RunCounts("", [StageCounts(str(i), 0, 0, tasks=n, invocations=n) for i, n in enumerate(tasks)])
    children = sfn_children(counts, batching)
    transitions = stepfunctions_transitions(counts, batching) + retries
    return {
        "children": Decimal(children),
        "transitions": Decimal(transitions),
        "standard": transitions * p["sfn_transition_per_1000"] / 1000,
        "express": (children + retries) * p["sfn_express_request_per_million"] / 1_000_000
        + lambda_s * EXPRESS_MIN_GB * p["sfn_express_gb_second"],
    }


def estimate(
    counts: RunCounts,
    prices: dict[str, Any],
    rate_limit: float,
    *,
    pacing: str,
    engine: str = "s3_events",
    batching: Batching | None = None,
) -> dict[str, Any]:
    """The bill: one line per component, the total, and the server beside it; ``pacing``
    ``shared`` adds the budget table's writes, ``engine`` ``queue`` a message per task,
    ``stepfunctions`` its transitions (and no SQS)."""
    p = {k: Decimal(str(v)) for k, v in prices.items() if k not in NOT_PRICES}
    invocations = counts.total("invocations")
    sfn = engine == "stepfunctions"
    batching = batching or Batching()
    if sfn:  # one invocation per batch try: the seed, each child, each retry
        invocations = 1 + sfn_children(counts, batching) + counts.total("retries")
    gb_s = sum((s.gb_seconds for s in counts.stages), Decimal(0))
    puts = counts.total("s3_put") + counts.seed_puts + counts.compaction_put
    lists = counts.total("s3_list")
    gets = counts.total("s3_get") + counts.compaction_get
    sqs = 0 if sfn else 3 * counts.total("invocations" if engine == "queue" else "retries")
    secrets = counts.total("cold_starts")
    gb_month = Decimal(counts.stored_bytes) / Decimal(1024**3)
    lines = [
        Line("Lambda requests", Decimal(invocations), "invocations", p["lambda_request"], Decimal(0)),
        Line("Lambda duration", gb_s, "GB-s", p["lambda_gb_second"], Decimal(0)),
        Line("S3 PUT + LIST", Decimal(puts + lists), "requests", p["s3_put_per_1000"] / 1000, Decimal(0)),
        Line("S3 GET", Decimal(gets), "requests", p["s3_get_per_1000"] / 1000, Decimal(0)),
        Line("S3 storage (1 month)", gb_month, "GB-month", p["s3_gb_month"], Decimal(0)),
        Line(
            "SQS messages" if engine == "queue" else "SQS retries",
            Decimal(sqs),
            "requests",
            p["sqs_per_million"] / 1_000_000,
            Decimal(0),
        ),
        Line("Secrets Manager", Decimal(secrets), "calls", p["secrets_per_10000_calls"] / 10_000, Decimal(0)),
    ]
    if pacing == "shared":
        writes = Decimal(counts.api_calls) * budget_writes_per_call(rate_limit)
        price = p["dynamodb_write_per_million"] / 1_000_000
        lines.append(Line("DynamoDB budget (est.)", writes, "write units", price, Decimal(0)))
    if sfn:
        transitions = Decimal(stepfunctions_transitions(counts, batching))
        price = p["sfn_transition_per_1000"] / 1000
        lines.append(Line("Step Functions (est.)", transitions, "transitions", price, Decimal(0)))
    lines = [
        Line(li.component, li.quantity, li.unit, li.unit_price, li.quantity * li.unit_price) for li in lines
    ]
    total = sum((li.cost for li in lines), Decimal(0))
    calls = counts.api_calls
    lower_bound_s = Decimal(calls) / Decimal(str(rate_limit)) if rate_limit else Decimal(0)
    billed_s = max(Decimal(SERVER_MINIMUM_S), lower_bound_s.quantize(Decimal(1), rounding="ROUND_CEILING"))
    on_demand, spot = p["server_on_demand_hour"], p["server_spot_hour"]
    server = {
        "instance": prices["server_instance"],
        "api_calls": calls,
        "rate_limit": rate_limit,
        "lower_bound_s": lower_bound_s,
        "billed_s": billed_s,
        "on_demand_crawl": billed_s / 3600 * on_demand,
        "spot_crawl": billed_s / 3600 * spot,
        "on_demand_day": 24 * on_demand,
        "spot_day": 24 * spot,
    }
    return {
        "run_id": counts.run_id,
        "region": prices["region"],
        "prices_as_of": prices["as_of"],
        "lines": lines,
        "total": total,
        "server": server,
        "counts": counts,
        "runs_per_day_to_match_an_always_on_server": (server["on_demand_day"] / total) if total else None,
    }


def cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def to_json(bill: dict[str, Any]) -> dict[str, Any]:
    counts: RunCounts = bill["counts"]
    server = bill["server"]
    return {
        "run_id": bill["run_id"],
        "region": bill["region"],
        "prices_as_of": bill["prices_as_of"],
        "total_usd": float(bill["total"]),
        "total_cents": int(cents(bill["total"]) * 100),
        "components": [
            {
                "component": li.component,
                "quantity": float(li.quantity),
                "unit": li.unit,
                "unit_price_usd": float(li.unit_price),
                "cost_usd": float(li.cost),
            }
            for li in bill["lines"]
        ],
        "stages": {
            s.stage: {
                "tasks": s.tasks,
                "finished": s.finished,
                "failed": s.failed,
                "invocations": s.invocations,
                "retries": s.retries,
                "billed_ms": s.billed_ms,
                "memory_mb": s.memory_mb,
                "gb_seconds": float(s.gb_seconds),
                "s3_put": s.s3_put,
                "s3_list": s.s3_list,
                "s3_get": s.s3_get,
                "api_calls": s.api_calls,
            }
            for s in counts.stages
        },
        "stored_bytes": counts.stored_bytes,
        "output_files": counts.output_files,
        "output_bytes": counts.output_bytes,
        "server": {k: (float(v) if isinstance(v, Decimal) else v) for k, v in server.items()},
        "runs_per_day_to_match_an_always_on_server": (
            None
            if bill["runs_per_day_to_match_an_always_on_server"] is None
            else float(bill["runs_per_day_to_match_an_always_on_server"])
        ),
        "notes": counts.notes,
    }


def render_text(bill: dict[str, Any]) -> str:
    counts: RunCounts = bill["counts"]
    server = bill["server"]
    out = [
        f"run {bill['run_id']}: estimated on AWS Lambda in {bill['region']} "
        f"(list prices as of {bill['prices_as_of']})",
        f"  {'stage':<12} {'tasks':>6} {'invocations':>11} {'retries':>7} "
        f"{'billed s':>9} {'MB':>5} {'GB-s':>9}",
    ]
    for s in counts.stages:
        out.append(
            f"  {s.stage:<12} {s.tasks:>6} {s.invocations:>11} {s.retries:>7} "
            f"{s.billed_ms / 1000:>9.3f} {s.memory_mb:>5} {float(s.gb_seconds):>9.3f}"
        )
    out.append(f"  {'component':<22} {'quantity':>14} {'unit':<12} {'unit price':>12} {'cost $':>10}")
    for li in bill["lines"]:
        out.append(
            f"  {li.component:<22} {float(li.quantity):>14,.3f} {li.unit:<12} "
            f"{float(li.unit_price):>12.10f} {float(li.cost):>10.4f}"
        )
    out.append(
        f"  {'total':<22} {'':>14} {'':<12} {'':>12} {float(bill['total']):>10.4f}  (${cents(bill['total'])})"
    )
    out.append(
        f"  the same crawl on a server ({server['instance']}): {server['api_calls']} calls at "
        f"R = {server['rate_limit']:g}/s take at least {float(server['lower_bound_s']):.1f} s "
        f"(billed {server['billed_s']} s)"
    )
    out.append(
        f"    on demand ${float(server['on_demand_crawl']):.4f} for the crawl, "
        f"${float(server['on_demand_day']):.4f} a day always on"
    )
    out.append(
        f"    Spot      ${float(server['spot_crawl']):.4f} for the crawl, "
        f"${float(server['spot_day']):.4f} a day always on"
    )
    per_day = bill["runs_per_day_to_match_an_always_on_server"]
    if per_day is not None:
        out.append(
            f"  Lambda costs what an always-on on-demand server does at {float(per_day):,.1f} runs a day"
        )
    out.extend(f"  note: {n}" for n in counts.notes)
    return "\n".join(out)
