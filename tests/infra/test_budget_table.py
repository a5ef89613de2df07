"""Pacing ``shared`` (every deployed environment's): the stack synthesizes the fleet's
budget table, on demand and recoverable, named to every stage function and retry
consumer, which may call UpdateItem on it and nothing else. cdk-nag and cfn-lint run on
every deployed template, table included, in ``test_policy_checks`` and
``test_queue_engine``. Other pacings (``dev-adaptive``: ``dev`` with pacing
``adaptive``) build no table."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fanout_aws import config as lambda_env
from fanout_core.stages import STAGES
from stacks import cdk_json_context

from .conftest import Synth, render, synthesize

_CACHE: dict[str, Synth] = {}


@pytest.fixture(params=["dev", "dev-queue", "prod"])
def shared(request: pytest.FixtureRequest, synth_env: Any) -> Synth:
    """Each deployed environment, either engine: all of them pace ``shared``."""
    synth: Synth = synth_env(request.param)
    assert synth.settings.pacing == "shared"
    return synth


@pytest.fixture(scope="module")
def adaptive(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    if "dev-adaptive" not in _CACHE:
        environments = json.loads(json.dumps(cdk_json_context()["environments"]))
        environments["dev-adaptive"] = {
            **environments["dev"],
            "pacing": "adaptive",
            "token_secret_name": "fanout/dev-adaptive/hermes-token",
        }
        outdir = tmp_path_factory.mktemp("cdk-dev-adaptive")
        _CACHE["dev-adaptive"] = synthesize("dev-adaptive", outdir, context={"environments": environments})
    return _CACHE["dev-adaptive"]


def _table_id(synth: Synth) -> str:
    assert synth.stack.budget is not None
    return synth.logical_id(synth.stack.budget.table)


def test_the_budget_table_is_on_demand_and_recoverable(shared: Synth) -> None:
    (props,) = [r["Properties"] for r in shared.resources("AWS::DynamoDB::Table").values()]
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert props["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]


def test_every_stage_function_and_retry_consumer_is_told_the_table(shared: Synth) -> None:
    table = f"<{_table_id(shared)}>"
    functions = [shared.stack.stage_functions[s.name].function for s in STAGES]
    functions += [shared.stack.retry_consumers[s.name].function for s in STAGES]
    for fn in functions:
        props = shared.doc["Resources"][shared.logical_id(fn)]["Properties"]
        assert render(props["Environment"]["Variables"][lambda_env.ENV_BUDGET_TABLE]) == table


def _statements_on(synth: Synth, logical_id: str) -> list[dict[str, Any]]:
    found = []
    for policy in synth.resources("AWS::IAM::Policy").values():
        for st in policy["Properties"]["PolicyDocument"]["Statement"]:
            resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
            if any(logical_id in json.dumps(r) for r in resources):
                found.append({**st, "Roles": policy["Properties"]["Roles"]})
    return found


def test_the_roles_may_only_update_the_budget_item(shared: Synth) -> None:
    statements = _statements_on(shared, _table_id(shared))
    assert len(statements) == len(STAGES)  # one per stage role (its retry consumer shares it)
    for st in statements:
        assert st["Effect"] == "Allow"
        assert st["Action"] == "dynamodb:UpdateItem"


def test_adaptive_pacing_builds_no_table(adaptive: Synth) -> None:
    assert adaptive.stack.budget is None
    assert adaptive.resources("AWS::DynamoDB::Table") == {}
    for fn in adaptive.resources("AWS::Lambda::Function").values():
        assert lambda_env.ENV_BUDGET_TABLE not in fn["Properties"].get("Environment", {}).get("Variables", {})
