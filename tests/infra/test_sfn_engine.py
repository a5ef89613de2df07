"""Engine ``stepfunctions``: the synthesized stack of a dev-shaped (``dev-sfn``) and a
prod-shaped (``prod-sfn``) environment, asserted against the stage table and the
settings: the run state machine's definition, its trigger, its grants, its alarms."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cfnlint.api import ManualArgs, lint

from fanout_aws.events import SFN_MARKER
from fanout_aws.sfn_starter import COUNTED_TASKS
from fanout_core.errors import SettingsError
from fanout_core.settings import ENGINES, environment_from_json, environment_to_json, parse_environment
from fanout_core.stages import STAGES, Stage
from stacks import build_app, cdk_json_context
from stacks.constructs.sfn_engine import COUNT_OBJECTS, LIST_OBJECTS, STARTER_HANDLER, function_var

from .conftest import SKIP_BUNDLING, Synth, render, synthesize
from .test_policy_checks import CFN_LINT_IGNORED, LINT_REGIONS, _plugin

SFN_ENVIRONMENTS = ("dev-sfn", "prod-sfn")

_CACHE: dict[str, Synth] = {}


@pytest.fixture(scope="session", params=SFN_ENVIRONMENTS)
def ssynth(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Synth:
    env = request.param
    if env not in _CACHE:
        _CACHE[env] = synthesize(env, tmp_path_factory.mktemp(f"cdk-{env}"))
    return _CACHE[env]


def _machine(synth: Synth) -> tuple[str, dict[str, Any]]:
    ((logical_id, machine),) = synth.resources("AWS::StepFunctions::StateMachine").items()
    return logical_id, machine["Properties"]


def _definition(synth: Synth) -> dict[str, Any]:
    definition = _machine(synth)[1]["DefinitionString"]
    assert isinstance(definition, str)  # the ARNs are substitutions, not joins
    return dict(json.loads(definition))


def _function_id(synth: Synth, stage: Stage) -> str:
    return synth.logical_id(synth.stack.stage_functions[stage.name].function)


def _statements(synth: Synth, role_id: str) -> list[dict[str, Any]]:
    found = []
    for policy in synth.resources("AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"]["Roles"]:
            found.extend(policy["Properties"]["PolicyDocument"]["Statement"])
    return found


# --- settings ----------------------------------------------------------------------


def test_stepfunctions_is_an_engine_with_its_settings_round_tripping() -> None:
    assert "stepfunctions" in ENGINES
    env = parse_environment(
        "x", {"engine": "stepfunctions", "items_per_batch": 7, "tolerated_failure_percentage": 2.5}
    )
    again = environment_from_json("x", environment_to_json(env))
    assert again == env
    assert (again.engine, again.items_per_batch, again.tolerated_failure_percentage) == (
        "stepfunctions",
        7,
        2.5,
    )


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"items_per_batch": 0}, r"environments\.x\.items_per_batch must be between 1 and 1000"),
        ({"items_per_batch": 2.5}, r"environments\.x\.items_per_batch must be an integer"),
        (
            {"tolerated_failure_percentage": 101},
            r"environments\.x\.tolerated_failure_percentage must be between",
        ),
        (
            {"tolerated_failure_percentage": "5"},
            r"environments\.x\.tolerated_failure_percentage must be a number",
        ),
    ],
)
def test_a_bad_batch_or_tolerance_is_refused_naming_the_setting(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        parse_environment("x", {"engine": "stepfunctions", **raw})


def test_cdk_json_has_stepfunctions_environments_shaped_like_dev_and_prod() -> None:
    environments = cdk_json_context()["environments"]
    for base in ("dev", "prod"):
        plain, sfn = dict(environments[base]), dict(environments[f"{base}-sfn"])
        for raw in (plain, sfn):
            raw.pop("token_secret_name")
        assert sfn.pop("engine") == "stepfunctions"
        # at most this many leaf tasks a child: 32 and 25 fit the leaf's timeout (600 s,
        # 900 s) at an instance's share of R with Hermes' 50 calls a task (~270 s)
        assert sfn.pop("items_per_batch") == {"dev": 32, "prod": 25}[base]
        assert sfn.pop("tolerated_failure_percentage") == {"dev": 5.0, "prod": 1.0}[base]
        assert sfn == plain


# --- the definition ------------------------------------------------------------------


def test_each_stage_is_a_distributed_map_listing_the_runs_prefix_in_table_order(ssynth: Synth) -> None:
    definition = _definition(ssynth)
    states = definition["States"]
    seed = states[definition["StartAt"]]
    assert seed["Type"] == "Task" and seed["Next"] == STAGES.first.function_id
    for index, stage in enumerate(STAGES):
        state = states[stage.function_id]
        assert state["Type"] == "Map"
        assert state["ItemProcessor"]["ProcessorConfig"]["Mode"] == "DISTRIBUTED"
        assert state["ItemReader"] == {
            "Resource": LIST_OBJECTS,
            "Parameters": {"Bucket": "${Bucket}", "Prefix.$": f"$.run_prefixes.{stage.name}"},
        }
        following = STAGES[index + 1] if index + 1 < len(STAGES) else None
        entry = None if following is None else following.function_id
        if following is STAGES.leaf:  # the leaf's batch is sized first
            assert states[f"{entry}Count"]["Next"] == f"{entry}BatchSize"
            entry = f"{entry}Count"
        assert state.get("Next") == entry and state.get("End", False) == (following is None)
        assert state["ResultPath"] is None
    assert len([s for s in states.values() if s["Type"] == "Map"]) == len(STAGES)


def test_batches_concurrency_and_tolerance_come_from_the_settings(ssynth: Synth) -> None:
    states = _definition(ssynth)["States"]
    settings = ssynth.settings
    for stage in STAGES:
        state = states[stage.function_id]
        batcher = {"MaxItemsPerBatchPath": "$.batch.n"} if stage.writes_parquet else {"MaxItemsPerBatch": 1}
        assert state["ItemBatcher"] == batcher
        assert state["MaxConcurrency"] == settings.stage(stage.name).reserved_concurrency
        assert state["ToleratedFailurePercentage"] == settings.tolerated_failure_percentage
        assert isinstance(state["ToleratedFailurePercentage"], float)


def test_the_leafs_batch_is_sized_from_one_count_of_its_tasks_its_cap_and_the_settings(ssynth: Synth) -> None:
    states = _definition(ssynth)["States"]
    leaf, settings = STAGES.leaf.function_id, ssynth.settings
    cap = settings.stage(STAGES.leaf.name).reserved_concurrency
    count = states[f"{leaf}Count"]
    assert count["Resource"] == COUNT_OBJECTS
    assert count["Parameters"] == {
        "Bucket": "${Bucket}",
        "Prefix.$": f"$.run_prefixes.{STAGES.leaf.name}",
        "MaxKeys": COUNTED_TASKS,
    }
    assert count["Catch"][0]["Next"] == f"{leaf}MostPerChild"  # a failed count: the most
    choices = {c["Next"]: c for c in states[f"{leaf}BatchSize"]["Choices"]}
    assert choices[f"{leaf}OnePerChild"]["NumericLessThanEquals"] == cap
    assert choices[f"{leaf}MostPerChild"]["NumericGreaterThan"] == cap * (settings.items_per_batch - 1)
    assert states[f"{leaf}MostPerChild"]["Result"] == {"n": settings.items_per_batch}
    assert f", {cap}))" in states[f"{leaf}OneWave"]["Parameters"]["n.$"]
    assert all(states[f"{leaf}{n}"]["Next"] == leaf for n in ("OnePerChild", "MostPerChild", "OneWave"))


def test_each_child_invokes_its_stages_function_with_retries_from_the_settings(ssynth: Synth) -> None:
    settings = ssynth.settings
    states = _definition(ssynth)["States"]
    for stage in STAGES:
        child = states[stage.function_id]["ItemProcessor"]
        run = child["States"][child["StartAt"]]
        assert run["Resource"] == "arn:aws:states:::lambda:invoke"
        assert run["Parameters"]["FunctionName"] == f"${{{function_var(stage)}}}"
        payload = run["Parameters"]["Payload"][SFN_MARKER]
        assert payload["Items.$"] == "$.Items" and payload["RetryCount.$"] == "$$.State.RetryCount"
        (retry,) = run["Retry"]
        assert retry["MaxAttempts"] == settings.max_attempts - 1  # max_attempts tries in all
        assert retry["IntervalSeconds"] == round(settings.retry_base_delay_s)
        assert retry["MaxDelaySeconds"] == round(settings.retry_max_delay_s)
        assert retry["BackoffRate"] > 1 and retry["JitterStrategy"] == "FULL"
        assert run["TimeoutSeconds"] > settings.stage(stage.name).timeout_s
        assert run["OutputPath"] is None  # a child's output is {}: the Map's stays small


def test_a_batch_that_crashes_on_every_try_is_recorded_then_fails_its_child(ssynth: Synth) -> None:
    states = _definition(ssynth)["States"]
    for stage in STAGES:
        child = states[stage.function_id]["ItemProcessor"]["States"]
        (catch,) = child["Run"]["Catch"]
        record = child[catch["Next"]]
        assert record["Parameters"]["FunctionName"] == f"${{{function_var(stage)}}}"
        assert record["Parameters"]["Payload"][SFN_MARKER]["Crash.$"] == catch["ResultPath"]
        assert record["Parameters"]["Payload"][SFN_MARKER]["Attempts"] == ssynth.settings.max_attempts
        assert child[record["Next"]]["Type"] == "Fail"


def test_substitutions_name_the_bucket_and_each_stage_function(ssynth: Synth) -> None:
    substitutions = _machine(ssynth)[1]["DefinitionSubstitutions"]
    expected = {"Bucket": {"Ref": ssynth.logical_id(ssynth.stack.bucket)}}
    expected.update({function_var(s): {"Fn::GetAtt": [_function_id(ssynth, s), "Arn"]} for s in STAGES})
    assert substitutions == expected


def test_the_machine_is_standard_named_after_the_environment_and_bounded(ssynth: Synth) -> None:
    props = _machine(ssynth)[1]
    assert props["StateMachineType"] == "STANDARD"
    assert props["StateMachineName"] == f"Fanout-{ssynth.env}-Run"
    assert 0 < _definition(ssynth)["TimeoutSeconds"] <= 7 * 24 * 3600


# --- the trigger and what is absent ---------------------------------------------------


def test_only_the_starter_is_notified_of_the_first_stages_objects(ssynth: Synth) -> None:
    (notif,) = ssynth.resources("Custom::S3BucketNotifications").values()
    config = notif["Properties"]["NotificationConfiguration"]
    assert set(config) == {"LambdaFunctionConfigurations"}
    (cfg,) = config["LambdaFunctionConfigurations"]
    rules = {r["Name"]: r["Value"] for r in cfg["Filter"]["Key"]["FilterRules"]}
    assert rules == {"prefix": STAGES.first.input_prefix, "suffix": ".json"}
    starter_id = cfg["LambdaFunctionArn"]["Fn::GetAtt"][0]
    starter = ssynth.doc["Resources"][starter_id]["Properties"]
    assert starter["Handler"] == STARTER_HANDLER
    machine_id, _ = _machine(ssynth)
    (start,) = [
        s for s in _statements(ssynth, starter["Role"]["Fn::GetAtt"][0]) if s.get("Sid") == "StartRuns"
    ]
    assert start["Action"] == "states:StartExecution"
    assert render(start["Resource"]).endswith(f":stateMachine:Fanout-{ssynth.env}-Run")
    assert machine_id


def test_no_retry_queues_async_config_or_notifications_to_stage_functions(ssynth: Synth) -> None:
    assert ssynth.resources("AWS::SQS::Queue") == {}
    assert ssynth.resources("AWS::Lambda::EventSourceMapping") == {}
    functions = {_function_id(ssynth, s) for s in STAGES}
    for config in ssynth.resources("AWS::Lambda::EventInvokeConfig").values():
        assert config["Properties"]["FunctionName"]["Ref"] not in functions
    for permission in ssynth.resources("AWS::Lambda::Permission").values():
        assert permission["Properties"]["FunctionName"]["Fn::GetAtt"][0] not in functions
    assert ssynth.stack.retry_consumers == {} and ssynth.stack.dead_letters is None


# --- least privilege -------------------------------------------------------------------


def test_the_machines_role_may_do_only_what_a_run_needs(ssynth: Synth) -> None:
    _, props = _machine(ssynth)
    role_id = props["RoleArn"]["Fn::GetAtt"][0]
    by_sid = {s["Sid"]: s for s in _statements(ssynth, role_id) if "Sid" in s}
    name = f"Fanout-{ssynth.env}-Run"
    assert by_sid["InvokeStageFunctions"]["Action"] == "lambda:InvokeFunction"
    assert by_sid["InvokeStageFunctions"]["Resource"] == [
        {"Fn::GetAtt": [_function_id(ssynth, s), "Arn"]} for s in STAGES
    ]
    assert by_sid["StartOwnChildren"]["Action"] == "states:StartExecution"
    assert render(by_sid["StartOwnChildren"]["Resource"]).endswith(f":stateMachine:{name}")
    assert render(by_sid["ManageOwnChildren"]["Resource"]).endswith(f":execution:{name}/*")
    listing = by_sid["ListStagePrefixes"]
    assert listing["Action"] == "s3:ListBucket"
    assert listing["Resource"] == {"Fn::GetAtt": [ssynth.logical_id(ssynth.stack.bucket), "Arn"]}
    assert listing["Condition"] == {"StringLike": {"s3:prefix": [f"{s.input_prefix}*" for s in STAGES]}}
    # Besides those: only the log delivery CDK adds for the machine's logging.
    others = [s for s in _statements(ssynth, role_id) if "Sid" not in s]
    assert all(a.startswith("logs:") for s in others for a in s["Action"])
    actions = {
        a
        for s in _statements(ssynth, role_id)
        for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }
    assert not {
        a for a in actions if a.startswith(("s3:Get", "s3:Put", "lambda:")) and a != "lambda:InvokeFunction"
    }


# --- operations --------------------------------------------------------------------------


def test_alarms_on_a_failed_run_children_past_tolerance_and_the_starter(ssynth: Synth) -> None:
    alarms = {a.node.id: a for a in ssynth.stack.run_alarms}
    assert set(alarms) == {"RunFailed", "ChildFailuresAboveTolerance", "StarterErrors"}
    topic = ssynth.logical_id(ssynth.stack.monitoring.topic)
    for alarm in alarms.values():
        props = ssynth.doc["Resources"][ssynth.logical_id(alarm)]["Properties"]
        assert props["AlarmActions"] == [{"Ref": topic}]
    share = ssynth.doc["Resources"][ssynth.logical_id(alarms["ChildFailuresAboveTolerance"])]["Properties"]
    assert share["Threshold"] == ssynth.settings.tolerated_failure_percentage


def test_dashboard_has_a_graph_per_map_run(ssynth: Synth) -> None:
    (dashboard,) = ssynth.resources("AWS::CloudWatch::Dashboard").values()
    body = json.dumps(dashboard["Properties"]["DashboardBody"])
    for stage in STAGES:
        assert f"Map Run {stage.function_id}: children" in body


def test_cdk_nag_clean_in_stepfunctions_mode(ssynth: Synth) -> None:
    plugin = _plugin(ssynth.nag_report)
    assert plugin["conclusion"] == "success"
    assert plugin.get("violations", []) == []
    used = {(v["acknowledgedAt"], v["acknowledgedId"]) for v in plugin.get("suppressedViolations", [])}
    for ack in ssynth.acknowledgements:
        assert (ack.path, ack.rule) in used, ack


def test_cfn_lint_passes_in_stepfunctions_mode(ssynth: Synth) -> None:
    matches = lint(json.dumps(ssynth.doc), config=ManualArgs(regions=LINT_REGIONS))
    problems = [m for m in matches if m.rule.id not in CFN_LINT_IGNORED]
    assert problems == [], "\n".join(str(m) for m in problems)


def test_synth_of_the_stepfunctions_environment_works_through_app_py(tmp_path: Path) -> None:
    """``cdk synth -c env=dev-sfn`` is ``python app.py`` with that context."""
    _app, stack = build_app(context={"env": "dev-sfn", **SKIP_BUNDLING}, outdir=str(tmp_path), nag=False)
    assert stack.settings.engine == "stepfunctions"
    assert stack.sfn_engine is not None
