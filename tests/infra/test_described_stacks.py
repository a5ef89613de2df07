"""The stack made from an API description (issue 21).

Hermes' environments synthesize today's templates (kept normalized in ``snapshots/``,
made from main before the change): only the stage functions' handler, their
``FANOUT_STAGE``/``FANOUT_API`` variables and asset hashes may differ. The test
descriptions' environments (``DESCRIBED_ENVIRONMENTS``) get one function per stage of
their table, their prefixes in notifications and grants, their columns in Glue, and pass
cdk-nag and cfn-lint.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest
from cfnlint.api import ManualArgs, lint

from fanout_aws import config as lambda_env
from fanout_core.api_description import builtin, from_json, load
from fanout_core.errors import SettingsError
from fanout_core.output import glue_types
from fanout_core.stages import StageTable, table_for
from stacks import build_app
from stacks.bundling import asset_hash, bundled_api_path, write_api
from stacks.fanout_stack import stage_access

from .conftest import DESCRIBED_ENVIRONMENTS, ROOT, SKIP_BUNDLING, Synth, render
from .snapshot import SNAPSHOT_ENVIRONMENTS, normalize, snapshot_path
from .test_alarms import _metrics_of
from .test_policy_checks import CFN_LINT_IGNORED, LINT_REGIONS

DESCRIBED = tuple(DESCRIBED_ENVIRONMENTS)
S3_EVENTS = tuple(e for e, raw in DESCRIBED_ENVIRONMENTS.items() if "engine" not in raw)


def _table(synth: Synth) -> StageTable:
    return synth.stack.table


def _functions(synth: Synth) -> dict[str, dict[str, Any]]:
    return {k: r["Properties"] for k, r in synth.resources("AWS::Lambda::Function").items()}


def _variables(props: dict[str, Any]) -> dict[str, Any]:
    return dict(props.get("Environment", {}).get("Variables", {}))


# --- Hermes: today's templates ------------------------------------------------------


@pytest.mark.parametrize("env", SNAPSHOT_ENVIRONMENTS)
def test_hermes_template_is_todays_but_for_handlers_stage_and_api_variables_and_assets(
    env: str, synth_env: Any
) -> None:
    expected = json.loads(snapshot_path(env).read_text())
    actual = normalize(synth_env(env).doc)
    assert sorted(actual["Resources"]) == sorted(expected["Resources"])
    for logical_id, resource in expected["Resources"].items():
        assert actual["Resources"][logical_id] == resource, logical_id
    assert actual["Outputs"] == expected["Outputs"]


def test_hermes_functions_read_the_built_in_description_from_the_bundle(synth_env: Any) -> None:
    synth = synth_env("dev")
    assert _table(synth).api.name == "hermes"
    for props in _functions(synth).values():
        if props["Handler"].startswith("fanout_aws."):
            # The package's own copy: in the bundle and in lambdas/ alike.
            assert _variables(props)[lambda_env.ENV_API] == "fanout_core/apis/hermes.json"
            assert (ROOT / "lambdas" / _variables(props)[lambda_env.ENV_API]).is_file()


# --- described APIs -----------------------------------------------------------------


@pytest.mark.parametrize("env", DESCRIBED)
def test_the_stack_runs_the_description_the_environment_names(env: str, synth_env: Any) -> None:
    synth = synth_env(env)
    api = load(ROOT / DESCRIBED_ENVIRONMENTS[env]["api"])
    assert _table(synth).api == api
    assert synth.settings.api == DESCRIBED_ENVIRONMENTS[env]["api"]
    assert set(synth.settings.stages) == set(_table(synth).names)


@pytest.mark.parametrize("env", DESCRIBED)
def test_one_function_per_stage_named_from_the_description_with_its_settings(
    env: str, synth_env: Any
) -> None:
    synth = synth_env(env)
    table = _table(synth)
    stage_functions = {
        _variables(p)[lambda_env.ENV_STAGE]: (k, p)
        for k, p in _functions(synth).items()
        if lambda_env.ENV_STAGE in _variables(p) and "Retries" not in k
    }
    assert sorted(stage_functions) == sorted(table.names)
    for stage in table:
        logical_id, props = stage_functions[stage.name]
        assert logical_id.startswith(f"{stage.function_id}Function")
        assert props["Handler"] == stage.handler
        s = synth.settings.stage(stage.name)
        assert props["MemorySize"] == s.memory_mb
        assert props["Timeout"] == s.timeout_s
        assert props["ReservedConcurrentExecutions"] == s.reserved_concurrency


def test_a_stages_settings_in_cdk_json_are_keyed_by_the_descriptions_stage_name(synth_env: Any) -> None:
    synth = synth_env("shops")
    (props,) = [
        p
        for k, p in _functions(synth).items()
        if k.startswith("ShopsFunction")  # the one stage of a 2-level API
    ]
    assert (props["ReservedConcurrentExecutions"], props["MemorySize"]) == (3, 512)
    assert synth.settings.stage("shops").units_per_task == 7


@pytest.mark.parametrize("env", DESCRIBED)
def test_every_function_of_ours_reads_the_description_json_the_bundle_carries(
    env: str, synth_env: Any
) -> None:
    synth = synth_env(env)
    ours = [p for p in _functions(synth).values() if p["Handler"].startswith("fanout_aws.")]
    # Stage functions, their retry consumers (if any), the starter or dead-letter recorder.
    assert len(ours) > len(_table(synth))
    for props in ours:
        assert _variables(props)[lambda_env.ENV_API] == bundled_api_path(_table(synth).api)


@pytest.mark.parametrize("env", DESCRIBED)
def test_a_described_stages_function_environment_fits_lambdas_4_kb_limit(env: str, synth_env: Any) -> None:
    """Settings of every stage travel in each function's environment: four stages here."""
    synth = synth_env(env)
    for props in _functions(synth).values():
        # Tokens resolve to at most a queue URL or bucket name; 200 bytes covers either.
        size = sum(len(k) + (len(v) if isinstance(v, str) else 200) for k, v in _variables(props).items())
        assert size < 4096, size


