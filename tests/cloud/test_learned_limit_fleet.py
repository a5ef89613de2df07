"""The Lambda fleet keeps the learned limit: the pacers a cold start builds
(``assembly.instance_pacer``) against a server whose limit nobody told them, on a fake
clock, reading and writing the record in a moto bucket through ``S3Storage`` (real boto3),
every S3 call held to the stage role of the synthesized ``dev`` template."""

from __future__ import annotations

import dataclasses
import heapq
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.client
import pytest
from botocore.exceptions import ClientError
from core.fake_time import FakeTime  # type: ignore[import-not-found]
from core.test_adaptive_pacing import HiddenLimit  # type: ignore[import-not-found]

from fanout_aws.s3_storage import S3Storage
from fanout_core import learned_limit
from fanout_core.api_client import PacerLike
from fanout_core.assembly import instance_pacer
from fanout_core.fleet_budget import MemoryBudgetStore
from fanout_core.settings import EnvironmentSettings, load_environment

from .wiring import Names, RolePolicy, resolve

CDK_JSON = Path(__file__).resolve().parents[2] / "cdk.json"
BUCKET = "fanout-limits"
TOKEN = "fleet-secret-token"
LIMIT = 30.0
"""The server's limit, below dev's configured R (50): nobody tells the fleet."""
STAGE = "data_groups"


