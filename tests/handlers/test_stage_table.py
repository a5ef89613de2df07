"""The Lambda runtime runs the stage table its configuration picked at cold start: every
key it parses, every record it writes and every log line's run id follow that table."""

from __future__ import annotations

import dataclasses
import json

from fanout.simulator import Universe
from fanout_aws import config as env_names
from fanout_aws.config import LambdaConfig
from fanout_aws.s3_event import s3_event_for
from fanout_aws.stage_handler import StageRuntime
from fanout_core import keys
from fanout_core.bodies import manifest_body
from fanout_core.failures import FailureRecord
from fanout_core.output import read_parquet_bytes
from fanout_core.stages import STAGES, StageTable
from tests.core.raw_http import always, raw_server

from .conftest import BUCKET, FakeContext


def _renamed_table() -> StageTable:
    renamed = {"warriors": "seeds/", "troops": "squads/", "data_groups": "groups/"}
    stages = tuple(dataclasses.replace(s, input_prefix=renamed[s.name]) for s in STAGES)
    return StageTable(stages, api=STAGES.api, output_prefix="records/")


def _runtime(monkeypatch, stage: str) -> StageRuntime:
    monkeypatch.setenv(env_names.ENV_STAGE, stage)
    monkeypatch.delenv(env_names.ENV_RETRY_QUEUE_URL, raising=False)
    table = _renamed_table()
    config = dataclasses.replace(LambdaConfig.from_environ(), table=table, stage=table.named(stage))
    return StageRuntime.from_config(config)


def test_functions_given_a_renamed_table_crawl_everything_under_its_prefixes(deployment, monkeypatch):
    dep = deployment(with_queues=False)
    table = _renamed_table()
    runtimes = {s.name: _runtime(monkeypatch, s.name) for s in table}
    seed = "seeds/r1.json"
    dep.storage.put(seed, manifest_body(None))
    delivered: set[str] = set()
    pending = [seed]
    while pending:  # S3's notifications: each new task object is delivered to its stage
        key = pending.pop()
        delivered.add(key)
        stage = table.for_key(key)
        assert stage is not None
        assert runtimes[stage.name].handle(s3_event_for(BUCKET, [key]), FakeContext()) is None
        tasks = [k for s in table for k in dep.objects(s.input_prefix) if table.for_key(k) is not None]
        pending += [k for k in tasks if k not in delivered and k not in pending]
    assert all(dep.storage.exists(keys.done_key(k)) for k in delivered)
    assert dep.objects("squads/run=r1/") and dep.objects("groups/run=r1/")
    rows = sum(len(read_parquet_bytes(dep.storage.get(k))) for k in dep.objects("records/run=r1/"))
    assert rows == sum(1 for _ in Universe(dep.sim.config).expected_rows()) > 0
    product = ("amazon_warriors", "troops", "data_groups", "data")
    assert not [k for k in dep.objects() if k.split("/")[0] in product]
    assert not dep.objects("failed/")


def test_a_renamed_tables_task_that_fails_is_recorded_under_its_stage_and_run_and_logged_so(
    deployment, monkeypatch, caplog
):
    with raw_server(always(503, b'{"error": "unavailable", "message": "down"}')) as server:
        dep = deployment(with_queues=False, max_attempts=1, hermes_url=server.url)
        key = "seeds/r1.json"
        dep.storage.put(key, manifest_body(None))
        with caplog.at_level("INFO"):
            _runtime(monkeypatch, "warriors").handle(s3_event_for(BUCKET, [key]), FakeContext())
    record = FailureRecord.from_bytes(dep.storage.get(keys.failed_key(key)))
    assert (record.stage, record.run_id, record.error_kind) == ("warriors", "r1", "server_error")
    failed = [r for r in caplog.records if getattr(r, "outcome", None) == "failed"]
    assert failed and all(getattr(r, "run_id", None) == "r1" for r in failed), [
        json.dumps(r.__dict__, default=str) for r in caplog.records
    ]


def test_a_product_prefix_key_is_no_task_of_a_function_given_a_renamed_table(deployment, monkeypatch):
    dep = deployment(with_queues=False)
    key = "amazon_warriors/r1.json"
    dep.storage.put(key, manifest_body(None))
    _runtime(monkeypatch, "warriors").handle(s3_event_for(BUCKET, [key]), FakeContext())
    assert dep.objects() == [key]  # refused: nothing run, nothing recorded
