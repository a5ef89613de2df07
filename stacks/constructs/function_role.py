"""A function's execution role that may write its own log group and nothing else.

CDK's default role attaches ``AWSLambdaBasicExecutionRole``, which grants
``logs:CreateLogGroup`` on ``*`` and log writes to every group; a function whose log
group the stack creates needs neither. Everything else a function may do is added by
the stack as inline, prefix-scoped statements.
"""

from __future__ import annotations

from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from constructs import Construct

LAMBDA_PRINCIPAL = "lambda.amazonaws.com"


def function_role(
    scope: Construct, construct_id: str, log_group: logs.ILogGroup, description: str
) -> iam.Role:
    role = iam.Role(
        scope,
        construct_id,
        assumed_by=iam.ServicePrincipal(LAMBDA_PRINCIPAL),  # type: ignore[arg-type]
        description=description[:1000],
    )
    role.add_to_policy(
        iam.PolicyStatement(
            sid="OwnLogStreams",
            actions=["logs:CreateLogStream", "logs:PutLogEvents"],
            resources=[log_group.log_group_arn],  # the group's ARN ends in ":*": its streams
        )
    )
    return role
