"""The output as a table: a Glue database and table over the compacted runs, an Athena
workgroup whose results are encrypted and expire, and one managed policy to query them.

- **No crawler, no ``MSCK REPAIR``.** The table is partitioned by ``run`` alone, with
  partition projection of type ``injected``: a query names its run
  (``WHERE run = '...'``) and Athena computes the partition's location from
  ``storage.location.template``. Run ids are ``[A-Za-z0-9._-]``, which no engine
  escapes, so the value is exact; every other id (any level's: spaces, ``+``, ``=``,
  ``%``, any script) is a column in the files, never decoded from a path.
- **Readers never see two generations.** The partition location holds one Athena
  symlink manifest per run, ``athena/run=<run>/current.txt``, that compaction replaces
  whole when it commits a generation (``fanout_core.compaction``). Athena reads the
  files it lists (``SymlinkTextInputFormat`` over Parquet), which live in the run's
  output folder ``data/run=<run>/`` beside the small files they replace, so a run
  appears in the table once it is compacted, and always as exactly one generation, even
  in the window where a glob over that folder sees the old files and the new.
- **Columns and types** come from the table's API description through
  ``fanout_core.output.glue_types``, the writer's own schema (a test compares them with a
  file the pipeline wrote).
- **Results** go to a bucket of their own, SSE-S3, TLS only, expiring after
  ``results_expiry``; the workgroup enforces that location and encryption, so no
  client setting can send results elsewhere or unencrypted.
"""

from __future__ import annotations

from aws_cdk import Aws, CfnOutput, Duration, RemovalPolicy, Stack
from aws_cdk import aws_athena as athena
from aws_cdk import aws_glue as glue
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

from fanout_core.api_description import ApiDescription
from fanout_core.output import glue_types
from fanout_core.stages import STAGES, StageTable
from stacks.nag import acknowledge, resource_finding

RESULTS_EXPIRY = Duration.days(7)
RESULTS_PREFIX = "results/"
PARTITION = "run"
TABLE_NAME = "records"
SYMLINK_INPUT_FORMAT = "org.apache.hadoop.hive.ql.io.SymlinkTextInputFormat"
OUTPUT_FORMAT = "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat"
PARQUET_SERDE = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
RESULTS_LOG_PREFIX = "athena-results-bucket/"


def glue_name(env_name: str) -> str:
    """Glue and Athena names allow lower-case letters, digits and ``_``."""
    return "fanout_" + "".join(c if c.isalnum() else "_" for c in env_name.lower())


def projection_parameters(bucket_name: str, table: StageTable = STAGES) -> dict[str, str]:
    """The table parameters that make Athena find a run's files without any partition."""
    return {
        "classification": "parquet",
        "projection.enabled": "true",
        f"projection.{PARTITION}.type": "injected",
        "storage.location.template": f"s3://{bucket_name}/{table.query_prefix}{PARTITION}=${{{PARTITION}}}/",
    }


def table_description(api: ApiDescription) -> str:
    return f"{api.name.capitalize()} records of every compacted run; query one run with WHERE run = '<run>'"


def location_of(template: str, run_id: str) -> str:
    """What Athena does with an injected value: substitute it, unescaped, into the template."""
    return template.replace(f"${{{PARTITION}}}", run_id)


