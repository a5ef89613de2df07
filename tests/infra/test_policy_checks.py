"""cdk-nag's AwsSolutions pack and cfn-lint over every deployed environment's template."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App, Stack
from aws_cdk import aws_s3 as s3
from cfnlint.api import ManualArgs, lint

from stacks.nag import MIN_REASON, acknowledge, add_nag_checks

from .conftest import DEPLOYED_ENVIRONMENTS, Synth

CFN_LINT_IGNORED = {
    # CDK writes a DependsOn on a function's role next to the GetAtt that already
    # orders it; redundant, not wrong, and not ours to change.
    "W3005",
}
LINT_REGIONS = ["us-east-1", "eu-west-1", "eu-central-1", "ap-southeast-2"]


def _plugin(report: dict[str, Any]) -> dict[str, Any]:
    (plugin,) = [p for p in report["pluginReports"] if p["pluginName"] == "AwsSolutions"]
    return plugin


def test_cdk_nag_ran_and_left_no_unacknowledged_finding(synth: Synth) -> None:
    # Synthesis would have raised ValidationFailed otherwise; the report proves it ran.
    plugin = _plugin(synth.nag_report)
    assert plugin["conclusion"] == "success"
    assert plugin.get("violations", []) == []


def test_every_acknowledgement_has_a_reason_and_matches_a_finding(synth: Synth) -> None:
    suppressed = _plugin(synth.nag_report).get("suppressedViolations", [])
    used = {(v["acknowledgedAt"], v["acknowledgedId"]) for v in suppressed}
    for v in suppressed:
        assert len(v["reason"].strip()) >= MIN_REASON, v
    acks = synth.acknowledgements
    assert acks
    for ack in acks:
        assert ack.rule.startswith("AwsSolutions::AwsSolutions-"), ack
        assert len(ack.reason) >= MIN_REASON, ack
        # No stale acknowledgement: each one silences a finding that exists.
        assert (ack.path, ack.rule) in used, ack


def test_acknowledgements_are_per_construct_never_stack_wide(synth: Synth) -> None:
    stack_path = synth.stack.node.path
    assert all(ack.path != stack_path for ack in synth.acknowledgements)
    assert all(ack.path.startswith(stack_path + "/") for ack in synth.acknowledgements)


def test_nag_fails_synthesis_on_a_finding_nobody_acknowledged(tmp_path: Path) -> None:
    """The same wiring as the real app, on a bucket that breaks the rules."""
    app = App(outdir=str(tmp_path))
    stack = Stack(app, "Careless")
    s3.Bucket(stack, "Open")
    add_nag_checks(app)
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()
    report = json.loads((tmp_path / "validation-report.json").read_text())
    rules = {v["ruleName"] for v in _plugin(report)["violations"]}
    assert {"AwsSolutions-S1", "AwsSolutions-S10"} <= rules


def test_acknowledge_refuses_an_empty_reason() -> None:
    app = App()
    stack = Stack(app, "S")
    with pytest.raises(ValueError, match="real reason"):
        acknowledge(stack, "S1", "ok")


@pytest.mark.parametrize("env", DEPLOYED_ENVIRONMENTS)
def test_cfn_lint_passes(env: str, synth_env: Any) -> None:
    template = json.dumps(synth_env(env).doc)
    matches = lint(template, config=ManualArgs(regions=LINT_REGIONS))
    problems = [m for m in matches if m.rule.id not in CFN_LINT_IGNORED]
    assert problems == [], "\n".join(str(m) for m in problems)