@pytest.fixture
def role_checked_bucket(aws: None, template: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """A moto bucket whose S3 calls are held to the data_groups role of the dev template;
    yields the calls made (action and key)."""
    _doc, wiring = template("dev")
    role_id = next(
        spec.role_id for spec in wiring.functions.values() if spec.environment.get("FANOUT_STAGE") == STAGE
    )
    names = Names(bucket_id=wiring.bucket_id, bucket=BUCKET, queue_urls={})
    s3_statements = [
        {**st, "Resource": resolve(st["Resource"], names)}
        for st in wiring.raw_statements[role_id]
        if all(
            str(a).startswith("s3:")
            for a in (st["Action"] if isinstance(st["Action"], list) else [st["Action"]])
        )
    ]
    policy = RolePolicy(role_id, s3_statements)
    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=BUCKET)
    calls: list[str] = []
    original = botocore.client.BaseClient._make_api_call

    def checked(client: Any, op: str, params: dict[str, Any]) -> Any:
        if client.meta.service_model.service_name == "s3" and "Key" in params:
            action = "s3:GetObject" if op in ("GetObject", "HeadObject") else f"s3:{op}"
            calls.append(f"{action} {params['Key']}")
            if not policy.allows(action, f"arn:aws:s3:::{params['Bucket']}/{params['Key']}"):
                raise ClientError({"Error": {"Code": "AccessDenied", "Message": "emulated IAM"}}, op)
        return original(client, op, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", checked)
    yield calls


def _settings(pacing: str, **changes: Any) -> EnvironmentSettings:
    return dataclasses.replace(load_environment("dev", CDK_JSON), pacing=pacing, **changes)


def _fleet(
    settings: EnvironmentSettings,
    storage: S3Storage,
    budget: MemoryBudgetStore | None,
    t: FakeTime,
    seconds: float,
    *,
    instances: int | None = None,
    limit: float = LIMIT,
) -> list[tuple[float, bool]]:
    """The stage's instances (all of them unless ``instances``) cold-started at ``t.now``,
    crawling at once for ``seconds`` on one fake clock as discrete events (one call in
    flight each, answered 30-80 ms after it is sent) against a server of ``limit``;
    (send time from the start, accepted)."""
    rng = random.Random(5)
    start = t.now
    pacers: list[PacerLike] = [
        instance_pacer(settings, STAGE, budget=budget, limits=storage, clock=t.clock, sleep=t.sleep)
        for _ in range(instances or settings.stage(STAGE).instances)
    ]
    server = HiddenLimit(t, limit, max(1.0, limit / 10))
    server.last = t.now
    READY, SEND, ANSWER = 0, 1, 2
    events = [(t.now + rng.uniform(0, 0.01), READY, i, False) for i in range(len(pacers))]
    heapq.heapify(events)
    answers: list[tuple[float, bool]] = []
    while events:
        t.now, kind, i, ok = heapq.heappop(events)
        if kind == READY and t.now < start + seconds:
            pacers[i].acquire()
            heapq.heappush(events, (t.now, SEND, i, False))
        elif kind == SEND:
            ok = server.take()
            answers.append((t.now - start, ok))
            heapq.heappush(events, (t.now + rng.uniform(0.03, 0.08), ANSWER, i, ok))
        elif kind == ANSWER:
            (pacers[i].on_success() if ok else pacers[i].on_throttled(1.0))
            heapq.heappush(events, (t.now, READY, i, False))
    return answers


def _refused_in_first_10_s(answers: list[tuple[float, bool]]) -> int:
    return sum(1 for at, ok in answers if at < 10.0 and not ok)


def test_a_second_fleet_run_starts_at_the_limit_the_first_saved_and_meets_fewer_429s(
    role_checked_bucket: list[str],
) -> None:
    """Pacing ``shared`` (every deployed environment's): the first run's instances find the
    limit together and one of them saves it; the next run's cold starts seed the budget
    item with it, an hour later, the item's old cut long past."""
    settings = _settings("shared")
    storage = S3Storage(BUCKET, client=boto3.client("s3", region_name="us-east-1"))
    budget = MemoryBudgetStore()  # one deployment's budget item, idle between the two runs
    t = FakeTime(1_000.0)
    first = _fleet(settings, storage, budget, t, 30.0)
    key = learned_limit.key_for(settings.hermes_url)
    instances = settings.stage(STAGE).instances
    # Read once per cold start, written at most once per instance: a negligible count.
    assert role_checked_bucket.count(f"s3:GetObject {key}") == instances
    assert 1 <= role_checked_bucket.count(f"s3:PutObject {key}") <= instances
    kept = learned_limit.read(storage, settings.hermes_url)
    assert kept is not None and kept.held <= kept.limit
    assert LIMIT * 0.8 < kept.held < LIMIT * 1.15  # the rate the server let through, not R
    t.now += 3_600.0  # the next run, an hour later
    second = _fleet(settings, storage, budget, t, 10.0)
    refused = [_refused_in_first_10_s(run) for run in (first, second)]
    assert refused[1] < refused[0], refused
    print(f"\nLEARNED shared {kept} 429s in the first 10 s: {refused}")


def test_an_adaptive_instance_saves_its_limit_as_the_fleets_and_the_next_starts_at_its_part(
    role_checked_bucket: list[str],
) -> None:
    """Pacing ``adaptive``: an instance knows only its own calls, so it writes its limit
    scaled to the fleet (over its part of R), and the next cold start takes its part of
    that; one instance alone against its part of the server's limit (instances that each
    probe on their own meet each other's 429s and may find no 429-free window to write in)."""
    settings = _settings("adaptive")
    storage = S3Storage(BUCKET, client=boto3.client("s3", region_name="us-east-1"))
    part = settings.instance_rate(STAGE) / settings.hermes_rate_limit
    t = FakeTime(1_000.0)
    first = _fleet(settings, storage, None, t, 90.0, instances=1, limit=LIMIT * part)
    kept = learned_limit.read(storage, settings.hermes_url)
    # The fleet's rates: the first 429-free window may follow an early cut, below the limit
    # (the next run then starts low and probes up; it never starts above what was held).
    assert kept is not None and kept.held <= kept.limit < LIMIT * 1.15
    assert kept.limit > settings.instance_rate(STAGE)  # scaled to the fleet, not the instance's
    second = _fleet(settings, storage, None, t, 10.0, instances=1, limit=LIMIT * part)
    refused = [_refused_in_first_10_s(run) for run in (first, second)]
    assert refused[1] < refused[0], refused


def test_the_fleets_limit_record_holds_no_token_and_no_url(role_checked_bucket: list[str]) -> None:
    settings = _settings("shared")
    storage = S3Storage(BUCKET, client=boto3.client("s3", region_name="us-east-1"))
    t = FakeTime(1_000.0)
    _fleet(settings, storage, MemoryBudgetStore(), t, 30.0)
    (key,) = list(storage.list(learned_limit.PREFIX))
    body = storage.get(key)
    assert set(json.loads(body)) == {"limit", "held", "learned_on"}
    assert TOKEN.encode() not in body and b"hermes" not in body and b"example.com" not in body


@pytest.mark.parametrize("pacing", ["shared", "adaptive"])
def test_with_remember_limit_off_the_fleet_reads_and_writes_no_limit(
    role_checked_bucket: list[str], pacing: str
) -> None:
    settings = _settings(pacing, remember_limit=False)
    storage = S3Storage(BUCKET, client=boto3.client("s3", region_name="us-east-1"))
    storage.put(
        learned_limit.key_for(settings.hermes_url), b'{"held": 5, "learned_on": "2026-12-07", "limit": 6}'
    )
    role_checked_bucket.clear()
    t = FakeTime(1_000.0)
    budget = MemoryBudgetStore()
    answers = _fleet(settings, storage, budget, t, 30.0)
    assert not any(call.split(" ", 1)[1].startswith(learned_limit.PREFIX) for call in role_checked_bucket)
    assert budget.item.w_max != 5.0  # not seeded from the record
    assert sum(1 for at, ok in answers if ok and at < 10.0) > 6 * 10  # not started at 5/s either


@pytest.mark.parametrize(
    "body", [b"not json", b'{"limit": "fast", "held": 1, "learned_on": "2026-12-07"}', b" " * 5000]
)
def test_a_corrupt_limit_record_is_ignored_with_one_log_line_per_cold_start(
    role_checked_bucket: list[str], body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _settings("shared")
    storage = S3Storage(BUCKET, client=boto3.client("s3", region_name="us-east-1"))
    storage.put(learned_limit.key_for(settings.hermes_url), body)
    budget = MemoryBudgetStore()
    t = FakeTime(1_000.0)
    with caplog.at_level("INFO", logger="fanout"):
        pacer = instance_pacer(settings, STAGE, budget=budget, limits=storage, clock=t.clock, sleep=t.sleep)
    lines = [r for r in caplog.records if getattr(r, "outcome", "").startswith("limit_")]
    assert [(r.levelname, r.outcome) for r in lines] == [("WARNING", "limit_ignored")]  # type: ignore[attr-defined]
    assert budget.item.w_max == 0.0 and budget.writes == 0  # nothing seeded: the fleet starts at R
    pacer.acquire()
