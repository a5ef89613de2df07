"""The synthesized stack of each deployed environment, asserted against the stage table
and that environment's settings (never against numbers typed here)."""

from __future__ import annotations

import json
from itertools import combinations
from typing import Any

from aws_cdk.assertions import Match

from fanout_aws import config as lambda_env
from fanout_aws import metrics
from fanout_core.learned_limit import kept_on_aws
from fanout_core.settings import environment_to_json
from fanout_core.stages import DATA_PREFIX, STAGES, Stage
from stacks.bundling import LAMBDA_PYTHON_VERSION
from stacks.constructs import dead_letters, monitoring
from stacks.constructs.stage_function import FAILURE_RETENTION, RUNTIME
from stacks.fanout_stack import stage_access

from .conftest import Synth, render


def _function_id(synth: Synth, stage: Stage) -> str:
    return synth.logical_id(synth.stack.stage_functions[stage.name].function)


def _queue_id(synth: Synth, stage: Stage) -> str:
    return synth.logical_id(synth.stack.stage_functions[stage.name].failure_queue)


def _bucket_id(synth: Synth) -> str:
    return synth.logical_id(synth.stack.bucket)


def overlapping(a: str, b: str) -> bool:
    """S3's rule for two prefix filters on the same event type (suffixes all equal here)."""
    return a.startswith(b) or b.startswith(a)


# --- functions ---------------------------------------------------------------------


def test_one_function_per_stage_with_the_environments_settings(synth: Synth) -> None:
    handlers = [
        r["Properties"]["Handler"]
        for r in synth.resources("AWS::Lambda::Function").values()
        if r["Properties"].get("Handler", "").startswith("fanout_aws.")
    ]
    # Each stage's function and its retry consumer (the same code), and the DLQ recorder.
    assert sorted(handlers) == sorted([*(2 * [s.handler for s in STAGES]), dead_letters.HANDLER])
    settings_json = environment_to_json(synth.settings)
    for stage in STAGES:
        s = synth.settings.stage(stage.name)
        synth.template.has_resource_properties(
            "AWS::Lambda::Function",
            {
                "Handler": stage.handler,
                "Runtime": RUNTIME.name,
                "Architectures": ["arm64"],
                "MemorySize": s.memory_mb,
                "Timeout": s.timeout_s,
                "ReservedConcurrentExecutions": s.reserved_concurrency,
                "LoggingConfig": Match.object_like({"LogFormat": "JSON"}),
                "Environment": {
                    "Variables": {
                        lambda_env.ENV_NAME: synth.env,
                        lambda_env.ENV_SETTINGS: settings_json,
                        lambda_env.ENV_BUCKET: {"Ref": _bucket_id(synth)},
                        lambda_env.ENV_STAGE: stage.name,
                        lambda_env.ENV_TOKEN_SECRET: synth.settings.token_secret_name,
                        lambda_env.ENV_RETRY_QUEUE_URL: {"Ref": _queue_id(synth, stage)},
                    }
                },
            },
        )


def test_runtime_matches_the_bundle_python() -> None:
    assert RUNTIME.name == f"python{LAMBDA_PYTHON_VERSION}"


def test_lambda_settings_round_trip_through_the_environment_variable(synth: Synth) -> None:
    from fanout_core.settings import environment_from_json

    fn = synth.resources("AWS::Lambda::Function")[_function_id(synth, STAGES[0])]
    text = fn["Properties"]["Environment"]["Variables"][lambda_env.ENV_SETTINGS]
    assert environment_from_json(synth.env, text) == synth.settings


def test_async_invoke_retries_event_age_and_failure_destination(synth: Synth) -> None:
    for stage in STAGES:
        s = synth.settings.stage(stage.name)
        synth.template.has_resource_properties(
            "AWS::Lambda::EventInvokeConfig",
            {
                "FunctionName": {"Ref": _function_id(synth, stage)},
                "MaximumRetryAttempts": s.retry_attempts,
                "MaximumEventAgeInSeconds": s.max_event_age_s,
                "DestinationConfig": {
                    "OnFailure": {"Destination": {"Fn::GetAtt": [_queue_id(synth, stage), "Arn"]}}
                },
            },
        )
    assert len(synth.resources("AWS::Lambda::EventInvokeConfig")) == len(STAGES)


