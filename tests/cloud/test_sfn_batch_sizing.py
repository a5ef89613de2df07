"""Engine ``stepfunctions``: the states the synthesized ``dev-sfn`` definition runs before
its leaf Map (count the leaf's tasks, choose, size) run for real on moto's interpreter
(its ``aws-sdk:s3:listObjectsV2`` task, ``Choice`` and intrinsic functions), and choose
the batch ``sfn_starter.stage_batch_size`` gives: the size the fleet bench and the cost
model use. moto does not run ``ItemBatcher`` itself, so the Map is replaced by a
``Succeed`` that shows what it would have been handed."""

from __future__ import annotations

import json
import time
from typing import Any

import boto3
import pytest

from fanout_aws.sfn_starter import COUNTED_TASKS, stage_batch_size
from fanout_core.settings import load_environment
from fanout_core.stages import STAGES
from stacks.constructs.sfn_engine import BATCH

from .sfn_emulation import machine_of

ENV = "dev-sfn"
BUCKET = "fanout-sizing"
ROLE = "arn:aws:iam::123456789012:role/sfn"


def _sizing_machine(doc: dict[str, Any]) -> dict[str, Any]:
    """The template's states from the leaf's count to its Map, the Map a ``Succeed``."""
    definition = json.loads(machine_of(doc)[1]["DefinitionString"].replace("${Bucket}", BUCKET))
    leaf = STAGES.leaf.function_id
    states = {name: s for name, s in definition["States"].items() if name.startswith(leaf) and name != leaf}
    states[leaf] = {"Type": "Succeed"}
    return {"StartAt": f"{leaf}Count", "States": states}


def _batch_for(sfn: Any, arn: str, prefix: str, name: str) -> int:
    execution = sfn.start_execution(
        stateMachineArn=arn, name=name, input=json.dumps({"run_prefixes": {STAGES.leaf.name: prefix}})
    )["executionArn"]
    deadline = time.monotonic() + 60
    while (described := sfn.describe_execution(executionArn=execution))["status"] == "RUNNING":
        assert time.monotonic() < deadline, "the sizing states did not finish"
        time.sleep(0.05)
    assert described["status"] == "SUCCEEDED", described
    return int(json.loads(described["output"])[BATCH]["n"])


@pytest.fixture
def sizing(aws: None, template: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any, str]:
    from moto.core.config import default_user_config

    monkeypatch.setitem(default_user_config["stepfunctions"], "execute_state_machine", True)
    doc, _ = template(ENV)
    s3 = boto3.client("s3", region_name="us-east-1")
    sfn = boto3.client("stepfunctions", region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    arn = sfn.create_state_machine(name="sizing", definition=json.dumps(_sizing_machine(doc)), roleArn=ROLE)[
        "stateMachineArn"
    ]
    return s3, sfn, arn


def test_the_leafs_batch_is_the_one_its_count_and_cap_give(sizing: tuple[Any, Any, str]) -> None:
    s3, sfn, arn = sizing
    settings = load_environment(ENV, "cdk.json")
    cap, most = settings.stage(STAGES.leaf.name).reserved_concurrency, settings.items_per_batch
    edges = {cap, cap + 1, 3 * cap - 1, cap * (most - 1), cap * (most - 1) + 1}
    counts = sorted({0, 1, *edges, COUNTED_TASKS + 5})
    prefix, written, chosen = STAGES.leaf.run_prefix("r"), 0, {}
    for n in counts:
        for i in range(written, n):  # one prefix, filled up count by count
            s3.put_object(Bucket=BUCKET, Key=f"{prefix}{i:05d}.json", Body=b"{}")
        written = n
        chosen[n] = _batch_for(sfn, arn, prefix, f"n{n}")
    assert chosen == {n: stage_batch_size(settings, STAGES.leaf, n) for n in counts}
    assert chosen[COUNTED_TASKS + 5] == stage_batch_size(settings, STAGES.leaf, COUNTED_TASKS)
    assert len(set(chosen.values())) >= 4  # one per child, one wave's worth, the most, ...


def test_a_count_that_fails_gives_the_most_per_child(sizing: tuple[Any, Any, str]) -> None:
    _, sfn, _ = sizing
    settings = load_environment(ENV, "cdk.json")
    machine = json.loads(sfn.describe_state_machine(stateMachineArn=sizing[2])["definition"])
    broken = json.dumps(machine).replace(BUCKET, "no-such-bucket")
    arn = sfn.create_state_machine(name="sizing-broken", definition=broken, roleArn=ROLE)["stateMachineArn"]
    assert _batch_for(sfn, arn, STAGES.leaf.run_prefix("r"), "broken") == settings.items_per_batch
