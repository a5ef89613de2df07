"""Pacing ``shared`` on moto: the budget item's conditional updates, and a crawl through
the real handlers that reserves every call's slot in it."""

from __future__ import annotations

import itertools
import threading
import time

import boto3
import pytest

from fanout_aws import config as env_names
from fanout_aws.budget_table import KEY, DynamoBudgetStore
from fanout_core.errors import SettingsError
from fanout_core.fleet_budget import BudgetUnavailable, FleetPacer

from .conftest import REGION, drain
from .test_handlers import _rows, _seed, _truth

TABLE = "fanout-test-budget"


@pytest.fixture
def table(aws: None) -> str:
    client = boto3.client("dynamodb", region_name=REGION)
    client.create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return TABLE


def store(table: str) -> DynamoBudgetStore:
    return DynamoBudgetStore(boto3.client("dynamodb", region_name=REGION), table)


def test_the_first_reservation_creates_the_item_from_its_floor(table: str) -> None:
    item = store(table).reserve(floor=100.0, increment=0.01)
    assert item.tat == pytest.approx(100.01)


def test_a_busy_budget_advances_from_its_tat_not_from_now(table: str) -> None:
    s = store(table)
    s.reserve(floor=100.0, increment=0.5)
    assert s.reserve(floor=100.1, increment=0.5).tat == pytest.approx(101.0)


def test_an_idle_budget_restarts_at_the_floor(table: str) -> None:
    s = store(table)
    s.reserve(floor=100.0, increment=0.01)
    assert s.reserve(floor=200.0, increment=0.01).tat == pytest.approx(200.01)


def test_a_clump_of_429s_cuts_once(table: str) -> None:
    s = store(table)
    s.reserve(floor=100.0, increment=0.01)
    first = s.cut(now=101.0, sent_at=100.5, w_max=80.0, hold_until=0.0)
    assert first is not None and first.w_max == pytest.approx(80.0) and first.cut_at == pytest.approx(101.0)
    assert s.cut(now=101.1, sent_at=100.9, w_max=70.0, hold_until=0.0) is None
    later = s.cut(now=102.0, sent_at=101.5, w_max=60.0, hold_until=105.0)
    assert later is not None and later.hold_until == pytest.approx(105.0)


def test_push_moves_tat_forward_never_back(table: str) -> None:
    s = store(table)
    s.reserve(floor=100.0, increment=1.0)
    s.push(tat=100.5)  # behind: slots up to 101 were handed out, they stay
    assert s.reserve(floor=100.0, increment=0.0).tat == pytest.approx(101.0)
    s.push(tat=103.0)
    assert s.reserve(floor=100.0, increment=0.0).tat == pytest.approx(103.0)


def test_a_reservation_on_an_idle_budget_costs_one_write_once_the_store_has_seen_it(table: str) -> None:
    s = store(table)
    s.reserve(floor=100.0, increment=0.01)
    before = s.writes
    s.reserve(floor=200.0, increment=0.01)  # the last tat seen (100.01) predicts idle
    s.reserve(floor=200.0, increment=0.01)  # and then busy
    assert s.writes - before == 2


def test_a_lease_on_a_budget_kept_busy_by_others_costs_one_write(table: str) -> None:
    a, b = store(table), store(table)  # two instances
    a.reserve(floor=100.0, increment=0.3)
    b.reserve(floor=100.05, increment=0.3)
    a.reserve(floor=100.35, increment=0.3)  # busy: tat 0.9 s ahead
    b.reserve(floor=100.45, increment=0.3)
    before = a.writes
    a.reserve(floor=101.0, increment=0.3)  # a's own last tat (100.9) lies behind the floor
    assert a.writes - before == 1


def test_a_missing_table_is_budget_unavailable_not_a_task_failure(aws: None) -> None:
    with pytest.raises(BudgetUnavailable, match="ResourceNotFoundException"):
        store("no-such-table").reserve(floor=1.0, increment=0.01)


def test_a_fleet_on_the_table_gets_slots_one_interval_apart(table: str) -> None:
    s = store(table)
    pacers = [FleetPacer(s, 100.0, fallback_rate=10.0, burst=1.0) for _ in range(5)]
    slots = [p._next_slot(1_000.0) for p in pacers]
    assert [round(b - a, 6) for a, b in itertools.pairwise(slots)] == [0.01] * 4


