"""cdk-nag (v3, a policy-validation plugin) wiring and narrow, reasoned acknowledgements.

Every finding either gets fixed or is acknowledged on the one construct it is about,
with a reason a reviewer can check. A finding with no acknowledgement fails
synthesis (``ValidationFailed``), in ``cdk synth`` and in the tests alike.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Acknowledgment, App, Stack, Validations
from cdk_nag import AwsSolutionsChecks
from constructs import IConstruct

PACK = "AwsSolutions"
MIN_REASON = 40
"""A reason shorter than this is not a reason; ``acknowledge`` refuses it."""


def add_nag_checks(app: App) -> None:
    """Run the AwsSolutions pack on every stack of ``app`` at synthesis."""
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))


def acknowledge(scope: IConstruct, rule: str, reason: str) -> None:
    """Acknowledge ``AwsSolutions-<rule>`` (e.g. ``"S1"``) on ``scope`` and its children only."""
    if len(reason.strip()) < MIN_REASON:
        raise ValueError(f"acknowledging {rule} needs a real reason, got {reason!r}")
    rule_id = rule if rule.startswith(f"{PACK}-") else f"{PACK}-{rule}"
    Validations.of(scope).acknowledge(Acknowledgment(id=f"{PACK}::{rule_id}", reason=reason))


def managed_policy_finding(rule: str, policy: str) -> str:
    """The granular id cdk-nag gives a finding about an AWS managed policy."""
    return f"{rule}[Policy::arn:<AWS::Partition>:iam::aws:policy/{policy}]"


def resource_finding(rule: str, resource: str) -> str:
    """The granular id of a wildcard-resource finding, e.g. ``<LogicalId.Arn>/data/*``."""
    return f"{rule}[Resource::{resource}]"


LAMBDA_BASIC_EXECUTION = "service-role/AWSLambdaBasicExecutionRole"


@dataclass(frozen=True)
class AcknowledgedFinding:
    path: str
    rule: str
    reason: str


def acknowledged_findings(stack: Stack) -> list[AcknowledgedFinding]:
    """Every acknowledgement recorded in ``stack``'s construct tree (for tests and reports)."""
    found = []
    for construct in stack.node.find_all():
        for entry in construct.node.metadata:
            if entry.type != Validations.ACKNOWLEDGED_RULES_METADATA_KEY:
                continue
            # The metadata holds {rule id: reason}, one entry per acknowledge() call.
            data = entry.data if isinstance(entry.data, dict) else {}
            for rule, reason in data.items():
                found.append(AcknowledgedFinding(construct.node.path, str(rule), str(reason)))
    return found
