"""The SNS topic every alarm publishes to, encrypted with a key CloudWatch may use.

CloudWatch alarms cannot publish to a topic encrypted with the AWS-managed ``aws/sns``
key: its key policy cannot be changed to let ``cloudwatch.amazonaws.com`` use it, so
every alarm action fails (silently, as far as the operator can tell). A
customer-managed key, rotated yearly, whose policy grants CloudWatch exactly the two
calls publishing needs, lets the alarms ring.
"""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

CLOUDWATCH = "cloudwatch.amazonaws.com"
PUBLISH_KEY_ACTIONS = ("kms:Decrypt", "kms:GenerateDataKey*")
"""What a service needs of the key to publish to an encrypted topic."""


class AlarmTopic(Construct):
    """Attributes: ``topic``, ``key``."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        display_name: str,
        email: str | None = None,
        removal_policy: RemovalPolicy = RemovalPolicy.RETAIN,
    ) -> None:
        super().__init__(scope, construct_id)
        self.key = kms.Key(
            self,
            "Key",
            description=f"{display_name}: encrypts the alarm topic; CloudWatch may use it to publish",
            enable_key_rotation=True,
            removal_policy=removal_policy,
        )
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="CloudWatchAlarmsPublish",
                principals=[iam.ServicePrincipal(CLOUDWATCH)],
                actions=list(PUBLISH_KEY_ACTIONS),
                resources=["*"],  # in a key policy, "*" is this key
            )
        )
        self.topic = sns.Topic(
            self,
            "Topic",
            display_name=display_name,
            enforce_ssl=True,
            master_key=self.key,
        )
        if email:
            # The address gets a confirmation mail first; until it is confirmed nothing
            # is delivered (docs/deploying.md).
            self.topic.add_subscription(subscriptions.EmailSubscription(email))
