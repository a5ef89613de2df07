"""A deployed run keeps the learned limit under its template's grants (``emulation.py``:
the real handlers on moto, every AWS call held to its function's role)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import boto3
import pytest

from fanout.simulator import HermesSimulator
from fanout_aws.budget_table import KEY as BUDGET_KEY
from fanout_aws.s3_storage import S3Storage
from fanout_core import learned_limit

from . import test_deployed_wiring as deployed
from .conftest import FORGETFUL
from .test_deployed_wiring import BUCKET, _assert_complete, _config, _rows, _truth, emulate  # noqa: F401

HELD = 200.0
"""A kept limit below the rate the emulation lifts R to (``SHARED_MAX_RATE``)."""
RECORD = json.dumps({"held": HELD, "learned_on": "2026-12-07", "limit": 220.0}, sort_keys=True).encode()


def _kept_before_the_run(sim: HermesSimulator) -> list[tuple[float, Callable[[], None]]]:
    """A record for the URL the handlers call, put before any cold start (as an earlier run
    would have), outside every function's role."""

    def keep() -> None:
        storage = S3Storage(BUCKET, client=boto3.client("s3", region_name="us-east-1"))
        storage.put(learned_limit.key_for(sim.url), RECORD)

    return [(0.0, keep)]


def _budget_w_max(outcome: Any) -> float:
    emulation = outcome.emulation
    (table,) = emulation.names.table_names.values()
    got = emulation.dynamodb.get_item(TableName=table, Key=BUDGET_KEY, ConsistentRead=True)
    return float(got["Item"].get("w_max", {"N": "0"})["N"])


def test_a_deployed_fleet_starts_its_budget_at_the_kept_limit_under_its_grant(
    emulate: Any,  # noqa: F811
) -> None:
    """Every cold start reads the record (the role allows it: no denied call), the budget
    item's rate starts there (a cut at ``held``), and the run is row exact; with no 429 the
    record stays as it was (a seed is never written back as a finding)."""
    config = _config()
    outcome = emulate("dev", config, hooks=_kept_before_the_run)
    _assert_complete(outcome)
    assert _rows(outcome.storage) == _truth(config)
    assert _budget_w_max(outcome) == pytest.approx(HELD)
    key = learned_limit.key_for(outcome.sim.url)
    assert list(outcome.storage.list(learned_limit.PREFIX)) == [key]
    assert outcome.storage.get(key) == RECORD


def test_with_remember_limit_off_a_deployed_fleet_reads_and_writes_no_limit(
    emulate: Any,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its roles have no ``limits/*`` grant, so any read or write there would be a denied
    call; there is none, and the budget item is not seeded from the record."""
    monkeypatch.setitem(deployed.DESCRIBED, FORGETFUL, "s3_events")
    config = _config()
    outcome = emulate(FORGETFUL, config, hooks=_kept_before_the_run)
    _assert_complete(outcome)  # no denied call
    assert _rows(outcome.storage) == _truth(config)
    assert _budget_w_max(outcome) != pytest.approx(HELD)
    assert outcome.storage.get(learned_limit.key_for(outcome.sim.url)) == RECORD
