"""Bad settings stop synthesis before any resource exists, with a message naming the setting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from fanout_core.errors import SettingsError
from stacks import build_app

from .conftest import ROOT, SKIP_BUNDLING


def _build(env: str, environments: dict[str, Any]) -> None:
    build_app(context={"env": env, "environments": environments, **SKIP_BUNDLING})


@pytest.mark.parametrize(
    ("env", "change", "message"),
    [
        (
            "prod",
            {"stages": {"data_groups": {"reserved_concurrency": 880}}},
            r"environments\.prod\.stages\.\*\.reserved_concurrency \+ retry_concurrency "
            r"add up to 911, which leaves 89",
        ),
        (
            "dev",
            {"stages": {"data_groups": {"timeout_s": 901}}},
            r"environments\.dev\.stages\.data_groups\.timeout_s must be between 1 and 900, got 901",
        ),
        (
            "dev",
            {"stages": {"troops": {"retry_attempts": 3}}},
            r"environments\.dev\.stages\.troops\.retry_attempts must be between 0 and 2",
        ),
        (
            "dev",
            {"stages": {"warriors": {"max_event_age_s": 30}}},
            r"environments\.dev\.stages\.warriors\.max_event_age_s must be between 60 and 21600",
        ),
        (
            "dev",
            {"removal_policy": "keep"},
            r"environments\.dev\.removal_policy must be one of retain, destroy",
        ),
    ],
)
def test_bad_setting_fails_with_its_name(
    env: str, change: dict[str, Any], message: str, environments_context: dict[str, Any]
) -> None:
    environments = environments_context
    target = environments[env]
    for key, value in change.items():
        if key == "stages":
            for stage, fields in value.items():
                target["stages"][stage].update(fields)
        else:
            target[key] = value
    with pytest.raises(SettingsError, match=message):
        _build(env, environments)


def test_unknown_environment_fails_with_the_known_ones(environments_context: dict[str, Any]) -> None:
    with pytest.raises(SettingsError, match=r"unknown environment 'staging'; environments in cdk.json: dev"):
        _build("staging", environments_context)


def test_app_py_reports_a_bad_environment_and_exits_nonzero() -> None:
    """What a user of `cdk synth -c env=typo` sees: one line naming the problem."""
    env = {**os.environ, "CDK_CONTEXT_JSON": json.dumps({"env": "typo", **SKIP_BUNDLING})}
    done = subprocess.run(
        [sys.executable, str(ROOT / "app.py")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "fanout: bad settings: unknown environment 'typo'" in done.stderr
    assert "Traceback" not in done.stderr