def _as_deployed(value: Any) -> str:
    """A variable's value once CloudFormation resolved it (a name, a URL: any text)."""
    return value if isinstance(value, str) else f"resolved-{render(value)}"


@pytest.mark.parametrize("env", DESCRIBED)
def test_each_function_reads_its_stage_description_and_settings_from_the_environment_the_stack_sets(
    env: str, synth_env: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Lambda side (``fanout_aws.config``) reads the template's variables, FANOUT_API
    against a bundle root holding what ``write_api`` puts there, as the stack meant them."""
    synth = synth_env(env)
    table = _table(synth)
    write_api(tmp_path, table.api)
    monkeypatch.setattr(lambda_env, "BUNDLE_ROOT", tmp_path)
    monkeypatch.setattr(lambda_env, "_tables", {})
    stages_seen = set()
    for props in _functions(synth).values():
        variables = {k: _as_deployed(v) for k, v in _variables(props).items()}
        if lambda_env.ENV_API not in variables:
            continue  # CDK's own helpers
        assert lambda_env.table_from_environ(variables).api.to_json() == table.api.to_json()
        if lambda_env.ENV_STAGE in variables:
            config = lambda_env.LambdaConfig.from_environ(variables)
            assert config.stage.name == variables[lambda_env.ENV_STAGE]
            assert props["Handler"] == config.stage.handler
            assert config.settings == synth.settings
            stages_seen.add(config.stage.name)
        elif lambda_env.ENV_MAX_ATTEMPTS in variables:
            assert lambda_env.RecorderConfig.from_environ(variables).table.names == table.names
    assert stages_seen == set(table.names)


@pytest.mark.parametrize("env", S3_EVENTS)
def test_notification_filters_are_the_descriptions_stage_prefixes(env: str, synth_env: Any) -> None:
    synth = synth_env(env)
    (notif,) = synth.resources("Custom::S3BucketNotifications").values()
    found = set()
    for cfg in notif["Properties"]["NotificationConfiguration"]["LambdaFunctionConfigurations"]:
        rules = {r["Name"]: r["Value"] for r in cfg["Filter"]["Key"]["FilterRules"]}
        found.add((cfg["LambdaFunctionArn"]["Fn::GetAtt"][0], rules["prefix"], rules["suffix"]))
    expected = {
        (synth.logical_id(synth.stack.stage_functions[s.name].function), s.input_prefix, ".json")
        for s in _table(synth)
    }
    assert found == expected
    for (_, a, _), (_, b, _) in combinations(found, 2):
        assert not (a.startswith(b) or b.startswith(a))


def test_queue_engine_notifies_each_described_stages_queue(synth_env: Any) -> None:
    synth = synth_env("shops-queue")
    (notif,) = synth.resources("Custom::S3BucketNotifications").values()
    config = notif["Properties"]["NotificationConfiguration"]
    prefixes = {
        {r["Name"]: r["Value"] for r in cfg["Filter"]["Key"]["FilterRules"]}["prefix"]
        for cfg in config["QueueConfigurations"]
    }
    assert set(config) == {"QueueConfigurations"}
    assert prefixes == {s.input_prefix for s in _table(synth)} == {"shops/"}


def test_stepfunctions_engine_maps_the_described_stages_in_order(synth_env: Any) -> None:
    synth = synth_env("builds-sfn")
    table = _table(synth)
    ((machine),) = synth.resources("AWS::StepFunctions::StateMachine").values()
    definition = json.loads(machine["Properties"]["DefinitionString"])
    maps = [k for k, s in definition["States"].items() if s["Type"] == "Map"]
    assert sorted(maps) == sorted(s.function_id for s in table)
    for stage, following in zip(table, [*table.stages[1:], None], strict=True):
        state = definition["States"][stage.function_id]
        assert state["ItemReader"]["Parameters"]["Prefix.$"] == f"$.run_prefixes.{stage.name}"
        entry = None if following is None else following.function_id
        assert state.get("Next") == (f"{entry}Count" if following and following.writes_parquet else entry)
    (notif,) = synth.resources("Custom::S3BucketNotifications").values()
    (cfg,) = notif["Properties"]["NotificationConfiguration"]["LambdaFunctionConfigurations"]
    rules = {r["Name"]: r["Value"] for r in cfg["Filter"]["Key"]["FilterRules"]}
    assert rules["prefix"] == table.first.input_prefix == "orgs/"


def test_stepfunctions_engine_runs_a_task_per_child_above_the_described_leaf(synth_env: Any) -> None:
    synth = synth_env("builds-sfn")
    (machine,) = synth.resources("AWS::StepFunctions::StateMachine").values()
    states = json.loads(machine["Properties"]["DefinitionString"])["States"]
    batches = {s.name: states[s.function_id]["ItemBatcher"] for s in _table(synth)}
    leaf = _table(synth).leaf
    assert [s.name for s in _table(synth) if s.writes_parquet] == [leaf.name] and len(batches) > 1
    assert batches == {
        name: {"MaxItemsPerBatchPath": "$.batch.n"} if name == leaf.name else {"MaxItemsPerBatch": 1}
        for name in batches
    }
    cap = synth.settings.stage(leaf.name).reserved_concurrency
    assert f", {cap}))" in states[f"{leaf.function_id}OneWave"]["Parameters"]["n.$"]
    assert states[f"{leaf.function_id}Count"]["Parameters"]["Prefix.$"] == f"$.run_prefixes.{leaf.name}"


@pytest.mark.parametrize("env", DESCRIBED)
def test_s3_grants_are_the_described_stages_prefixes(env: str, synth_env: Any) -> None:
    synth = synth_env(env)
    table = _table(synth)
    bucket = f"<{synth.logical_id(synth.stack.bucket)}.Arn>"
    for stage in table:
        access = stage_access(stage, table)
        role = synth.stack.stage_functions[stage.name].function.role
        assert role is not None
        role_ref = {"Ref": synth.logical_id(role)}
        statements = [
            s
            for p in synth.resources("AWS::IAM::Policy").values()
            if role_ref in p["Properties"]["Roles"]
            for s in p["Properties"]["PolicyDocument"]["Statement"]
        ]
        by_sid = {s.get("Sid"): s for s in statements}
        assert set(render(by_sid["ReadOwnPrefixes"]["Resource"])) == {f"{bucket}/{p}" for p in access.read}
        assert set(render(by_sid["WriteOwnPrefixes"]["Resource"])) == {f"{bucket}/{p}" for p in access.write}
        assert "Condition" not in by_sid["ListPipelineBucket"]  # a HEAD of a missing key answers 404
        assert f"{stage.input_prefix}*" in access.read


@pytest.mark.parametrize("env", DESCRIBED)
def test_alarms_watch_each_described_stage(env: str, synth_env: Any) -> None:
    synth = synth_env(env)
    dimensions = {
        d["Value"]
        for a in synth.resources("AWS::CloudWatch::Alarm").values()
        for m in _metrics_of(a["Properties"])
        if m["MetricName"] == "Failures" and m["Namespace"] == "Fanout"
        for d in m["Dimensions"]
        if d["Name"] == "Stage"
    }
    assert dimensions == set(_table(synth).names)


@pytest.mark.parametrize("env", DESCRIBED)
def test_glue_table_columns_are_the_descriptions_output_columns(env: str, synth_env: Any) -> None:
    synth = synth_env(env)
    api = _table(synth).api
    (table,) = synth.resources("AWS::Glue::Table").values()
    columns = table["Properties"]["TableInput"]["StorageDescriptor"]["Columns"]
    assert [c["Name"] for c in columns] == list(api.column_names())
    assert {c["Name"]: c["Type"] for c in columns} == glue_types(api)


def test_glue_types_follow_the_column_types() -> None:
    api = load(ROOT / "tests/fixtures/apis/two_level.yaml")
    types = glue_types(api)
    assert (types["shop_id"], types["region"]) == ("string", "string")  # ids and carried fields
    assert (types["sale_id"], types["amount"], types["paid"]) == ("bigint", "double", "boolean")
    assert (types["sold_at"], types["day"], types["fetched_at"]) == ("timestamp",) * 3
    assert (types["meta"], types["extra"]) == ("string", "string")  # JSON as text


@pytest.mark.parametrize("env", DESCRIBED)
def test_cdk_nag_clean_for_a_described_api(env: str, synth_env: Any) -> None:
    (plugin,) = [p for p in synth_env(env).nag_report["pluginReports"] if p["pluginName"] == "AwsSolutions"]
    assert plugin["conclusion"] == "success"
    assert plugin.get("violations", []) == []


@pytest.mark.parametrize("env", DESCRIBED)
def test_cfn_lint_passes_for_a_described_api(env: str, synth_env: Any) -> None:
    matches = lint(json.dumps(synth_env(env).doc), config=ManualArgs(regions=LINT_REGIONS))
    problems = [m for m in matches if m.rule.id not in CFN_LINT_IGNORED]
    assert problems == [], "\n".join(str(m) for m in problems)


# --- settings and the bundle ----------------------------------------------------------


def test_an_environment_naming_a_missing_description_stops_synthesis_naming_it(
    environments_context: dict[str, Any],
) -> None:
    environments_context["dev"]["api"] = "apis/nowhere.yaml"
    with pytest.raises(SettingsError, match=r"environments\.dev\.api: .*nowhere\.yaml: cannot read"):
        build_app(context={"env": "dev", "environments": environments_context, **SKIP_BUNDLING})


def test_stage_settings_must_name_the_descriptions_stages(environments_context: dict[str, Any]) -> None:
    environments_context["dev"]["api"] = "tests/fixtures/apis/two_level.yaml"  # dev's stages are Hermes'
    message = r"environments\.dev\.stages: unknown stage\(s\) .*stages are shops"
    with pytest.raises(SettingsError, match=message):
        build_app(context={"env": "dev", "environments": environments_context, **SKIP_BUNDLING})


def test_a_bad_description_is_one_line_and_exit_2_from_app_py(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nlevels: []\n")
    context = {"env": "x", "environments": {"x": {"api": str(bad)}}, **SKIP_BUNDLING}
    done = subprocess.run(
        [sys.executable, str(ROOT / "app.py")],
        cwd=ROOT,
        env={**os.environ, "CDK_CONTEXT_JSON": json.dumps(context)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("fanout: bad settings: environments.x.api: ") and "bad.yaml" in line


def test_the_bundle_carries_the_description_as_json_its_functions_read(tmp_path: Path) -> None:
    api = load(ROOT / "tests/fixtures/apis/five_level.yaml")
    path = write_api(tmp_path, api)
    assert path == tmp_path / bundled_api_path(api) == tmp_path / "api" / "builds.json"
    assert path.read_bytes() == api.to_json()
    assert from_json(path.read_bytes()).to_json() == api.to_json()  # the same description


def test_the_bundles_asset_hash_tracks_the_description() -> None:
    two = load(ROOT / "tests/fixtures/apis/two_level.yaml")
    five = load(ROOT / "tests/fixtures/apis/five_level.yaml")
    hashes = {asset_hash(arch="aarch64", python_version="3.14", api=a) for a in (two, five, None)}
    assert len(hashes) == 3
    assert asset_hash(arch="aarch64", python_version="3.14", api=two) == asset_hash(
        arch="aarch64", python_version="3.14", api=two
    )


def test_the_built_in_description_is_read_from_its_own_package_file_never_rewritten(tmp_path: Path) -> None:
    api = builtin()
    assert bundled_api_path(api) == "fanout_core/apis/hermes.json"
    assert write_api(tmp_path, api) == tmp_path / "fanout_core/apis/hermes.json"
    assert not list(tmp_path.rglob("*"))  # the bundle's copy of fanout_core holds it


def test_the_one_stage_of_a_2_level_api_may_keep_the_plan_of_its_seed_split() -> None:
    """Seed and leaf at once: it splits the manifest through a plan (fan_out.split_seed)."""
    table = table_for(load(ROOT / "tests/fixtures/apis/two_level.yaml"))
    (stage,) = table
    access = stage_access(stage, table)
    plans = f"plans/{stage.input_prefix}*"
    assert plans in access.read and plans in access.write
    assert f"{table.output_prefix}*" in access.read  # and the leaf's own output check
