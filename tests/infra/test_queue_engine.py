"""Engine ``queue``: the synthesized stack of a dev-shaped (``dev-queue`` in cdk.json)
and a prod-shaped (``prod`` with ``engine: queue``) environment, asserted against the
stage table and the settings; and what stays the same as ``s3_events``."""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest
from cfnlint.api import ManualArgs, lint

from fanout_aws import config as lambda_env
from fanout_core.errors import SettingsError
from fanout_core.settings import ENGINES, environment_from_json, environment_to_json, parse_environment
from fanout_core.stages import STAGES, Stage
from stacks import build_app, cdk_json_context

from .conftest import SKIP_BUNDLING, Synth, render, synthesize
from .test_policy_checks import CFN_LINT_IGNORED, LINT_REGIONS, _plugin

QUEUE_ENVIRONMENTS = ("dev-queue", "prod-queue")
"""``dev-queue`` is in cdk.json; ``prod-queue`` is prod's settings with the queue engine."""
ESM_MIN, ESM_MAX = 2, 1000

_CACHE: dict[str, Synth] = {}


def _queue_context() -> dict[str, Any]:
    environments = json.loads(json.dumps(cdk_json_context()["environments"]))
    environments["prod-queue"] = {**environments["prod"], "engine": "queue"}
    return {"environments": environments}


