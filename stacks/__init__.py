"""The CDK side of fanout: one stack per environment, built from the stage table of the
environment's API description.

``build_app`` is what ``app.py`` runs and what the tests reuse, so both synthesize
the same thing: settings from ``cdk.json`` context (``"api"``: the description file,
relative to the repository; none: the built-in Hermes one), one ``Fanout-<env>`` stack,
cdk-nag's AwsSolutions checks on it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CDK_JSON = ROOT / "cdk.json"
DEFAULT_ENV = "dev"
FEATURE_FLAGS: dict[str, Any] = {
    # Access-log delivery authorized by a bucket policy, not the legacy ACL, so both
    # buckets can keep ACLs disabled (BucketOwnerEnforced).
    "@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy": True,
}

if str(ROOT / "lambdas") not in sys.path:
    # The stack reads the stage table and settings from the deployed code itself.
    sys.path.insert(0, str(ROOT / "lambdas"))

from aws_cdk import App  # noqa: E402
from aws_cdk import aws_lambda as lambda_  # noqa: E402

from fanout_core.api_description import ApiDescription, ApiDescriptionError, builtin, load  # noqa: E402
from fanout_core.errors import SettingsError  # noqa: E402
from fanout_core.settings import EnvironmentSettings, select_environment  # noqa: E402
from fanout_core.stages import StageTable, table_for  # noqa: E402
from stacks.fanout_stack import FanoutStack, stack_name  # noqa: E402
from stacks.nag import add_nag_checks  # noqa: E402


def cdk_json_context(path: Path = CDK_JSON) -> dict[str, Any]:
    """``context`` of cdk.json: what the CDK CLI passes in, for runs without the CLI."""
    context = json.loads(path.read_text()).get("context", {})
    return dict(context) if isinstance(context, Mapping) else {}


def environments_from_app(app: App) -> Any:
    """The ``environments`` context: the CLI's, else cdk.json's."""
    environments = app.node.try_get_context("environments")
    if environments is None:
        # `python app.py` without the CLI: cdk.json's context was not passed in.
        environments = cdk_json_context().get("environments")
    return environments


def api_of(environments: Any, name: str) -> ApiDescription:
    """The description environment ``name`` names in ``"api"`` (a path relative to the
    repository), checked whole; the built-in Hermes one when it names none. Read before
    the settings, whose stages are the description's."""
    raw = environments.get(name) if isinstance(environments, Mapping) else None
    path = raw.get("api") if isinstance(raw, Mapping) else None
    if path is None:
        return builtin()
    if not isinstance(path, str) or not path.strip():
        raise SettingsError(f"environments.{name}.api must be the path of an API description file")
    try:
        return load(ROOT / path)
    except ApiDescriptionError as exc:
        raise SettingsError(f"environments.{name}.api: {exc}") from None


def settings_from_app(app: App) -> tuple[EnvironmentSettings, StageTable]:
    """The environment ``-c env=NAME`` selects (``dev`` if none) and the stage table of its
    API description; errors name the setting."""
    name = str(app.node.try_get_context("env") or DEFAULT_ENV)
    environments = environments_from_app(app)
    table = table_for(api_of(environments, name))
    return select_environment(environments, name, table.names), table


def build_app(
    *,
    context: Mapping[str, Any] | None = None,
    outdir: str | None = None,
    code: lambda_.Code | None = None,
    nag: bool = True,
) -> tuple[App, FanoutStack]:
    """The app with its one stack. ``code`` replaces the bundled asset (tests)."""
    app = App(context={**FEATURE_FLAGS, **(context or {})}, outdir=outdir)
    settings, table = settings_from_app(app)
    if code is None:
        from stacks.bundling import lambda_code

        code = lambda_code(api=table.api)
    stack = FanoutStack(app, stack_name(settings.name), settings=settings, table=table, code=code)
    if nag:
        add_nag_checks(app)
    return app, stack


__all__ = ["FanoutStack", "build_app", "settings_from_app", "stack_name"]
