"""Environment settings: every bad value is refused with a message naming the setting."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fanout_core.errors import SettingsError
from fanout_core.settings import (
    EnvironmentSettings,
    environment_from_json,
    environment_to_json,
    environment_to_raw,
    load_environment,
    parse_environment,
    parse_environments,
    select_environment,
)
from fanout_core.stages import STAGE_NAMES

CDK_JSON = Path(__file__).resolve().parents[2] / "cdk.json"


def stages(**per_stage: dict[str, Any]) -> dict[str, Any]:
    return {"stages": per_stage}


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        pytest.param(
            stages(data_groups={"reserved_concurrency": 901}),
            "reserved_concurrency + retry_concurrency add up to",
            id="reserved-sum",
        ),
        pytest.param(
            {"account_concurrency_limit": 200, **stages(troops={"reserved_concurrency": 93})},
            "reserved_concurrency + retry_concurrency add up to 107",
            id="reserved-sum-small-account",
        ),
        pytest.param(
            {
                "account_concurrency_limit": 200,
                **stages(troops={"reserved_concurrency": 89, "retry_concurrency": 7}),
            },
            "reserved_concurrency + retry_concurrency add up to 108",
            id="retry-share-counts-towards-the-sum",
        ),
        pytest.param(
            stages(troops={"retry_concurrency": 1}),
            "stages.troops.retry_concurrency must be between 2 and 1000",
            id="retry-concurrency-below-the-mapping-floor",
        ),
        pytest.param(stages(troops={"timeout_s": 901}), "stages.troops.timeout_s", id="timeout-901"),
        pytest.param(stages(troops={"timeout_s": 0}), "stages.troops.timeout_s", id="timeout-0"),
        pytest.param(stages(warriors={"retry_attempts": 3}), "stages.warriors.retry_attempts", id="retry-3"),
        pytest.param(
            stages(warriors={"max_event_age_s": 59}), "stages.warriors.max_event_age_s", id="age-59"
        ),
        pytest.param(stages(warriors={"max_event_age_s": 21601}), "max_event_age_s", id="age-21601"),
        pytest.param(stages(warriors={"memory_mb": 127}), "stages.warriors.memory_mb", id="memory-127"),
        pytest.param(stages(data_groups={"units_per_task": 0}), "units_per_task", id="units-0"),
        pytest.param(stages(data_groups={"rate_weight": 0}), "rate_weight", id="weight-0"),
        pytest.param(stages(data_groups={"rate_weight": float("nan")}), "rate_weight", id="weight-nan"),
        pytest.param(
            stages(troops={"timeout_s": "300"}), "timeout_s must be an integer", id="timeout-string"
        ),
        pytest.param(stages(troops={"timeout_s": True}), "timeout_s must be an integer", id="timeout-bool"),
        pytest.param(stages(troops={"timeout_s": 300.0}), "timeout_s must be an integer", id="timeout-float"),
        pytest.param(stages(parquet={}), "unknown stage(s) parquet", id="unknown-stage"),
        pytest.param(
            stages(troops={"timeout": 300}),
            "stages.troops: unknown setting(s) timeout",
            id="unknown-stage-field",
        ),
        pytest.param(stages(troops=[]), "stages.troops must be an object", id="stage-not-object"),
        pytest.param({"stages": []}, "stages must be an object", id="stages-not-object"),
        pytest.param({"hermes_rate": 5}, "unknown setting(s) hermes_rate", id="unknown-field"),
        pytest.param({"hermes_url": "ftp://hermes"}, "hermes_url must be an http(s) URL", id="ftp-url"),
        pytest.param({"hermes_url": "hermes.internal"}, "hermes_url must be an http(s) URL", id="bare-host"),
        pytest.param({"hermes_url": 8080}, "hermes_url must be a string", id="url-not-string"),
        pytest.param({"region": 1}, "region must be a string", id="region-not-string"),
        pytest.param({"hermes_rate_limit": 0}, "hermes_rate_limit", id="rate-0"),
        pytest.param({"hermes_rate_start": 0}, "hermes_rate_start", id="rate-start-0"),
        pytest.param(
            {"hermes_rate_start": "fast"}, "hermes_rate_start must be a number", id="rate-start-text"
        ),
        pytest.param({"pacing": "fleet"}, "pacing must be one of static, adaptive, shared", id="pacing"),
        pytest.param(
            {"pacing": "shared", "hermes_rate_limit": 1500},
            r"at most 500 calls/s",
            id="shared-above-one-item",
        ),
        pytest.param({"hermes_page_size": 1001}, "hermes_page_size", id="page-size-1001"),
        pytest.param({"max_attempts": 0}, "max_attempts", id="attempts-0"),
        pytest.param({"retry_base_delay_s": 901}, "retry_base_delay_s", id="base-delay-901"),
        pytest.param(
            {"retry_base_delay_s": 10, "retry_max_delay_s": 5},
            "retry_max_delay_s (5.0) is below",
            id="max-below-base",
        ),
        pytest.param({"removal_policy": "delete"}, "removal_policy must be one of", id="removal-policy"),
        pytest.param({"account_concurrency_limit": 100}, "account_concurrency_limit", id="account-limit-100"),
    ],
)
def test_a_bad_setting_is_refused_by_name(raw: dict[str, Any], fragment: str) -> None:
    with pytest.raises(SettingsError) as info:
        parse_environment("dev", raw)
    assert fragment in str(info.value)
    assert str(info.value).startswith("environments.dev")


def test_the_environment_must_be_an_object() -> None:
    with pytest.raises(SettingsError, match=r"environments\.dev must be an object"):
        parse_environment("dev", [])


def test_reserved_concurrency_may_leave_exactly_100_unreserved() -> None:
    # 4 + 4 + 886 reserved, plus 3 x 2 for the retry consumers = 900
    env = parse_environment("dev", stages(data_groups={"reserved_concurrency": 886}))
    assert env.stage("data_groups").reserved_concurrency == 886


def test_defaults_fill_every_stage() -> None:
    env = parse_environment("dev", {})
    assert tuple(env.stages) == STAGE_NAMES
    assert env.token_secret_name == "fanout/dev/hermes-token"
    assert env.removal_policy == "retain"


def test_a_trailing_slash_is_dropped_from_the_hermes_url() -> None:
    assert (
        parse_environment("dev", {"hermes_url": "https://h.example.com/"}).hermes_url
        == "https://h.example.com"
    )


def test_settings_are_immutable() -> None:
    env = parse_environment("dev", {})
    with pytest.raises(TypeError):
        env.stages["troops"] = env.stages["warriors"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("context", "fragment"),
    [
        ({"dev": {}}, "unknown environment 'prod'; environments in cdk.json: dev"),
        ({}, "unknown environment 'prod'; environments in cdk.json: "),
        (None, "unknown environment 'prod'; environments in cdk.json: none"),
    ],
)
def test_select_environment_names_an_unknown_environment(context: Any, fragment: str) -> None:
    with pytest.raises(SettingsError) as info:
        select_environment(context, "prod")
    assert fragment in str(info.value)


@pytest.mark.parametrize("context", [{}, [], None])
def test_parse_environments_needs_a_non_empty_object(context: Any) -> None:
    with pytest.raises(SettingsError, match="non-empty object"):
        parse_environments(context)


def cdk_environments() -> dict[str, Any]:
    return json.loads(CDK_JSON.read_text())["context"]["environments"]


@pytest.mark.parametrize("name", sorted(cdk_environments()))
def test_every_cdk_json_environment_parses(name: str) -> None:
    env = load_environment(name, CDK_JSON)
    assert isinstance(env, EnvironmentSettings) and env.name == name


@pytest.mark.parametrize("name", sorted(cdk_environments()))
def test_environment_to_json_round_trips(name: str) -> None:
    env = load_environment(name, CDK_JSON)
    again = environment_from_json(name, environment_to_json(env))
    assert again == env
    assert environment_to_raw(again) == environment_to_raw(env)


def test_environment_from_json_refuses_text_that_is_not_json() -> None:
    with pytest.raises(SettingsError, match="not JSON"):
        environment_from_json("dev", "{")


def test_load_environment_names_an_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot read settings"):
        load_environment("dev", tmp_path / "missing.json")


def test_instance_rates_of_all_instances_add_up_to_the_rate_limit() -> None:
    env = load_environment("prod", CDK_JSON)
    # Every instance: the stage's function at its cap and its retry consumer at its share.
    total = sum(
        env.instance_rate(s) * (env.stage(s).reserved_concurrency + env.stage(s).retry_concurrency)
        for s in STAGE_NAMES
    )
    assert total == pytest.approx(env.hermes_rate_limit)
    # weights follow each stage's share of the calls (about 1 : 20 : 1,000 per warrior)
    assert env.rate_share("data_groups") == pytest.approx(25 * env.rate_share("troops"))