def test_a_crawl_with_pacing_shared_reserves_every_call_in_the_table(
    deployment, monkeypatch, sim_config, table: str
) -> None:
    dep = deployment(pacing="shared", hermes_rate_limit=200)
    monkeypatch.setenv(env_names.ENV_BUDGET_TABLE, table)
    started = time.time()
    drain(dep, monkeypatch, [_seed(dep, "rs", None)])
    assert _rows(dep, "rs") == _truth(sim_config)
    item = boto3.client("dynamodb", region_name=REGION).get_item(TableName=table, Key=KEY)["Item"]
    # The last call's slot, in wall-clock time: the crawl paced through the table.
    assert started - 1.0 <= float(item["tat"]["N"]) <= time.time() + 1.0


def test_pacing_shared_without_the_table_refuses_to_start(deployment, monkeypatch) -> None:
    deployment(pacing="shared")
    monkeypatch.setenv(env_names.ENV_STAGE, "warriors")
    monkeypatch.delenv(env_names.ENV_BUDGET_TABLE, raising=False)
    with pytest.raises(SettingsError, match="FANOUT_BUDGET_TABLE"):
        env_names.LambdaConfig.from_environ()


def test_give_back_moves_tat_back_only_while_nobody_leased_after(table: str) -> None:
    s = store(table)
    mine = s.reserve(floor=100.0, increment=0.05)  # a slice of five slots, 100.0 to 100.05
    assert s.give_back(end=mine.tat, amount=0.03) is True
    assert s.reserve(floor=100.0, increment=0.0).tat == pytest.approx(100.02)
    s.reserve(floor=100.0, increment=0.01)  # another lease on top
    assert s.give_back(end=100.02, amount=0.02) is False  # those slots are someone else's now
    assert s.reserve(floor=100.0, increment=0.0).tat == pytest.approx(100.03)


def test_repair_resets_an_absurd_item_once(table: str) -> None:
    s = store(table)
    seen = s.reserve(floor=3_700.0, increment=0.01)  # an hour ahead of a clock at 100
    fixed = s.repair(seen=seen.tat, tat=100.0, hold_until=0.0)
    assert fixed is not None and fixed.tat == pytest.approx(100.0) and fixed.hold_until == 0.0
    assert s.repair(seen=seen.tat, tat=100.0, hold_until=0.0) is None  # already repaired


def test_a_budget_item_an_hour_ahead_is_repaired_and_the_crawl_runs_within_its_budget(
    deployment, monkeypatch, sim_config, table: str
) -> None:
    """The issue's stalled fleet: one corrupt write (or an instance whose clock is an hour
    ahead) put ``tat`` and ``hold_until`` an hour in the future; the real handlers repair
    it, and the crawl ends row exact in seconds instead of sleeping towards it."""
    dep = deployment(pacing="shared", hermes_rate_limit=200)
    monkeypatch.setenv(env_names.ENV_BUDGET_TABLE, table)
    client = boto3.client("dynamodb", region_name=REGION)
    ahead = time.time() + 3_600.0
    client.put_item(
        TableName=table, Item={**KEY, "tat": {"N": f"{ahead:.9f}"}, "hold_until": {"N": f"{ahead:.9f}"}}
    )
    started = time.time()
    done = threading.Event()

    def crawl() -> None:
        drain(dep, monkeypatch, [_seed(dep, "far", None)])
        done.set()

    worker = threading.Thread(target=crawl, daemon=True)  # a fleet asleep for an hour fails, not hangs
    worker.start()
    worker.join(timeout=60.0)
    assert done.is_set(), "the crawl slept towards the absurd item"
    assert time.time() - started < 60.0  # FakeContext gives each handler 300 s
    assert _rows(dep, "far") == _truth(sim_config)
    item = client.get_item(TableName=table, Key=KEY, ConsistentRead=True)["Item"]
    assert float(item["tat"]["N"]) <= time.time() + 1.0
    assert float(item["hold_until"]["N"]) == 0.0