@pytest.fixture(scope="session", params=QUEUE_ENVIRONMENTS)
def qsynth(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Synth:
    env = request.param
    if env not in _CACHE:
        _CACHE[env] = synthesize(env, tmp_path_factory.mktemp(f"cdk-{env}"), context=_queue_context())
    return _CACHE[env]


def _function_id(synth: Synth, stage: Stage) -> str:
    return synth.logical_id(synth.stack.stage_functions[stage.name].function)


def _queue_id(synth: Synth, stage: Stage) -> str:
    return synth.logical_id(synth.stack.stage_queues[stage.name].queue)


def _retry_queue_id(synth: Synth, stage: Stage) -> str:
    return synth.logical_id(synth.stack.stage_queues[stage.name].retry_queue)


def _dlq_id(synth: Synth, stage: Stage) -> str:
    return synth.logical_id(synth.stack.stage_queues[stage.name].dlq)


def _bucket_id(synth: Synth) -> str:
    return synth.logical_id(synth.stack.bucket)


# --- settings ----------------------------------------------------------------------


def test_engine_defaults_to_s3_events_and_round_trips() -> None:
    assert ENGINES == ("s3_events", "queue", "stepfunctions")
    assert parse_environment("x", {}).engine == "s3_events"
    env = parse_environment("x", {"engine": "queue"})
    assert environment_from_json("x", environment_to_json(env)) == env
    assert environment_from_json("x", environment_to_json(env)).engine == "queue"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"engine": "sqs"},
            r"environments\.x\.engine must be one of s3_events, queue, stepfunctions, got 'sqs'",
        ),
        ({"engine": ["queue"]}, r"environments\.x\.engine must be one of"),
        (
            {"engine": "queue", "stages": {"warriors": {"reserved_concurrency": 1}}},
            r"environments\.x\.stages\.warriors\.reserved_concurrency is 1, but engine queue .* at least 2",
        ),
    ],
)
def test_a_bad_engine_is_refused_naming_the_setting(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        parse_environment("x", raw)


def test_a_cap_of_one_is_fine_for_s3_events() -> None:
    env = parse_environment("x", {"stages": {"warriors": {"reserved_concurrency": 1}}})
    assert env.stage("warriors").reserved_concurrency == 1


def test_cdk_json_has_a_queue_environment_shaped_like_dev() -> None:
    environments = cdk_json_context()["environments"]
    queue_envs = [n for n, raw in environments.items() if raw.get("engine") == "queue"]
    assert "dev-queue" in queue_envs
    dev, dev_queue = dict(environments["dev"]), dict(environments["dev-queue"])
    for raw in (dev, dev_queue):
        raw.pop("token_secret_name")
    assert dev_queue.pop("engine") == "queue"
    assert dev_queue == dev


def test_bad_engine_stops_synthesis() -> None:
    context = _queue_context()
    context["environments"]["dev"]["engine"] = "lambda"
    with pytest.raises(SettingsError, match=r"environments\.dev\.engine"):
        build_app(context={"env": "dev", **context, **SKIP_BUNDLING})


# --- notifications -----------------------------------------------------------------


def _notification_config(synth: Synth) -> dict[str, Any]:
    (notif,) = synth.resources("Custom::S3BucketNotifications").values()
    assert notif["Properties"]["BucketName"] == {"Ref": _bucket_id(synth)}
    return notif


def test_notifications_go_to_each_stages_queue_not_to_functions(qsynth: Synth) -> None:
    config = _notification_config(qsynth)["Properties"]["NotificationConfiguration"]
    assert set(config) == {"QueueConfigurations"}
    found = set()
    for cfg in config["QueueConfigurations"]:
        assert cfg["Events"] == ["s3:ObjectCreated:*"]
        rules = {r["Name"]: r["Value"] for r in cfg["Filter"]["Key"]["FilterRules"]}
        found.add((cfg["QueueArn"]["Fn::GetAtt"][0], rules["prefix"], rules["suffix"]))
    assert found == {(_queue_id(qsynth, s), s.input_prefix, ".json") for s in STAGES}
    for (_, p1, _), (_, p2, _) in combinations(found, 2):
        assert not (p1.startswith(p2) or p2.startswith(p1))


def test_notifications_are_configured_after_the_queue_policies(qsynth: Synth) -> None:
    """S3 checks it may send to a queue when the configuration is put."""
    depends = set(_notification_config(qsynth)["DependsOn"])
    for stage in STAGES:
        (policy_id,) = [
            k
            for k, p in qsynth.resources("AWS::SQS::QueuePolicy").items()
            if p["Properties"]["Queues"] == [{"Ref": _queue_id(qsynth, stage)}]
        ]
        assert policy_id in depends


def test_no_async_path_in_queue_mode(qsynth: Synth) -> None:
    assert qsynth.resources("AWS::Lambda::EventInvokeConfig") == {}
    assert not [
        r
        for r in qsynth.resources("AWS::Lambda::Permission").values()
        if r["Properties"]["Principal"] == "s3.amazonaws.com"
    ]
    for sf in qsynth.stack.stage_functions.values():
        assert sf.failure_queue is None and sf.failure_dlq is None


def _policy_of(synth: Synth, queue_id: str) -> list[dict[str, Any]]:
    (policy,) = [
        p
        for p in synth.resources("AWS::SQS::QueuePolicy").values()
        if p["Properties"]["Queues"] == [{"Ref": queue_id}]
    ]
    return list(policy["Properties"]["PolicyDocument"]["Statement"])


def test_queue_policy_lets_only_this_bucket_in_this_account_send(qsynth: Synth) -> None:
    for stage in STAGES:
        statements = _policy_of(qsynth, _queue_id(qsynth, stage))
        allows = [s for s in statements if s["Effect"] == "Allow"]
        assert allows == [
            {
                "Sid": "ThisBucketsNotificationsOnly",
                "Effect": "Allow",
                "Principal": {"Service": "s3.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": {"Fn::GetAtt": [_queue_id(qsynth, stage), "Arn"]},
                "Condition": {
                    "ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": [_bucket_id(qsynth), "Arn"]}},
                    "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}},
                },
            }
        ]
        assert any(
            s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
            for s in statements
        )
        # Nobody but Lambda (through the function's role) reads the DLQ; S3 may not send to it.
        dlq = _policy_of(qsynth, _dlq_id(qsynth, stage))
        assert [s["Effect"] for s in dlq] == ["Deny"]


# --- queues and mappings -----------------------------------------------------------


