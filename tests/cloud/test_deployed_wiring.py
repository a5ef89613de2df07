"""The deployed wiring, emulated: each scenario runs the real handlers (the dead-letter
recorder among them) under the synthesized template's notifications, concurrency, async
retries, queues, mappings and IAM (``emulation.py``), in both engines, and is checked
row for row against the simulator's truth, with every task finished or holding a
failure record, and no message left in a DLQ.

Run with ``-s`` to see each scenario's figures (``EMULATION {...}`` lines), which the
emulation table of docs/engines.md quotes.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
import task_keys

from fanout.audit import normalize, output_rows
from fanout.simulator import HermesSimulator, SimConfig, Universe
from fanout.simulator.truth import compare_rows, expected_rows, rows_from_frame, simulator_config
from fanout_aws import stage_handler
from fanout_aws.budget_table import KEY as BUDGET_KEY
from fanout_aws.config import ENV_BUDGET_TABLE
from fanout_aws.s3_storage import S3Storage
from fanout_core import keys
from fanout_core.api_description import ApiDescription, load
from fanout_core.bodies import manifest_body
from fanout_core.failures import FailureRecord
from fanout_core.output import read_parquet_bytes
from fanout_core.stages import STAGES, TASK_SUFFIX, StageTable
from stacks.bundling import write_api

from .conftest import TWO_LEVEL_API
from .emulation import Emulation, Faults, Figures, install_clock
from .wiring import Wiring

ENVIRONMENTS = {"dev": "s3_events", "dev-queue": "queue"}
"""The environments every scenario runs in, and their engines."""
DESCRIBED = {"shops": "s3_events", "shops-queue": "queue"}
"""Environments of a 2-level test description (``conftest.CLOUD_ENVIRONMENTS``)."""
ROOT = Path(__file__).resolve().parents[2]
BUCKET = "fanout-emulated"
TOKEN = "emulated-token"
RUN = "r1"
TASK_S = {"warriors": 5.0, "troops": 10.0, "data_groups": 40.0}
"""Virtual seconds per invocation, per stage (plus up to half again, per key)."""


@dataclasses.dataclass
class Outcome:
    figures: Figures
    storage: S3Storage
    sim_config: SimConfig
    emulation: Emulation
    sim: HermesSimulator


def _rows(storage: S3Storage) -> list[tuple[Any, ...]]:
    return sorted(output_rows(storage, RUN)[0], key=repr)


def _truth(config: SimConfig, *, without_troop: tuple[str, str] | None = None) -> list[tuple[Any, ...]]:
    rows = Universe(config).expected_rows()
    kept = (normalize(r) for r in rows if without_troop is None or tuple(r[:2]) != without_troop)
    return sorted(kept, key=repr)


def _tasks(storage: S3Storage, table: StageTable = STAGES) -> list[str]:
    return [k for s in table for k in storage.list(s.input_prefix) if k.endswith(TASK_SUFFIX)]


def _unfinished(storage: S3Storage, table: StageTable = STAGES) -> list[str]:
    """Tasks with neither a done marker nor a failure record."""
    return [
        k
        for k in _tasks(storage, table)
        if not storage.exists(keys.done_key(k)) and not storage.exists(keys.failed_key(k))
    ]


@pytest.fixture
def emulate(aws: None, template: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    sims: list[HermesSimulator] = []
    original = stage_handler.hermes_client

    def quick_client(*args: Any, **kwargs: Any) -> Any:
        client = original(*args, **kwargs)
        client._sleep = lambda _s: None  # the client's in-task backoff is virtual too
        return client

    monkeypatch.setattr(stage_handler, "hermes_client", quick_client)

    def run(
        env: str,
        sim_config: SimConfig,
        *,
        faults: Faults | None = None,
        secret: bool = True,
        hooks: Callable[[HermesSimulator], list[tuple[float, Callable[[], None]]]] | None = None,
        task_s: dict[str, float] | None = None,
        wiring_change: Callable[[Wiring], Wiring] | None = None,
        api: ApiDescription | None = None,
        bundle_root: Path | None = None,
    ) -> Outcome:
        _doc, wiring = template(env)
        if wiring_change is not None:
            wiring = wiring_change(wiring)
        sim = HermesSimulator(sim_config, api=api)
        url = sim.start()
        sims.append(sim)
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        sqs = boto3.client("sqs", region_name="us-east-1")
        secrets = boto3.client("secretsmanager", region_name="us-east-1")
        dynamodb = boto3.client("dynamodb", region_name="us-east-1")
        clock = install_clock(monkeypatch)
        emulation = Emulation(
            wiring,
            engine={**ENVIRONMENTS, **DESCRIBED}[env],
            s3=s3,
            sqs=sqs,
            secrets=secrets,
            dynamodb=dynamodb,
            clock=clock,
            bucket=BUCKET,
            hermes_url=url,
            token=None,
            task_s=task_s or TASK_S,
            faults=faults,
            hooks=hooks(sim) if hooks else None,
            bundle_root=bundle_root,
        )
        if secret:
            name = emulation.settings.token_secret_name
            emulation.secret_arns[name] = secrets.create_secret(Name=name, SecretString=TOKEN)["ARN"]
        assert emulation.wiring_problems() == []
        storage = S3Storage(BUCKET, client=s3)
        storage.put(emulation.table.seed(RUN).key, manifest_body(None, emulation.table.api))
        with emulation.checked_calls(monkeypatch):
            figures = emulation.run()
        outcome = Outcome(figures, storage, sim_config, emulation, sim)
        print(f"\nEMULATION {env} " + json.dumps(figures.as_dict(), sort_keys=True))
        return outcome

    yield run
    for sim in sims:
        sim.stop()


def _config(**faults: Any) -> SimConfig:
    return dataclasses.replace(SimConfig.from_size("tiny", token=TOKEN, awkward_ids=True), **faults)


def _assert_complete(outcome: Outcome, *, dead_lettered: int = 0) -> None:
    assert outcome.figures.denied_calls == []
    assert outcome.figures.stage_missing_key_403 == []  # every existence check one HEAD
    assert _unfinished(outcome.storage) == []
    assert outcome.figures.throttled_receives == 0
    assert outcome.figures.dead_lettered == dead_lettered  # only where the scenario says
    assert outcome.figures.dead_letters == 0  # none left behind


@pytest.mark.parametrize("env", list(ENVIRONMENTS))
def test_a_small_awkward_tree_under_5xx_and_429_is_row_exact_paced_through_the_budget_table(
    emulate: Any, template: Any, env: str
) -> None:
    """Under 5xx and 429s the run is row exact, and pacing ``shared`` (every deployed
    environment's) worked through the template's budget table: created in moto from its
    key schema, named to every stage function and retry consumer, which may UpdateItem
    it and nothing else, and the handlers really reserved their calls there (the item
    has a ``tat`` from this run)."""
    _, wiring = template(env)
    (table_id,) = wiring.tables  # pacing shared builds the one table
    config = _config(error_rate_5xx=0.25, error_rate_429=0.05, fault_seed=11)
    started = time.time()  # the budget's times are the handlers' wall clock
    outcome = emulate(env, config)
    _assert_complete(outcome)  # no denied call: the DynamoDB calls were held to the roles too
    assert _rows(outcome.storage) == _truth(config)
    assert outcome.figures.failure_records == 0
    stats = outcome.sim.stats
    assert stats.injected_5xx > 0 and stats.injected_429 > 0  # the faults were there

    emulation = outcome.emulation
    table = emulation.names.table_names[table_id]
    arn = emulation.names.table_arn(table_id)
    described = emulation.dynamodb.describe_table(TableName=table)["Table"]
    assert described["KeySchema"] == list(wiring.tables[table_id].key_schema)
    stage_functions = [fn for fn in emulation.functions.values() if fn.stage is not None]
    assert len(stage_functions) == 2 * len(STAGES)  # each stage's function and retry consumer
    for fn in stage_functions:
        assert fn.environment[ENV_BUDGET_TABLE] == table
        assert fn.policy.allows("dynamodb:UpdateItem", arn)
        for other in ("dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:DeleteItem", "dynamodb:Scan"):
            assert not fn.policy.allows(other, arn), (fn.spec.logical_id, other)
        assert not fn.policy.allows("dynamodb:UpdateItem", arn + "-other")
    # The handlers leased slices of slots: 22-36 UpdateItems for 72 Hermes calls between
    # runs (the pace an instance learns is wall-clock), against 86-87 when every call
    # reserved its own slot. On a tree of ~3 calls a task most of them are the one-slot
    # lease of an instance's first call, before it knows its pace.
    assert 0 < outcome.figures.budget_writes <= 0.6 * stats.requests
    item = emulation.dynamodb.get_item(TableName=table, Key=BUDGET_KEY, ConsistentRead=True)["Item"]
    assert float(item["tat"]["N"]) >= started


def _first_troop(config: SimConfig) -> tuple[str, str]:
    universe = Universe(config)
    warrior = universe.warriors()[0]["warrior_id"]
    return warrior, universe.troops(warrior)[0]["troop_id"]


@pytest.mark.parametrize("kind", ["crash", "timeout"])
@pytest.mark.parametrize("env", list(ENVIRONMENTS))
def test_a_task_that_dies_every_time_ends_with_one_failure_record(emulate: Any, env: str, kind: str) -> None:
    config = _config()
    warrior, troop = _first_troop(config)
    dying = task_keys.data_groups_task_key(RUN, warrior, troop, 0)
    outcome = emulate(env, config, faults=Faults(crash_keys=frozenset({dying}), crash_kind=kind))
    _assert_complete(outcome)
    assert _rows(outcome.storage) == _truth(config, without_troop=(warrior, troop))
    assert [k for k in outcome.storage.list("failed/")] == [keys.failed_key(dying)]
    record = FailureRecord.from_bytes(outcome.storage.get(keys.failed_key(dying)))
    settings = outcome.emulation.settings
    if outcome.figures.engine == "queue":  # each dead delivery is a receive: max_attempts of them
        assert record.attempts == settings.max_attempts
    else:  # Lambda's on-failure record of a crash is recorded at once, after its own tries
        assert record.attempts == settings.stage("data_groups").retry_attempts + 1
        assert record.error_kind == "crashed" and record.approximate_invoke_count == record.attempts
    assert "died" in record.message or "tries" in record.message or "crash" in record.message


@pytest.mark.parametrize("env", list(ENVIRONMENTS))
def test_a_missing_secret_fails_the_seed_at_once_naming_it(emulate: Any, env: str) -> None:
    config = _config()
    outcome = emulate(env, config, secret=False)
    _assert_complete(outcome)
    seed = task_keys.manifest_key(RUN)
    assert list(outcome.storage.list("failed/")) == [keys.failed_key(seed)]
    record = FailureRecord.from_bytes(outcome.storage.get(keys.failed_key(seed)))
    assert record.error_class == "ConfigurationError"
    assert (
        "ResourceNotFoundException" in record.message
        and outcome.emulation.settings.token_secret_name in record.message
    )
    assert record.attempts == 1  # no hours of retries
    assert outcome.figures.retries_sent == 0
    assert _rows(outcome.storage) == []


@pytest.mark.parametrize("env", list(ENVIRONMENTS))
def test_duplicate_deliveries_write_every_row_once(emulate: Any, env: str) -> None:
    config = _config()
    outcome = emulate(env, config, faults=Faults(duplicate_notifications=True))
    _assert_complete(outcome)
    assert _rows(outcome.storage) == _truth(config)
    assert outcome.figures.failure_records == 0
    leaf = [f for fid, f in outcome.figures.functions.items() if fid.startswith("DataGroupsFunction")]
    tasks = len([k for k in _tasks(outcome.storage) if k.startswith(STAGES.leaf.input_prefix)])
    assert leaf[0].invocations >= 2 * tasks  # every notification really came twice


RETRY_DUE_WITHIN_S = 60.0
"""The promise: a retry runs within its delay plus about a minute."""


@pytest.mark.parametrize("env", list(ENVIRONMENTS))
def test_a_stage_held_at_its_reserved_concurrency_still_runs_its_retries_when_due(
    emulate: Any, template: Any, env: str
) -> None:
    config = _config(warriors=8)  # more leaf tasks than the stage's cap, for several waves
    # Leaf tasks of 100-150 s keep the stage's slots full for several waves; the first
    # two leaf tasks fail transiently (S3 SlowDown) and come due while it is full.
    _, wiring = template(env)
    consumers = [f for fid, f in wiring.functions.items() if fid.startswith("DataGroupsRetries")]
    burst = consumers[0].reserved  # as many as the retry consumer's share
    outcome = emulate(
        env, config, faults=Faults(slow_down_first=burst), task_s={**TASK_S, "data_groups": 100.0}
    )
    _assert_complete(outcome)
    assert _rows(outcome.storage) == _truth(config)
    figures = outcome.figures
    leaf = next(f for fid, f in figures.functions.items() if fid.startswith("DataGroupsFunction"))
    assert leaf.peak_in_flight == leaf.reserved  # the stage was held at its cap
    assert leaf.invocations >= 3 * leaf.reserved  # several waves: longer than the retries take to come due
    assert figures.retries_sent == burst
    assert len(figures.retry_lateness_s) == burst
    assert figures.max_retry_lateness_s <= RETRY_DUE_WITHIN_S


def _listing_only_under_prefixes(wiring: Wiring) -> Wiring:
    """The stage roles' whole-bucket listing narrowed to the prefixes they check (the grant
    before existence checks were HEADs), ``limits/*`` among them (each cold start reads the
    learned limit, missing on a first run)."""
    prefixes = [
        "amazon_warriors/*",
        "troops/*",
        "data_groups/*",
        "done/*",
        "failed/*",
        "plans/*",
        "data/*",
        "limits/*",
    ]

    def narrowed(st: dict[str, Any]) -> dict[str, Any]:
        if st.get("Sid") != "ListPipelineBucket":
            return st
        return {**st, "Condition": {"StringLike": {"s3:prefix": prefixes}}}

    raw = {role: tuple(narrowed(st) for st in sts) for role, sts in wiring.raw_statements.items()}
    return dataclasses.replace(wiring, raw_statements=raw)


def test_with_listing_narrowed_to_prefixes_existence_heads_meet_403s_and_the_run_stays_exact(
    emulate: Any,
) -> None:
    """Existence checks are HEADs: with the stage roles' ListBucket narrowed by ``s3:prefix``
    (the grant before) S3 answers a HEAD of a missing done marker 403, and the run is still
    row exact, each such check settled by a listing of its key. (With the template's grant
    no stage function meets a 403: ``_assert_complete``.)"""
    config = _config()
    narrowed = emulate("dev", config, wiring_change=_listing_only_under_prefixes)
    assert narrowed.figures.denied_calls == []
    assert _unfinished(narrowed.storage) == [] and _rows(narrowed.storage) == _truth(config)
    denied = narrowed.figures.stage_missing_key_403
    assert any(": HeadObject done/" in d for d in denied)


def _leaf_capped_at_two(wiring: Wiring) -> Wiring:
    """The leaf stage's function and its mapping capped at 2 (the mapping's floor)."""
    leaf = next(fid for fid in wiring.functions if fid.startswith("DataGroupsFunction"))
    functions = {**wiring.functions, leaf: dataclasses.replace(wiring.functions[leaf], reserved=2)}
    mappings = tuple(
        dataclasses.replace(m, max_concurrency=2) if m.function == leaf else m for m in wiring.mappings
    )
    return dataclasses.replace(wiring, functions=functions, mappings=mappings)


def test_queue_mode_completes_a_backlog_longer_than_the_event_age_with_no_dead_letter(
    emulate: Any, template: Any
) -> None:
    """24 leaf tasks of 400-600 s at a cap of 2 take over 80 minutes to drain: longer than
    dev's one-hour event age, past which the async path would hand them to on-failure."""
    _, dev = template("dev")
    event_age = max(f.invoke_config.max_event_age_s for f in dev.functions.values() if f.invoke_config)
    config = _config(warriors=8)
    outcome = emulate(
        "dev-queue", config, task_s={**TASK_S, "data_groups": 400.0}, wiring_change=_leaf_capped_at_two
    )
    _assert_complete(outcome)
    assert _rows(outcome.storage) == _truth(config)
    assert outcome.figures.max_wait_s > event_age
    assert outcome.figures.failure_records == 0


@pytest.mark.parametrize("env", list(ENVIRONMENTS))
def test_a_task_that_no_receive_can_record_is_recorded_from_its_dead_letter(emulate: Any, env: str) -> None:
    """A leaf task that dies every time, and S3 refuses its failure record to the
    stage's functions: every receive of its message ends without a delete, so after the
    queue's ``maxReceiveCount`` receives it moves to the DLQ, where the recorder (its
    mapping and role from the template) writes the record."""
    config = _config()
    warrior, troop = _first_troop(config)
    dying = task_keys.data_groups_task_key(RUN, warrior, troop, 0)
    doomed = frozenset({dying})
    outcome = emulate(env, config, faults=Faults(crash_keys=doomed, refused_records=doomed))
    _assert_complete(outcome, dead_lettered=1)
    figures = outcome.figures
    assert figures.refused_record_writes > 0  # the fault was there: the stage could not record it
    assert figures.dead_letter_records == 1
    assert _rows(outcome.storage) == _truth(config, without_troop=(warrior, troop))
    assert list(outcome.storage.list("failed/")) == [keys.failed_key(dying)]
    record = FailureRecord.from_bytes(outcome.storage.get(keys.failed_key(dying)))
    assert record.error_kind == "crashed" and "dead-letter queue" in record.message
    leaf = outcome.emulation.settings.stage("data_groups")
    if figures.engine == "queue":  # the S3 notification itself reached the DLQ
        assert record.condition == "DeadLetterQueue"
        settings = outcome.emulation.settings
        assert record.attempts == settings.max_attempts  # a receive ran each, until the last
        # every receive in the stage queue, not the recorder's (moto, like SQS, keeps the
        # count into the DLQ, so the DLQ's count is one more)
        assert record.approximate_invoke_count == settings.max_receives
    else:  # Lambda's on-failure record reached the DLQ, and its report is kept
        assert record.condition == "RetriesExhausted"
        assert record.attempts == leaf.retry_attempts + 1
        assert record.approximate_invoke_count == leaf.retry_attempts + 1
        assert record.error_type == "Runtime.ExitError"


@pytest.mark.parametrize("env", list(DESCRIBED))
def test_a_described_api_is_row_exact_through_the_deployed_wiring(
    emulate: Any, env: str, tmp_path: Path
) -> None:
    """A 2-level API that is not Hermes (one stage that seeds and writes Parquet; offset
    pages, its key in the query, integer ids, nested, JSON and extra columns), its stack
    synthesized from the description, its functions reading the description's JSON where
    the bundle carries it: every row the simulator's truth holds, once, under 5xx and 429s."""
    api = load(ROOT / TWO_LEVEL_API)
    write_api(tmp_path, api)  # what the bundle carries beside the code
    config = simulator_config(api, "tiny", token=TOKEN, error_rate_5xx=0.2, error_rate_429=0.05, fault_seed=5)
    outcome = emulate(env, config, api=api, bundle_root=tmp_path, task_s={"shops": 20.0})
    table = outcome.emulation.table
    assert table.api.to_json() == api.to_json() and table.names == ("shops",)
    assert outcome.figures.denied_calls == []
    assert _unfinished(outcome.storage, table) == []
    assert outcome.figures.dead_letters == 0
    written = []
    for key in outcome.storage.list(table.output_run_prefix(RUN)):
        written += rows_from_frame(api, read_parquet_bytes(outcome.storage.get(key)))
    comparison = compare_rows(written, expected_rows(api, config))
    assert comparison.expected > 0
    assert (comparison.missing, comparison.unexpected, comparison.duplicated) == ([], [], [])
    assert comparison.found == comparison.expected
    assert outcome.sim.stats.injected_5xx > 0  # the faults were there
