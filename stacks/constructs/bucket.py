"""The pipeline's bucket: every stage's tasks, the Parquet output, done markers, failures.

Intermediate prefixes (the task objects, done markers, archived failure records)
expire; ``data/`` never does, and neither does anything else not named here. The
access logs go to a separate bucket, since a bucket cannot log into itself without
logging its own log writes. (cdk-nag's S1 recognises a log target by its bucket
policy for the logging service, so the log bucket needs no acknowledgement.)
"""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_s3 as s3
from constructs import Construct

ACCESS_LOG_PREFIX = "data-bucket/"
ACCESS_LOG_EXPIRY = Duration.days(90)


class PipelineBucket(Construct):
    """The data bucket plus its access-log bucket.

    Attributes: ``bucket`` (the data bucket), ``access_logs`` (the log target),
    ``data_logical_id`` (the data bucket's CloudFormation logical id, a token).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        intermediate_prefixes: Sequence[str],
        intermediate_expiry: Duration,
        failure_prefix: str,
        failure_expiry: Duration,
        archive_prefix: str,
        archive_expiry: Duration,
        never_expire: Sequence[str],
        removal_policy: RemovalPolicy,
        access_log_expiry: Duration = ACCESS_LOG_EXPIRY,
        versioned: bool = False,
    ) -> None:
        super().__init__(scope, construct_id)
        expiring = [*intermediate_prefixes, failure_prefix, archive_prefix]
        for kept in never_expire:
            clash = [p for p in expiring if p.startswith(kept) or kept.startswith(p)]
            if clash:
                raise ValueError(f"lifecycle expiry on {clash} would reach {kept!r}")
        destroy = removal_policy == RemovalPolicy.DESTROY

        self.access_logs = s3.Bucket(
            self,
            "AccessLogs",
            # Server access log delivery supports SSE-S3 only, not SSE-KMS.
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[s3.LifecycleRule(id="expire-access-logs", expiration=access_log_expiry)],
            removal_policy=removal_policy,
            auto_delete_objects=destroy,
        )

        rules = [
            s3.LifecycleRule(
                id=f"expire-{prefix.rstrip('/').replace('/', '-')}",
                prefix=prefix,
                expiration=expiry,
            )
            for prefix, expiry in (
                *((p, intermediate_expiry) for p in intermediate_prefixes),
                (failure_prefix, failure_expiry),
                (archive_prefix, archive_expiry),
            )
        ]
        # Not an expiry: parts of uploads that never completed are invisible but billed.
        rules.append(
            s3.LifecycleRule(
                id="abort-incomplete-uploads",
                abort_incomplete_multipart_upload_after=Duration.days(7),
            )
        )
        if versioned:
            rules.append(
                s3.LifecycleRule(
                    id="expire-noncurrent-versions",
                    noncurrent_version_expiration=Duration.days(30),
                )
            )

        self.bucket = s3.Bucket(
            self,
            "Data",
            # SSE-S3: no key policy to keep in step with the functions' roles, and no
            # KMS request charge on each of a run's ~100k small gets and puts.
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            versioned=versioned,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix=ACCESS_LOG_PREFIX,
            lifecycle_rules=rules,
            removal_policy=removal_policy,
            auto_delete_objects=destroy,
        )
        self.data_logical_id = self.bucket.node.default_child.logical_id  # type: ignore[union-attr]