def test_each_stage_queue_has_a_dlq_and_visibility_of_six_timeouts(qsynth: Synth) -> None:
    for stage in STAGES:
        s = qsynth.settings.stage(stage.name)
        dlq = qsynth.doc["Resources"][_dlq_id(qsynth, stage)]["Properties"]
        for queue_id in (_queue_id(qsynth, stage), _retry_queue_id(qsynth, stage)):
            queue = qsynth.doc["Resources"][queue_id]["Properties"]
            assert queue["VisibilityTimeout"] >= 6 * s.timeout_s
            assert queue["VisibilityTimeout"] <= 12 * 3600  # SQS's maximum
            # The handler counts each receive as an attempt: the last receive before the
            # DLQ finds the task past max_attempts and records its failure.
            assert queue["RedrivePolicy"] == {
                "deadLetterTargetArn": {"Fn::GetAtt": [_dlq_id(qsynth, stage), "Arn"]},
                "maxReceiveCount": qsynth.settings.max_attempts + 1,
            }
            # A moved message keeps its enqueue time: the DLQ must keep it longer.
            assert dlq["MessageRetentionPeriod"] > queue["MessageRetentionPeriod"] >= 4 * 24 * 3600
            assert queue["SqsManagedSseEnabled"] is True
        assert dlq["MessageRetentionPeriod"] <= 14 * 24 * 3600
        assert dlq["SqsManagedSseEnabled"] is True
    # Per stage: its queue, its retry queue, one DLQ for both.
    assert len(qsynth.resources("AWS::SQS::Queue")) == 3 * len(STAGES)


def test_each_function_consumes_its_queue_capped_at_the_stages_concurrency(qsynth: Synth) -> None:
    recorder = {"Ref": qsynth.logical_id(qsynth.stack.dead_letters.function)}
    mappings = [
        m
        for m in qsynth.resources("AWS::Lambda::EventSourceMapping").values()
        if m["Properties"]["FunctionName"] != recorder
    ]
    assert len(mappings) == 2 * len(STAGES)  # the stage queue's and the retry queue's
    functions = qsynth.resources("AWS::Lambda::Function")
    for stage in STAGES:
        s = qsynth.settings.stage(stage.name)
        (mapping,) = [
            m for m in mappings if m["Properties"]["FunctionName"] == {"Ref": _function_id(qsynth, stage)}
        ]
        props = mapping["Properties"]
        assert props["EventSourceArn"] == {"Fn::GetAtt": [_queue_id(qsynth, stage), "Arn"]}
        assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert props["BatchSize"] == 1
        cap = props["ScalingConfig"]["MaximumConcurrency"]
        assert cap == s.reserved_concurrency
        assert ESM_MIN <= cap <= ESM_MAX
        fn = functions[_function_id(qsynth, stage)]["Properties"]
        # The reservation is the hard ceiling, never below the mapping's cap.
        assert fn["ReservedConcurrentExecutions"] >= cap
        assert fn["Environment"]["Variables"][lambda_env.ENV_RETRY_QUEUE_URL] == {
            "Ref": _retry_queue_id(qsynth, stage)
        }
        consumer = qsynth.stack.retry_consumers[stage.name]
        (retry_mapping,) = [
            m
            for m in mappings
            if m["Properties"]["FunctionName"] == {"Ref": qsynth.logical_id(consumer.function)}
        ]
        assert retry_mapping["Properties"]["EventSourceArn"] == {
            "Fn::GetAtt": [_retry_queue_id(qsynth, stage), "Arn"]
        }
        assert retry_mapping["Properties"]["ScalingConfig"]["MaximumConcurrency"] == s.retry_concurrency
        consumer_fn = functions[qsynth.logical_id(consumer.function)]["Properties"]
        assert consumer_fn["ReservedConcurrentExecutions"] == s.retry_concurrency


