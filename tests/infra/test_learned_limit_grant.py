"""The stage roles may read and write the learned rate limit's records, ``limits/*``, and
nothing more there, only when the fleet keeps it (``learned_limit.kept_on_aws``)."""

from __future__ import annotations

from typing import Any

from fanout_core.stages import STAGES

from .conftest import Synth, render, synthesize


def _limit_statements(synth: Synth) -> dict[str, list[dict[str, Any]]]:
    """Per stage, its role's statements that name ``limits/``."""
    out: dict[str, list[dict[str, Any]]] = {}
    for stage in STAGES:
        role = synth.stack.stage_functions[stage.name].function.role
        assert role is not None
        role_id = synth.logical_id(role)
        found = []
        for policy in synth.resources("AWS::IAM::Policy").values():
            if {"Ref": role_id} not in policy["Properties"]["Roles"]:
                continue
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
                resources = statement["Resource"]
                rendered = [render(r) for r in (resources if isinstance(resources, list) else [resources])]
                if any("/limits/" in str(r) for r in rendered):
                    found.append({**statement, "Resource": rendered})
        out[stage.name] = found
    return out


def test_every_stage_role_may_get_and_put_the_limit_records_and_nothing_else(synth: Synth) -> None:
    bucket = f"<{synth.logical_id(synth.stack.bucket)}.Arn>"
    for name, statements in _limit_statements(synth).items():
        assert len(statements) == 1, name
        (statement,) = statements
        assert statement["Effect"] == "Allow" and "Condition" not in statement
        assert sorted(statement["Action"]) == ["s3:GetObject", "s3:PutObject"], name
        assert statement["Resource"] == [f"{bucket}/limits/*"], name


def test_with_remember_limit_off_no_role_may_touch_the_limit_records(
    tmp_path: Any, environments_context: dict[str, Any]
) -> None:
    environments_context["dev"]["remember_limit"] = False
    synth = synthesize("dev", tmp_path, context={"environments": environments_context})
    assert _limit_statements(synth) == {s.name: [] for s in STAGES}


def test_with_static_pacing_no_role_may_touch_the_limit_records(
    tmp_path: Any, environments_context: dict[str, Any]
) -> None:
    """Static pacing finds no limit: nothing to read or write."""
    environments_context["dev"]["pacing"] = "static"
    synth = synthesize("dev", tmp_path, context={"environments": environments_context})
    assert _limit_statements(synth) == {s.name: [] for s in STAGES}
