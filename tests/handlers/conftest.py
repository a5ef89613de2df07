"""Handler tier: the real Lambda entrypoints, real boto3 against moto, Hermes simulated."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto import mock_aws

from fanout.simulator import HermesSimulator, SimConfig
from fanout_aws import config as env_names
from fanout_aws.s3_storage import S3Storage
from fanout_core.settings import environment_to_json, parse_environment
from fanout_core.stages import STAGES, stage_for_key

BUCKET = "fanout-test-bucket"
REGION = "us-east-1"
TOKEN = "handler-token"


class FakeContext:
    """The part of the Lambda context object the handlers use."""

    def __init__(self, remaining_ms: int = 300_000):
        self.remaining_ms = remaining_ms
        self.function_name = "fanout-test"
        self.aws_request_id = "req-1"

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@dataclass
class Deployment:
    """A moto bucket and retry queues standing in for the deployed stack."""

    storage: S3Storage
    s3: Any
    sqs: Any
    queues: dict[str, str]
    sim: HermesSimulator

    def objects(self, prefix: str = "") -> list[str]:
        return list(self.storage.list(prefix))


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        yield


@pytest.fixture
def sim_config() -> SimConfig:
    return SimConfig.from_size("tiny", token=TOKEN, awkward_ids=True)


@pytest.fixture
def deployment(
    aws: None, sim_config: SimConfig, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Deployment]]:
    sims: list[HermesSimulator] = []

    def make(*, with_queues: bool = True, max_attempts: int = 4, **settings: Any) -> Deployment:
        sim = HermesSimulator(sim_config)
        url = sim.start()
        sims.append(sim)
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET)
        sqs = boto3.client("sqs", region_name=REGION)
        queues = {}
        if with_queues:
            for stage in STAGES:
                queues[stage.name] = sqs.create_queue(QueueName=f"fanout-{stage.name}-retry")["QueueUrl"]
        env = parse_environment(
            "test",
            {
                "hermes_url": url,
                "max_attempts": max_attempts,
                **{"retry_base_delay_s": 1, "retry_max_delay_s": 4, **settings},
            },
        )
        monkeypatch.setenv(env_names.ENV_NAME, "test")
        monkeypatch.setenv(env_names.ENV_SETTINGS, environment_to_json(env))
        monkeypatch.setenv(env_names.ENV_BUCKET, BUCKET)
        monkeypatch.setenv(env_names.ENV_TOKEN, TOKEN)
        return Deployment(storage=S3Storage(BUCKET, client=s3), s3=s3, sqs=sqs, queues=queues, sim=sim)

    yield make
    for sim in sims:
        sim.stop()


def invoke(
    stage_name: str, event: dict[str, Any], monkeypatch: pytest.MonkeyPatch, deployment: Deployment
) -> Any:
    """Call a stage's real entrypoint module the way Lambda would (fresh cold start each time)."""
    import importlib

    from fanout_aws.handlers import stage as module

    monkeypatch.setenv(env_names.ENV_STAGE, stage_name)
    if deployment.queues:
        monkeypatch.setenv(env_names.ENV_RETRY_QUEUE_URL, deployment.queues[stage_name])
    else:
        monkeypatch.delenv(env_names.ENV_RETRY_QUEUE_URL, raising=False)
    module = importlib.reload(module)
    return module.handler(event, FakeContext())


def drain(deployment: Deployment, monkeypatch: pytest.MonkeyPatch, first_keys: list[str]) -> list[str]:
    """Deliver S3 events for ``first_keys`` and for every task object they create, like S3 would."""
    from fanout_aws.s3_event import s3_event_for

    seen: set[str] = set()
    pending = list(first_keys)
    order = []
    while pending:
        # One event per stage holding every pending key of it: S3 batches records too.
        stage = stage_for_key(pending[0])
        assert stage is not None
        batch = [k for k in pending if stage_for_key(k) == stage]
        pending = [k for k in pending if k not in batch]
        seen.update(batch)
        invoke(stage.name, s3_event_for(BUCKET, batch), monkeypatch, deployment)
        order.extend(batch)
        new = [
            k
            for s in STAGES
            for k in deployment.objects(s.input_prefix)
            if k not in seen and k not in pending
        ]
        pending.extend(new)
    return order


def body(deployment: Deployment, key: str) -> Any:
    return json.loads(deployment.storage.get(key))