def test_retry_queue_feeds_the_stages_retry_consumer_never_the_capped_function(synth: Synth) -> None:
    """A mapping on the stage's own function would be throttled whenever S3's invocations
    hold its whole reservation; the retry consumer's are never (its cap is its reservation)."""
    functions = synth.resources("AWS::Lambda::Function")
    for stage in STAGES:
        s = synth.settings.stage(stage.name)
        consumer = synth.logical_id(synth.stack.retry_consumers[stage.name].function)
        synth.template.has_resource_properties(
            "AWS::Lambda::EventSourceMapping",
            {
                "FunctionName": {"Ref": consumer},
                "EventSourceArn": {"Fn::GetAtt": [_queue_id(synth, stage), "Arn"]},
                "BatchSize": 1,
                "FunctionResponseTypes": ["ReportBatchItemFailures"],
                "ScalingConfig": {"MaximumConcurrency": s.retry_concurrency},
            },
        )
        props = functions[consumer]["Properties"]
        assert props["ReservedConcurrentExecutions"] == s.retry_concurrency
        assert props["Handler"] == stage.handler
        main = functions[_function_id(synth, stage)]["Properties"]
        assert props["Role"] == main["Role"]  # one stage, one set of grants
        assert props["Environment"] == main["Environment"]
        assert synth.resources("AWS::Lambda::EventInvokeConfig")  # S3 invokes only the stage function
        assert not [
            c
            for c in synth.resources("AWS::Lambda::EventInvokeConfig").values()
            if c["Properties"]["FunctionName"] == {"Ref": consumer}
        ]
    recorder = {"Ref": synth.logical_id(synth.stack.dead_letters.function)}
    mapped = [
        m["Properties"]["FunctionName"]
        for m in synth.resources("AWS::Lambda::EventSourceMapping").values()
        if m["Properties"]["FunctionName"] != recorder
    ]
    assert len(mapped) == len(STAGES)
    assert not [f for f in mapped if f in [{"Ref": _function_id(synth, st)} for st in STAGES]]


def test_failure_queues_are_encrypted_tls_only_and_have_a_dlq(synth: Synth) -> None:
    for stage in STAGES:
        sf = synth.stack.stage_functions[stage.name]
        queue = synth.doc["Resources"][_queue_id(synth, stage)]["Properties"]
        assert queue["SqsManagedSseEnabled"] is True
        assert queue["MessageRetentionPeriod"] == FAILURE_RETENTION.to_seconds()
        assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {
            "Fn::GetAtt": [synth.logical_id(sf.failure_dlq), "Arn"]
        }
        # The queue feeds the function: visibility at least 6x its timeout (AWS guidance).
        assert queue["VisibilityTimeout"] >= 6 * synth.settings.stage(stage.name).timeout_s
        assert queue["RedrivePolicy"]["maxReceiveCount"] >= 5
    for policy in synth.resources("AWS::SQS::QueuePolicy").values():
        statements = policy["Properties"]["PolicyDocument"]["Statement"]
        assert any(
            s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
            for s in statements
        )
    assert len(synth.resources("AWS::SQS::QueuePolicy")) == len(synth.resources("AWS::SQS::Queue"))


def test_log_groups_have_retention(synth: Synth) -> None:
    for stage in STAGES:
        sf = synth.stack.stage_functions[stage.name]
        group = synth.doc["Resources"][synth.logical_id(sf.log_group)]["Properties"]
        assert group["RetentionInDays"] >= 14
        synth.template.has_resource_properties(
            "AWS::Lambda::Function",
            {
                "Handler": stage.handler,
                "LoggingConfig": Match.object_like({"LogGroup": {"Ref": synth.logical_id(sf.log_group)}}),
            },
        )