def test_each_function_may_send_retries_to_its_own_queue_only(qsynth: Synth) -> None:
    for stage in STAGES:
        role = qsynth.stack.stage_functions[stage.name].function.role
        assert role is not None
        role_id = qsynth.logical_id(role)
        statements = [
            st
            for p in qsynth.resources("AWS::IAM::Policy").values()
            if {"Ref": role_id} in p["Properties"]["Roles"]
            for st in p["Properties"]["PolicyDocument"]["Statement"]
        ]
        sends = [st for st in statements if "sqs:SendMessage" in json.dumps(st["Action"])]
        assert sends
        for st in sends:
            assert st["Resource"] == {"Fn::GetAtt": [_retry_queue_id(qsynth, stage), "Arn"]}


def test_queue_urls_are_stack_outputs_named_as_fanout_queues_reads_them(qsynth: Synth) -> None:
    from fanout import queues
    from stacks import fanout_stack

    assert queues.QUEUE_URL_OUTPUT == fanout_stack.QUEUE_URL_OUTPUT
    assert queues.RETRY_QUEUE_URL_OUTPUT == fanout_stack.RETRY_QUEUE_URL_OUTPUT
    assert queues.DLQ_URL_OUTPUT == fanout_stack.DLQ_URL_OUTPUT
    out = qsynth.doc["Outputs"]
    for stage in STAGES:
        fid = stage.function_id
        assert out[queues.QUEUE_URL_OUTPUT.format(function_id=fid)]["Value"] == {
            "Ref": _queue_id(qsynth, stage)
        }
        assert out[queues.RETRY_QUEUE_URL_OUTPUT.format(function_id=fid)]["Value"] == {
            "Ref": _retry_queue_id(qsynth, stage)
        }
        assert out[queues.DLQ_URL_OUTPUT.format(function_id=fid)]["Value"] == {"Ref": _dlq_id(qsynth, stage)}


@pytest.mark.parametrize("env", ["dev", "dev-queue", "prod"])
def test_the_cli_names_each_environments_stack_as_the_app_does(env: str) -> None:
    from fanout import queues
    from stacks.fanout_stack import stack_name

    assert queues.STACK_NAME.format(env=env) == stack_name(env)


# --- monitoring --------------------------------------------------------------------


def _dashboard(synth: Synth) -> list[dict[str, Any]]:
    (dashboard,) = synth.resources("AWS::CloudWatch::Dashboard").values()
    body = render(dashboard["Properties"]["DashboardBody"])
    return list(json.loads(body)["widgets"])


def _graph(widgets: list[dict[str, Any]], title: str) -> dict[str, Any]:
    (widget,) = [w for w in widgets if w["properties"].get("title") == title]
    return dict(widget["properties"])


def test_dashboard_shows_backpressure_per_stage_in_queue_mode(qsynth: Synth) -> None:
    widgets = _dashboard(qsynth)
    for stage in STAGES:
        queue_name = f"<{_queue_id(qsynth, stage)}.QueueName>"
        depth = json.dumps(_graph(widgets, f"{stage.name}: queue depth")["metrics"])
        for metric in (
            "ApproximateNumberOfMessagesVisible",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ):
            assert metric in depth
        assert queue_name in depth
        age = json.dumps(_graph(widgets, f"{stage.name}: oldest message age (s)")["metrics"])
        assert "ApproximateAgeOfOldestMessage" in age and queue_name in age
        consumers = _graph(widgets, f"{stage.name}: consumers in flight")
        assert "ConcurrentExecutions" in json.dumps(consumers["metrics"])
        cap = qsynth.settings.stage(stage.name).reserved_concurrency
        assert consumers["annotations"]["horizontal"][0]["value"] == cap


def test_dashboard_shows_backpressure_per_stage_in_s3_events_mode(synth: Synth) -> None:
    widgets = _dashboard(synth)
    for stage in STAGES:
        depth = json.dumps(_graph(widgets, f"{stage.name}: async events and retry queue")["metrics"])
        assert "AsyncEventsReceived" in depth and "AsyncEventsDropped" in depth
        age = json.dumps(_graph(widgets, f"{stage.name}: age of waiting events")["metrics"])
        assert "AsyncEventAge" in age and "ApproximateAgeOfOldestMessage" in age
        consumers = _graph(widgets, f"{stage.name}: consumers in flight")
        assert "ConcurrentExecutions" in json.dumps(consumers["metrics"])


