"""A deployed bucket knows its environment: commands given only ``--bucket`` read its
``environment`` tag and say which environment they used."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from fanout.bucket_env import environment_of_bucket, resolve_environment
from fanout.cli import main

BUCKET = "fanout-dev-data"


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


def _tag(s3: Any, **tags: str) -> None:
    s3.put_bucket_tagging(
        Bucket=BUCKET, Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in tags.items()]}
    )


def test_status_on_a_tagged_bucket_uses_and_names_its_environment(s3, capsys) -> None:
    _tag(s3, app="fanout", environment="dev")
    main(["status", "r1", "--bucket", BUCKET])
    assert "fanout: environment dev (from the bucket's tag environment)" in capsys.readouterr().err


def test_status_on_an_untagged_bucket_says_it_falls_back_to_local(s3, capsys) -> None:
    main(["status", "r1", "--bucket", BUCKET])
    err = capsys.readouterr().err
    assert f"environment local: bucket {BUCKET} names none" in err and "give --env" in err


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ({"app": "fanout", "environment": "prod"}, "prod"),
        ({"environment": "prod"}, None),  # another app's bucket
        ({"app": "fanout"}, None),
    ],
    ids=["ours", "no-app-tag", "no-environment-tag"],
)
def test_the_environment_is_read_from_the_app_and_environment_tags(s3, tags, expected) -> None:
    _tag(s3, **tags)
    assert environment_of_bucket(BUCKET, client=s3).name == expected


def test_env_given_is_used_without_looking_at_the_bucket() -> None:
    def lookup(*_: Any, **__: Any) -> Any:
        raise AssertionError("looked up")

    args = argparse.Namespace(env="prod", bucket=BUCKET)
    resolve_environment(args, lookup=lookup)
    assert args.env == "prod"


def test_a_local_directory_uses_the_local_environment() -> None:
    args = argparse.Namespace(env=None, bucket=None)
    resolve_environment(args)
    assert args.env == "local"