# --- notifications -----------------------------------------------------------------


def test_stage_table_prefixes_never_overlap() -> None:
    for a, b in combinations(STAGES, 2):
        assert not overlapping(a.input_prefix, b.input_prefix), (a.name, b.name)


def _notification_filters(synth: Synth) -> list[tuple[str, str, str, str]]:
    (notif,) = synth.resources("Custom::S3BucketNotifications").values()
    assert notif["Properties"]["BucketName"] == {"Ref": _bucket_id(synth)}
    found = []
    for cfg in notif["Properties"]["NotificationConfiguration"]["LambdaFunctionConfigurations"]:
        rules = {r["Name"]: r["Value"] for r in cfg["Filter"]["Key"]["FilterRules"]}
        assert cfg["Events"] == ["s3:ObjectCreated:*"]
        found.append((cfg["LambdaFunctionArn"]["Fn::GetAtt"][0], rules["prefix"], rules["suffix"], ""))
    return found


def test_notification_filters_equal_the_stage_table(synth: Synth) -> None:
    found = {(fn, prefix, suffix) for fn, prefix, suffix, _ in _notification_filters(synth)}
    expected = {(_function_id(synth, s), s.input_prefix, ".json") for s in STAGES}
    assert found == expected


def test_synthesized_notification_filters_never_overlap(synth: Synth) -> None:
    filters = _notification_filters(synth)
    assert len(filters) == len(STAGES)
    for (_, p1, s1, _), (_, p2, s2, _) in combinations(filters, 2):
        assert not (overlapping(p1, p2) and overlapping(s1, s2)), (p1, p2)


def test_s3_may_invoke_each_stage_function_from_this_bucket_only(synth: Synth) -> None:
    for stage in STAGES:
        synth.template.has_resource_properties(
            "AWS::Lambda::Permission",
            {
                "Action": "lambda:InvokeFunction",
                "Principal": "s3.amazonaws.com",
                "FunctionName": {"Fn::GetAtt": [_function_id(synth, stage), "Arn"]},
                "SourceArn": {"Fn::GetAtt": [_bucket_id(synth), "Arn"]},
                "SourceAccount": {"Ref": "AWS::AccountId"},
            },
        )
    s3_permissions = [
        r
        for r in synth.resources("AWS::Lambda::Permission").values()
        if r["Properties"]["Principal"] == "s3.amazonaws.com"
    ]
    assert len(s3_permissions) == len(STAGES)


# --- IAM ---------------------------------------------------------------------------


def _policy_statements(synth: Synth, stage: Stage) -> list[dict[str, Any]]:
    role = synth.stack.stage_functions[stage.name].function.role
    assert role is not None
    role_id = synth.logical_id(role)
    statements = []
    for policy in synth.resources("AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"]["Roles"]:
            statements += policy["Properties"]["PolicyDocument"]["Statement"]
    assert statements
    return statements


