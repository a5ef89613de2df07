"""The fleet's Hermes budget for pacing ``shared``: one on-demand DynamoDB table holding
one item (``fanout_aws.budget_table``).

On demand, because a run writes it about once per Hermes call and then nothing until the
next run: a provisioned table would bill the idle hours. Point-in-time recovery is on
for cdk-nag's sake more than the item's (it is rebuilt by the next call); the functions
get ``dynamodb:UpdateItem`` on this table and nothing else (the stack grants it).
"""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from constructs import Construct


class BudgetTable(Construct):
    """Attributes: ``table``."""

    def __init__(self, scope: Construct, construct_id: str, *, removal_policy: RemovalPolicy) -> None:
        super().__init__(scope, construct_id)
        self.table = dynamodb.Table(
            self,
            "Table",
            partition_key=dynamodb.Attribute(name="pk", type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            removal_policy=removal_policy,
        )

    def grant_reserve(self, grantee: iam.IGrantable) -> None:
        """The one call the pacer makes (``grant_write_data`` would add Put/Delete/Batch)."""
        self.table.grant(grantee, "dynamodb:UpdateItem")