class Analytics(Construct):
    """Attributes: ``database_name``, ``table_name``, ``workgroup``, ``results_bucket``,
    ``query_policy`` (attach it to whoever queries)."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        env_name: str,
        data_bucket: s3.IBucket,
        access_logs: s3.IBucket,
        removal_policy: RemovalPolicy,
        table: StageTable = STAGES,
        results_expiry: Duration = RESULTS_EXPIRY,
    ) -> None:
        super().__init__(scope, construct_id)
        name = glue_name(env_name)
        columns = glue_types(table.api)
        self.database_name = name
        self.table_name = TABLE_NAME

        database = glue.CfnDatabase(
            self,
            "Database",
            catalog_id=Aws.ACCOUNT_ID,
            database_input=glue.CfnDatabase.DatabaseInputProperty(
                name=name, description=f"fanout output, environment {env_name}"
            ),
        )
        records = glue.CfnTable(
            self,
            "Records",
            catalog_id=Aws.ACCOUNT_ID,
            database_name=name,
            table_input=glue.CfnTable.TableInputProperty(
                name=TABLE_NAME,
                description=table_description(table.api),
                table_type="EXTERNAL_TABLE",
                partition_keys=[glue.CfnTable.ColumnProperty(name=PARTITION, type="string")],
                parameters=projection_parameters(data_bucket.bucket_name, table),
                storage_descriptor=glue.CfnTable.StorageDescriptorProperty(
                    columns=[glue.CfnTable.ColumnProperty(name=c, type=t) for c, t in columns.items()],
                    location=f"s3://{data_bucket.bucket_name}/{table.query_prefix}",
                    input_format=SYMLINK_INPUT_FORMAT,
                    output_format=OUTPUT_FORMAT,
                    serde_info=glue.CfnTable.SerdeInfoProperty(serialization_library=PARQUET_SERDE),
                ),
            ),
        )
        records.add_resource_dependency(database)

        destroy = removal_policy == RemovalPolicy.DESTROY
        self.results_bucket = s3.Bucket(
            self,
            "Results",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=access_logs,
            server_access_logs_prefix=RESULTS_LOG_PREFIX,
            lifecycle_rules=[
                s3.LifecycleRule(id="expire-query-results", expiration=results_expiry),
                s3.LifecycleRule(
                    id="abort-incomplete-uploads", abort_incomplete_multipart_upload_after=Duration.days(1)
                ),
            ],
            removal_policy=removal_policy,
            auto_delete_objects=destroy,
        )
        self.workgroup = athena.CfnWorkGroup(
            self,
            "WorkGroup",
            name=name,
            description=f"fanout queries, environment {env_name}: results encrypted, expiring",
            recursive_delete_option=destroy,
            work_group_configuration=athena.CfnWorkGroup.WorkGroupConfigurationProperty(
                enforce_work_group_configuration=True,
                publish_cloud_watch_metrics_enabled=True,
                engine_version=athena.CfnWorkGroup.EngineVersionProperty(
                    selected_engine_version="Athena engine version 3"
                ),
                result_configuration=athena.CfnWorkGroup.ResultConfigurationProperty(
                    output_location=self.results_bucket.s3_url_for_object(RESULTS_PREFIX),
                    encryption_configuration=athena.CfnWorkGroup.EncryptionConfigurationProperty(
                        encryption_option="SSE_S3"
                    ),
                ),
            ),
        )
        self.query_policy = self._query_policy(data_bucket, table, name)
        CfnOutput(self, "AthenaWorkGroup", value=name)
        CfnOutput(self, "GlueTable", value=f"{name}.{TABLE_NAME}")
        CfnOutput(self, "QueryPolicyArn", value=self.query_policy.managed_policy_arn)

    def _query_policy(self, data_bucket: s3.IBucket, table: StageTable, name: str) -> iam.ManagedPolicy:
        """Query this table in this workgroup, and nothing else: read only the manifests and
        the run's output folder (where compaction writes its files, ``data/``), write only
        query results. The compaction bookkeeping (``compacted/``) is not the table's."""
        stack = Stack.of(self)
        catalog = stack.format_arn(service="glue", resource="catalog")
        database = stack.format_arn(service="glue", resource="database", resource_name=name)
        records = stack.format_arn(service="glue", resource="table", resource_name=f"{name}/{TABLE_NAME}")
        workgroup = stack.format_arn(service="athena", resource="workgroup", resource_name=name)
        readable = [table.query_prefix, table.output_prefix]
        results = self.results_bucket.arn_for_objects(f"{RESULTS_PREFIX}*")
        policy = iam.ManagedPolicy(
            self,
            "QueryPolicy",
            description=f"query the fanout table {name}.{TABLE_NAME} in workgroup {name}",
            statements=[
                iam.PolicyStatement(
                    sid="RunQueriesInTheWorkgroup",
                    actions=[
                        "athena:StartQueryExecution",
                        "athena:GetQueryExecution",
                        "athena:GetQueryResults",
                        "athena:StopQueryExecution",
                        "athena:GetWorkGroup",
                    ],
                    resources=[workgroup],
                ),
                iam.PolicyStatement(
                    sid="ReadTheTableDefinition",
                    actions=["glue:GetDatabase", "glue:GetTable"],
                    resources=[catalog, database, records],
                ),
                iam.PolicyStatement(
                    sid="ReadCompactedRuns",
                    actions=["s3:GetObject"],
                    resources=[data_bucket.arn_for_objects(f"{p}*") for p in readable],
                ),
                iam.PolicyStatement(
                    sid="ListCompactedRuns",
                    actions=["s3:ListBucket"],
                    resources=[data_bucket.bucket_arn],
                    conditions={"StringLike": {"s3:prefix": [f"{p}*" for p in readable]}},
                ),
                iam.PolicyStatement(
                    sid="WriteQueryResults",
                    actions=["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"],
                    resources=[results],
                ),
                iam.PolicyStatement(
                    sid="ListQueryResults",
                    actions=["s3:ListBucket"],
                    resources=[self.results_bucket.bucket_arn],
                    conditions={"StringLike": {"s3:prefix": [f"{RESULTS_PREFIX}*"]}},
                ),
                iam.PolicyStatement(
                    sid="LocateTheBuckets",
                    actions=["s3:GetBucketLocation"],
                    resources=[data_bucket.bucket_arn, self.results_bucket.bucket_arn],
                ),
            ],
        )
        data_arn = f"<{stack.resolve(data_bucket.node.default_child.logical_id)}.Arn>"  # type: ignore[union-attr]
        results_arn = f"<{stack.resolve(self.results_bucket.node.default_child.logical_id)}.Arn>"  # type: ignore[union-attr]
        for prefix in readable:
            acknowledge(
                policy,
                resource_finding("IAM5", f"{data_arn}/{prefix}*"),
                f"{prefix} holds one folder per run, created at run time; reading it is what "
                "querying the table means, and the grant stops at that prefix.",
            )
        acknowledge(
            policy,
            resource_finding("IAM5", f"{results_arn}/{RESULTS_PREFIX}*"),
            "Athena names each query's result object at run time; the grant is the "
            "workgroup's own results prefix in its own expiring bucket.",
        )
        return policy
