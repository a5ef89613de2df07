"""Lambda's recursive-loop detection stops a function invoked ~16 times in one chain;
settings keep every stage's chain (self-triggered parts + attempts + the on-failure
hop) under it, so the loop stop never ends a task that still had attempts."""

from __future__ import annotations

import pytest

from fanout_core.errors import SettingsError
from fanout_core.settings import RECURSION_CUTOFF, invocations_per_chain, parse_environment
from fanout_core.stages import STAGE_NAMES


def _largest_allowed() -> int:
    return max(
        n for n in range(1, 101) if all(invocations_per_chain(s, n) < RECURSION_CUTOFF for s in STAGE_NAMES)
    )


def test_every_environment_in_cdk_json_stays_under_the_cutoff() -> None:
    import json
    from pathlib import Path

    doc = json.loads((Path(__file__).parents[2] / "cdk.json").read_text())
    for name, raw in doc["context"]["environments"].items():
        env = parse_environment(name, raw)
        for stage in STAGE_NAMES:
            assert invocations_per_chain(stage, env.max_attempts) < RECURSION_CUTOFF, (name, stage)


def test_the_largest_allowed_max_attempts_is_accepted() -> None:
    assert parse_environment("x", {"max_attempts": _largest_allowed()}).max_attempts == _largest_allowed()


def test_one_more_attempt_is_refused_naming_the_setting_and_the_cutoff() -> None:
    with pytest.raises(
        SettingsError, match=r"max_attempts is \d+: .* recursive-loop detection .*16; use at most"
    ):
        parse_environment("x", {"max_attempts": _largest_allowed() + 1})


def test_the_first_stage_counts_its_self_triggered_parts() -> None:
    first, *rest = STAGE_NAMES
    assert all(invocations_per_chain(first, 6) == invocations_per_chain(s, 6) + 1 for s in rest)