def test_a_backlog_alarms_only_when_nothing_drains_it(qsynth: Synth) -> None:
    alarms = qsynth.resources("AWS::CloudWatch::Alarm")
    for stage in STAGES:
        alarm = qsynth.stack.monitoring.alarms[stage.name].failure_queue_depth
        props = alarms[qsynth.logical_id(alarm)]["Properties"]
        (expression,) = [m for m in props["Metrics"] if "Expression" in m]
        assert expression["Expression"] == "IF(waiting >= 1 AND consumed == 0, 1, 0)"
        names = {m["MetricStat"]["Metric"]["MetricName"] for m in props["Metrics"] if "MetricStat" in m}
        assert names == {"ApproximateNumberOfMessagesVisible", "NumberOfMessagesDeleted"}
        dead = qsynth.stack.monitoring.alarms[stage.name].dead_letters
        dims = alarms[qsynth.logical_id(dead)]["Properties"]["Dimensions"]
        assert dims == [{"Name": "QueueName", "Value": {"Fn::GetAtt": [_dlq_id(qsynth, stage), "QueueName"]}}]


# --- the same checks every environment passes --------------------------------------


def test_cdk_nag_clean_in_queue_mode(qsynth: Synth) -> None:
    plugin = _plugin(qsynth.nag_report)
    assert plugin["conclusion"] == "success"
    assert plugin.get("violations", []) == []
    used = {(v["acknowledgedAt"], v["acknowledgedId"]) for v in plugin.get("suppressedViolations", [])}
    for ack in qsynth.acknowledgements:
        assert (ack.path, ack.rule) in used, ack


def test_cfn_lint_passes_in_queue_mode(qsynth: Synth) -> None:
    matches = lint(json.dumps(qsynth.doc), config=ManualArgs(regions=LINT_REGIONS))
    problems = [m for m in matches if m.rule.id not in CFN_LINT_IGNORED]
    assert problems == [], "\n".join(str(m) for m in problems)


def test_what_the_engine_changes_and_what_it_does_not(qsynth: Synth, synth_env: Any) -> None:
    base = synth_env(qsynth.env.removesuffix("-queue"))
    by_type = {
        t: (len(base.resources(t)), len(qsynth.resources(t)))
        for t in {r["Type"] for r in (*base.doc["Resources"].values(), *qsynth.doc["Resources"].values())}
    }
    changed = {t: n for t, n in by_type.items() if n[0] != n[1]}
    n = len(STAGES)
    assert changed == {
        "AWS::Lambda::EventInvokeConfig": (n, 0),
        "AWS::Lambda::Permission": (n, 0),
        # the stage queue beside the retry queue and the DLQ, and its mapping;
        "AWS::SQS::Queue": (2 * n, 3 * n),
        "AWS::SQS::QueuePolicy": (2 * n, 3 * n),
        # (each engine also maps every DLQ to the dead-letter recorder)
        "AWS::Lambda::EventSourceMapping": (2 * n, 3 * n),
    }
    # The same functions, settings and S3 grants: the engine is only the wiring.
    for stage in STAGES:
        a = base.doc["Resources"][_function_id(base, stage)]["Properties"]
        b = qsynth.doc["Resources"][_function_id(qsynth, stage)]["Properties"]
        for prop in ("Handler", "MemorySize", "Timeout", "ReservedConcurrentExecutions", "Runtime"):
            assert a[prop] == b[prop]


def test_synth_of_the_queue_environment_works_through_app_py(tmp_path: Path) -> None:
    """``cdk synth -c env=dev-queue`` is ``python app.py`` with that context."""
    _app, stack = build_app(context={"env": "dev-queue", **SKIP_BUNDLING}, outdir=str(tmp_path), nag=False)
    assert stack.settings.engine == "queue"
    assert stack.stack_name == "Fanout-dev-queue"
