"""Every taggable resource carries ``app`` and ``environment`` (cost allocation, and how
the CLI finds a bucket's environment)."""

from __future__ import annotations

from fanout import bucket_env
from stacks import fanout_stack

from .conftest import Synth

TAGGED_TYPES = (
    "AWS::S3::Bucket",
    "AWS::Lambda::Function",
    "AWS::SQS::Queue",
    "AWS::SNS::Topic",
    "AWS::KMS::Key",
    "AWS::IAM::Role",
    "AWS::Logs::LogGroup",
    "AWS::Athena::WorkGroup",
)

CDK_PROVIDERS = ("CustomS3AutoDeleteObjectsCustomResourceProvider",)
"""CDK's singleton provider of auto-delete (dev only) is a raw CfnResource that ``Tags``
cannot reach; it holds no data and runs only at deploy and destroy."""


def test_the_stacks_tags_are_the_ones_the_cli_reads() -> None:
    assert (fanout_stack.APP_TAG, fanout_stack.ENVIRONMENT_TAG, fanout_stack.APP) == (
        bucket_env.APP_TAG,
        bucket_env.ENVIRONMENT_TAG,
        bucket_env.APP,
    )


def test_every_taggable_resource_names_the_app_and_environment(synth: Synth) -> None:
    seen = 0
    for cfn_type in TAGGED_TYPES:
        for name, resource in synth.resources(cfn_type).items():
            if name.startswith(CDK_PROVIDERS):
                continue
            tags = resource["Properties"].get("Tags", [])
            pairs = {t["Key"]: t["Value"] for t in tags} if isinstance(tags, list) else dict(tags)
            assert pairs.get("app") == "fanout", name
            assert pairs.get("environment") == synth.env, name
            seen += 1
    assert seen >= 20


def test_the_data_bucket_is_tagged_with_its_environment(synth: Synth) -> None:
    bucket = synth.doc["Resources"][synth.logical_id(synth.stack.bucket)]["Properties"]
    assert {"Key": "environment", "Value": synth.env} in bucket["Tags"]
