"""One entrypoint for every stage of any described API: ``FANOUT_STAGE`` names the stage,
``FANOUT_API`` the description (its JSON in the bundle); the dead-letter recorder and the
Step Functions starter read the same table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fanout_aws import config as env_names
from fanout_aws.config import LambdaConfig, RecorderConfig, table_from_environ
from fanout_aws.sfn_starter import RUN_PREFIXES, start_run
from fanout_aws.stage_handler import StageRuntime
from fanout_core.api_description import load
from fanout_core.errors import SettingsError
from fanout_core.settings import environment_to_json, parse_environment

APIS = Path(__file__).parents[1] / "fixtures" / "apis"


def bundled(tmp_path: Path, name: str, auth: dict[str, Any] | None = None) -> str:
    """The description as the bundle carries it: canonical JSON."""
    doc = json.loads(load(APIS / name).to_json())
    if auth is not None:
        doc["auth"] = auth
    path = tmp_path / name.replace(".yaml", ".json")
    path.write_text(json.dumps(doc))
    return str(path)


def environ(api: str, stage: str, stages: tuple[str, ...], **extra: str) -> dict[str, str]:
    settings = parse_environment("test", {"hermes_url": "http://127.0.0.1:9"}, stages)
    return {
        env_names.ENV_NAME: "test",
        env_names.ENV_SETTINGS: environment_to_json(settings),
        env_names.ENV_BUCKET: "bucket",
        env_names.ENV_STAGE: stage,
        env_names.ENV_API: api,
        **extra,
    }


def test_fanout_api_names_the_description_whose_stage_the_function_runs(tmp_path: Path) -> None:
    env = environ(bundled(tmp_path, "five_level.yaml"), "projects", ("orgs", "teams", "projects", "builds"))
    config = LambdaConfig.from_environ({**env, env_names.ENV_TOKEN: "user:secret"})
    assert config.table.names == ("orgs", "teams", "projects", "builds")
    assert config.stage is config.table.named("projects")
    assert set(config.settings.stages) == set(config.table.names)
    assert StageRuntime.secret(config) == "user:secret"  # basic auth: the secret as stored


def test_a_stage_the_description_does_not_have_is_refused_naming_its_stages(tmp_path: Path) -> None:
    env = environ(bundled(tmp_path, "two_level.yaml"), "warriors", ("shops",), HERMES_TOKEN="k")
    with pytest.raises(SettingsError, match="FANOUT_STAGE: unknown stage 'warriors'; stages are shops"):
        LambdaConfig.from_environ(env)


def test_a_description_that_cannot_be_read_is_a_settings_error_naming_the_variable(tmp_path: Path) -> None:
    env = environ(str(tmp_path / "missing.json"), "shops", ("shops",), HERMES_TOKEN="k")
    with pytest.raises(SettingsError, match=r"^FANOUT_API: .*cannot read the API description"):
        LambdaConfig.from_environ(env)


def test_an_api_without_auth_needs_no_secret_and_reads_none(tmp_path: Path) -> None:
    api = bundled(tmp_path, "two_level.yaml", auth={"type": "none"})
    config = LambdaConfig.from_environ(environ(api, "shops", ("shops",)))
    assert not config.needs_secret
    assert StageRuntime.secret(config) == ""


def test_an_api_with_auth_needs_its_secret(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="set HERMES_TOKEN_SECRET"):
        LambdaConfig.from_environ(environ(bundled(tmp_path, "two_level.yaml"), "shops", ("shops",)))


def test_without_fanout_api_the_function_runs_the_builtin_table() -> None:
    from fanout_core.stages import STAGES

    assert table_from_environ({}) is STAGES


def test_the_dead_letter_recorder_reads_the_description_s_table(tmp_path: Path) -> None:
    env = {
        env_names.ENV_NAME: "test",
        env_names.ENV_BUCKET: "bucket",
        env_names.ENV_MAX_ATTEMPTS: "3",
        env_names.ENV_API: bundled(tmp_path, "two_level.yaml"),
    }
    assert RecorderConfig.from_environ(env).table.names == ("shops",)


class _StepFunctions:
    class exceptions:  # boto3 names it so
        class ExecutionAlreadyExists(Exception):
            pass

    def __init__(self) -> None:
        self.inputs: list[dict[str, Any]] = []

    def start_execution(self, **kwargs: Any) -> dict[str, str]:
        self.inputs.append(json.loads(kwargs["input"]))
        return {"executionArn": "arn:x"}


def test_the_starter_starts_a_run_with_the_description_s_stage_prefixes(tmp_path: Path) -> None:
    table = table_from_environ({env_names.ENV_API: bundled(tmp_path, "two_level.yaml")})
    client = _StepFunctions()
    start_run(client, "arn:machine", "r1", table=table)
    assert client.inputs[0][RUN_PREFIXES] == {"shops": "shops/run=r1/"}
