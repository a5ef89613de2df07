"""Which environment a deployed bucket belongs to: the stack tags every resource with
``app=fanout`` and ``environment=<name>``, so a command given only ``--bucket`` reads
that environment's settings (stale thresholds, retry windows) instead of ``local``'s.

Needs ``s3:GetBucketTagging`` on the bucket; without it (or without the tags) the
command says so and falls back to ``local`` unless ``--env`` is given.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any

APP_TAG, ENVIRONMENT_TAG = "app", "environment"
APP = "fanout"
LOCAL = "local"


@dataclass(frozen=True)
class BucketEnvironment:
    name: str | None
    """The environment the bucket's tags name; None if they name none."""
    why: str
    """Where the answer came from, or why there is none (for the user)."""


def environment_of_bucket(
    bucket: str, *, region: str | None = None, endpoint_url: str | None = None, client: Any = None
) -> BucketEnvironment:
    """The environment named by ``bucket``'s tags (``app=fanout``, ``environment=NAME``)."""
    from botocore.exceptions import ClientError

    from fanout.aws_clients import AWS_ERRORS, aws_problem, cli_config

    if client is None:
        from fanout_aws.s3_storage import make_client

        client = make_client(endpoint_url=endpoint_url, region=region, config=cli_config())
    try:
        tag_set = client.get_bucket_tagging(Bucket=bucket).get("TagSet", [])
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        return BucketEnvironment(None, f"its tags could not be read ({code})")
    except AWS_ERRORS as exc:
        return BucketEnvironment(None, f"its tags could not be read ({aws_problem(exc)})")
    tags = {t.get("Key"): t.get("Value") for t in tag_set}
    if tags.get(APP_TAG) != APP or not tags.get(ENVIRONMENT_TAG):
        return BucketEnvironment(None, f"it has no {APP_TAG}={APP} and {ENVIRONMENT_TAG} tags")
    return BucketEnvironment(tags[ENVIRONMENT_TAG], f"the bucket's tag {ENVIRONMENT_TAG}")


def resolve_environment(args: argparse.Namespace, *, lookup: Any = environment_of_bucket) -> None:
    """Set ``args.env`` for a command that takes ``--env``: as given; else, with
    ``--bucket``, the bucket's environment (saying which on stderr); else ``local``."""
    if not hasattr(args, "env") or args.env:
        return
    bucket = getattr(args, "bucket", None)
    if not bucket:
        args.env = LOCAL
        return
    found = lookup(
        bucket, region=getattr(args, "region", None), endpoint_url=getattr(args, "s3_endpoint_url", None)
    )
    if found.name:
        args.env = found.name
        print(f"fanout: environment {found.name} (from {found.why})", file=sys.stderr)
    else:
        args.env = LOCAL
        print(
            f"fanout: environment {LOCAL}: bucket {bucket} names none ({found.why}); give --env NAME",
            file=sys.stderr,
        )
