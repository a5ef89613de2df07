"""Synthesize each environment's stack once per test session and share the result.

jsii makes a synthesis cost ~20 s on this machine, so every test of an environment
reads the same template. Bundling is skipped (``aws:cdk:bundling-stacks: []``);
one test in ``test_bundle.py`` builds the bundle with the same recipe instead.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
for entry in (ROOT, ROOT / "lambdas"):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

from aws_cdk import assertions  # noqa: E402

from fanout_core.settings import EnvironmentSettings  # noqa: E402
from stacks import build_app, cdk_json_context  # noqa: E402
from stacks.fanout_stack import FanoutStack  # noqa: E402
from stacks.nag import AcknowledgedFinding, acknowledged_findings  # noqa: E402

DEPLOYED_ENVIRONMENTS = ("dev", "prod")
SKIP_BUNDLING: dict[str, Any] = {"aws:cdk:bundling-stacks": []}
DESCRIBED_ENVIRONMENTS: dict[str, dict[str, Any]] = {
    # Test-only environments (passed as context, not in cdk.json) whose API is not Hermes:
    # each engine over the test descriptions, stage settings keyed by their stage names.
    "shops": {
        "api": "tests/fixtures/apis/two_level.yaml",
        "hermes_url": "https://shops.example.com",
        "removal_policy": "destroy",
        "stages": {"shops": {"reserved_concurrency": 3, "memory_mb": 512, "units_per_task": 7}},
    },
    "shops-queue": {
        "api": "tests/fixtures/apis/two_level.yaml",
        "engine": "queue",
        "pacing": "shared",
        "hermes_url": "https://shops.example.com",
    },
    "builds": {
        "api": "tests/fixtures/apis/five_level.yaml",
        "hermes_url": "https://builds.example.com",
        "stages": {"builds": {"reserved_concurrency": 6, "timeout_s": 600}},
    },
    "builds-sfn": {
        "api": "tests/fixtures/apis/five_level.yaml",
        "engine": "stepfunctions",
        "pacing": "shared",
        "hermes_url": "https://builds.example.com",
    },
}
"""Environments (name -> raw settings) whose stacks are made from a test description."""


@dataclass(frozen=True)
class Synth:
    """One synthesized environment: its settings, template and cdk-nag outcome."""

    env: str
    settings: EnvironmentSettings
    stack: FanoutStack
    template: assertions.Template
    doc: dict[str, Any]
    """The template as plain JSON, for checks ``assertions`` cannot express."""
    nag_report: dict[str, Any]
    acknowledgements: list[AcknowledgedFinding]

    def resources(self, cfn_type: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.doc["Resources"].items() if v["Type"] == cfn_type}

    def logical_id(self, construct: Any) -> str:
        return str(self.stack.resolve(construct.node.default_child.logical_id))


def synthesize(env: str, outdir: Path, *, context: dict[str, Any] | None = None) -> Synth:
    app, stack = build_app(context={"env": env, **SKIP_BUNDLING, **(context or {})}, outdir=str(outdir))
    assembly = app.synth()  # raises ValidationFailed on any unacknowledged cdk-nag finding
    doc = assembly.get_stack_artifact(stack.artifact_id).template
    report_path = outdir / "validation-report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    return Synth(
        env=env,
        settings=stack.settings,
        stack=stack,
        template=assertions.Template.from_json(doc),
        doc=doc,
        nag_report=report,
        acknowledgements=acknowledged_findings(stack),
    )


_CACHE: dict[str, Synth] = {}


@pytest.fixture(scope="session")
def synth_env(tmp_path_factory: pytest.TempPathFactory):
    """``synth_env("dev")``: the environment's synthesis, built on first use."""

    def get(env: str) -> Synth:
        if env not in _CACHE:
            context = None
            if env in DESCRIBED_ENVIRONMENTS:
                environments = cdk_json_context()["environments"]
                context = {"environments": {**environments, env: DESCRIBED_ENVIRONMENTS[env]}}
            _CACHE[env] = synthesize(env, tmp_path_factory.mktemp(f"cdk-{env}"), context=context)
        return _CACHE[env]

    return get


@pytest.fixture(scope="session", params=DEPLOYED_ENVIRONMENTS)
def synth(request: pytest.FixtureRequest, synth_env: Any) -> Synth:
    """Each deployed environment in turn (tests using it run once per environment)."""
    return synth_env(request.param)


@pytest.fixture
def environments_context() -> dict[str, Any]:
    """cdk.json's ``environments``, to derive broken variants from."""
    return json.loads(json.dumps(cdk_json_context()["environments"]))


def render(value: Any) -> Any:
    """A CloudFormation expression as a readable string: ``{"Fn::GetAtt": [X, "Arn"]}``
    becomes ``<X.Arn>``, ``{"Ref": X}`` becomes ``<X>``, joins are joined."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return [render(v) for v in value]
    if isinstance(value, dict) and len(value) == 1:
        ((fn, arg),) = value.items()
        if fn == "Ref":
            return f"<{arg}>"
        if fn == "Fn::GetAtt":
            return f"<{'.'.join(arg)}>"
        if fn == "Fn::Join":
            sep, parts = arg
            return sep.join(str(render(p)) for p in parts)
    return value