def _actions(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return [action] if isinstance(action, str) else list(action)


def _resources(statement: dict[str, Any]) -> list[str]:
    res = statement["Resource"]
    return [render(r) for r in (res if isinstance(res, list) else [res])]


def test_s3_access_is_scoped_to_the_stages_prefixes(synth: Synth) -> None:
    bucket = f"<{_bucket_id(synth)}.Arn>"
    for stage in STAGES:
        access = stage_access(stage, STAGES, limits=kept_on_aws(synth.settings))
        s3_statements = [
            s for s in _policy_statements(synth, stage) if any(a.startswith("s3:") for a in _actions(s))
        ]
        by_action: dict[str, set[str]] = {}
        for s in s3_statements:
            assert s["Effect"] == "Allow"
            for action in _actions(s):
                by_action.setdefault(action, set()).update(_resources(s))
        assert set(by_action) == {"s3:GetObject", "s3:PutObject", "s3:ListBucket"}, stage.name
        assert by_action["s3:GetObject"] == {f"{bucket}/{p}" for p in access.read + access.limits}
        assert by_action["s3:PutObject"] == {f"{bucket}/{p}" for p in access.write + access.limits}
        assert by_action["s3:ListBucket"] == {bucket}


def test_stage_functions_may_list_the_bucket_without_a_prefix_condition(synth: Synth) -> None:
    """A HEAD of a missing key answers 404 only to a caller that may ListBucket for a request
    without ``s3:prefix``: with a prefix-conditioned grant every done-marker check of a new
    task would be a 403, settled by a listing billed at 12x the HEAD."""
    bucket = f"<{_bucket_id(synth)}.Arn>"
    for stage in STAGES:
        listing = [s for s in _policy_statements(synth, stage) if "s3:ListBucket" in _actions(s)]
        assert [(_resources(s), s.get("Condition")) for s in listing] == [([bucket], None)], stage.name


def test_prefix_grants_follow_the_stage_table() -> None:
    """Reads its input, writes its output, its done markers and failure records, nothing
    of another stage; warriors alone writes manifest parts back to its own prefix; the
    listing stages alone keep plans, each only its own."""
    for stage in STAGES:
        access = stage_access(stage, STAGES)
        output = STAGES.output_prefix_of(stage)
        assert f"{stage.input_prefix}*" in access.read
        assert {
            f"{output}*",
            f"done/{stage.input_prefix}*",
            f"failed/{stage.input_prefix}*",
        } <= set(access.write)
        others = [s for s in STAGES if s is not stage]
        for prefix in (*access.read, *access.write):
            assert prefix.endswith("*")
            for other in others:
                if prefix.startswith(other.input_prefix):
                    # Writing the next stage's input is this stage's output.
                    assert other.input_prefix == output, (stage.name, prefix)
            assert prefix not in ("*", "/*")
        extra = set(access.write) - {
            f"{output}*",
            f"done/{stage.input_prefix}*",
            f"failed/{stage.input_prefix}*",
        }
        plans = {f"plans/{stage.input_prefix}*"} if stage is not STAGES.leaf else set()
        if stage.name == "warriors":
            assert extra == {f"{stage.input_prefix}run=*"} | plans
        else:
            assert extra == plans
        if plans:
            assert plans <= set(access.read)
        if output == DATA_PREFIX:
            assert f"{DATA_PREFIX}*" in access.read
        else:
            assert not any(p.startswith(DATA_PREFIX) for p in access.read + access.write)


def test_what_a_stage_checks_for_existence_it_may_head() -> None:
    """``S3Storage.exists`` is a HeadObject, which needs ``s3:GetObject`` on the key: its
    own done markers, failure records and task objects, nothing of another stage's."""
    for stage in STAGES:
        access = stage_access(stage, STAGES)
        for prefix in (stage.input_prefix, f"done/{stage.input_prefix}", f"failed/{stage.input_prefix}"):
            assert f"{prefix}*" in access.read, (stage.name, prefix)
        others = [f"done/{o.input_prefix}*" for o in STAGES if o is not stage]
        assert not set(others) & set(access.read), stage.name


def test_each_function_reads_only_its_own_secret(synth: Synth) -> None:
    for stage in STAGES:
        secret_statements = [
            s
            for s in _policy_statements(synth, stage)
            if any(a.startswith("secretsmanager:") for a in _actions(s))
        ]
        assert secret_statements
        for s in secret_statements:
            assert set(_actions(s)) <= {"secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"}
            for resource in _resources(s):
                assert resource.endswith(f":secret:{synth.settings.token_secret_name}-??????")


def test_no_stage_policy_grants_wildcard_actions_or_resources(synth: Synth) -> None:
    for stage in STAGES:
        for s in _policy_statements(synth, stage):
            assert all(not a.endswith(":*") and a != "*" for a in _actions(s)), s
            assert all(r != "*" for r in _resources(s)), s
            queue_arn = f"<{_queue_id(synth, stage)}.Arn>"
            if any(a.startswith("sqs:") for a in _actions(s)):
                assert _resources(s) == [queue_arn]


# --- bucket ------------------------------------------------------------------------


def test_bucket_encryption_public_access_and_access_logs(synth: Synth) -> None:
    data = synth.doc["Resources"][_bucket_id(synth)]["Properties"]
    logs_id = synth.logical_id(synth.stack.storage.access_logs)
    for props in (data, synth.doc["Resources"][logs_id]["Properties"]):
        assert props["BucketEncryption"] == {
            "ServerSideEncryptionConfiguration": [
                {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
            ]
        }
        assert props["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }
        assert props["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    assert data["LoggingConfiguration"]["DestinationBucketName"] == {"Ref": logs_id}


def test_every_bucket_denies_plain_http(synth: Synth) -> None:
    buckets = set(synth.resources("AWS::S3::Bucket"))
    covered = set()
    for policy in synth.resources("AWS::S3::BucketPolicy").values():
        statements = policy["Properties"]["PolicyDocument"]["Statement"]
        if any(
            s["Effect"] == "Deny"
            and s["Action"] == "s3:*"
            and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
            for s in statements
        ):
            covered.add(policy["Properties"]["Bucket"]["Ref"])
    assert covered == buckets


def test_lifecycle_expires_intermediate_prefixes_but_never_data(synth: Synth) -> None:
    rules = synth.doc["Resources"][_bucket_id(synth)]["Properties"]["LifecycleConfiguration"]["Rules"]
    expiring = {r["Prefix"]: r["ExpirationInDays"] for r in rules if "ExpirationInDays" in r}
    expected = {s.input_prefix for s in STAGES} | {"done/", "failed/", "archive/", "plans/"}
    assert set(expiring) == expected
    for prefix in expiring:
        assert not overlapping(prefix, DATA_PREFIX)
    # A rule without a prefix applies to the whole bucket: none may expire objects.
    assert all("Prefix" in r for r in rules if "ExpirationInDays" in r)
    assert all(r["Status"] == "Enabled" for r in rules)


def test_removal_policy_keeps_data_where_settings_say_retain(synth: Synth) -> None:
    data = synth.doc["Resources"][_bucket_id(synth)]
    auto_delete = synth.resources("Custom::S3AutoDeleteObjects")
    if synth.settings.removal_policy == "retain":
        assert data["DeletionPolicy"] == "Retain"
        assert data["UpdateReplacePolicy"] == "Retain"
        assert auto_delete == {}
    else:
        assert data["DeletionPolicy"] == "Delete"
        assert {r["Properties"]["BucketName"]["Ref"] for r in auto_delete.values()} == set(
            synth.resources("AWS::S3::Bucket")
        )


def test_prod_retains_and_dev_destroys(synth_env: Any) -> None:
    assert synth_env("prod").settings.removal_policy == "retain"
    assert synth_env("dev").settings.removal_policy == "destroy"


# --- monitoring and outputs ----------------------------------------------------------


def test_alarms_per_stage_on_errors_throttles_and_queue_depth(synth: Synth) -> None:
    alarms = list(synth.resources("AWS::CloudWatch::Alarm").values())
    topic_ref = {"Ref": synth.logical_id(synth.stack.monitoring.topic)}
    for stage in STAGES:
        fn_dim = [{"Name": "FunctionName", "Value": {"Ref": _function_id(synth, stage)}}]
        queue_dim = [{"Name": "QueueName", "Value": {"Fn::GetAtt": [_queue_id(synth, stage), "QueueName"]}}]
        for namespace, metric, dims in (
            ("AWS/Lambda", "Errors", fn_dim),
            ("AWS/Lambda", "Throttles", fn_dim),
            ("AWS/SQS", "ApproximateNumberOfMessagesVisible", queue_dim),
        ):
            matching = [
                a["Properties"]
                for a in alarms
                if a["Properties"].get("Namespace") == namespace
                and a["Properties"].get("MetricName") == metric
                and a["Properties"].get("Dimensions") == dims
            ]
            assert len(matching) == 1, (stage.name, metric)
            assert matching[0]["AlarmActions"] == [topic_ref]
    synth.template.has_resource_properties("AWS::SNS::Topic", {"KmsMasterKeyId": Match.any_value()})


def test_dashboard_shows_every_stages_lambda_and_pipeline_metrics(synth: Synth) -> None:
    (dashboard,) = synth.resources("AWS::CloudWatch::Dashboard").values()
    body = json.dumps(render(dashboard["Properties"]["DashboardBody"]))
    for stage in STAGES:
        for metric in ("Invocations", "Errors", "Throttles", "Duration", "ConcurrentExecutions"):
            assert metric in body
        for metric in metrics.METRIC_NAMES:
            dims = f'\\"Environment\\",\\"{synth.env}\\",\\"Stage\\",\\"{stage.name}\\"'
            assert f'[\\"{metrics.NAMESPACE}\\",\\"{metric}\\",{dims}' in body
    assert dashboard["Properties"]["DashboardName"] == f"Fanout-{synth.env}"


def test_monitoring_matches_the_handlers_emf() -> None:
    assert monitoring.NAMESPACE == metrics.NAMESPACE
    assert monitoring.EMF_METRICS == metrics.METRIC_NAMES


def test_outputs_bucket_and_dashboard(synth: Synth) -> None:
    synth.template.has_output("BucketName", {"Value": {"Ref": _bucket_id(synth)}})
    synth.template.has_output("DashboardName", Match.any_value())
    url = render(synth.doc["Outputs"]["DashboardUrl"]["Value"])
    assert url.endswith(f"#dashboards:name=Fanout-{synth.env}")


def test_s3_events_retry_queues_and_dlqs_are_outputs_named_as_fanout_queues_reads_them(synth: Synth) -> None:
    from fanout import queues

    out = synth.doc["Outputs"]
    for stage in STAGES:
        fid, sf = stage.function_id, synth.stack.stage_functions[stage.name]
        assert out[queues.RETRY_QUEUE_URL_OUTPUT.format(function_id=fid)]["Value"] == {
            "Ref": synth.logical_id(sf.failure_queue)
        }
        assert out[queues.DLQ_URL_OUTPUT.format(function_id=fid)]["Value"] == {
            "Ref": synth.logical_id(sf.failure_dlq)
        }
        # No stage queue in this engine: fanout.queues reads that as engine s3_events.
        assert queues.QUEUE_URL_OUTPUT.format(function_id=fid) not in out


def test_stack_environment_follows_settings(synth: Synth) -> None:
    assert synth.stack.stack_name == f"Fanout-{synth.env}"
    if synth.settings.account:
        assert synth.stack.account == synth.settings.account
    if synth.settings.region:
        assert synth.stack.region == synth.settings.region


def test_function_environment_fits_lambdas_4_kb_limit(synth: Synth) -> None:
    for stage in STAGES:
        variables = synth.doc["Resources"][_function_id(synth, stage)]["Properties"]["Environment"][
            "Variables"
        ]
        # Tokens resolve to at most a queue URL or bucket name; 200 bytes covers either.
        size = sum(len(k) + (len(v) if isinstance(v, str) else 200) for k, v in variables.items())
        assert size < 4096, size


def _all_statements(synth: Synth) -> list[dict[str, Any]]:
    return [
        s
        for p in synth.resources("AWS::IAM::Policy").values()
        for s in p["Properties"]["PolicyDocument"]["Statement"]
    ]


def test_pipeline_roles_have_no_managed_policy_and_cannot_create_log_groups(synth: Synth) -> None:
    functions = [sf.function for sf in synth.stack.stage_functions.values()] + [
        synth.stack.dead_letters.function
    ]
    roles = {
        synth.doc["Resources"][synth.logical_id(f)]["Properties"]["Role"]["Fn::GetAtt"][0] for f in functions
    }
    for role in roles:
        assert "ManagedPolicyArns" not in synth.doc["Resources"][role]["Properties"], role
    for statement in _all_statements(synth):
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        if any(a.startswith("logs:") for a in actions):
            assert "logs:CreateLogGroup" not in actions
            assert statement["Resource"] != "*"
