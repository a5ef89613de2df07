"""Alarms that can ring: the topic's key lets CloudWatch publish, and each stage has an
alarm on every way a run goes wrong (dead letters, failure records, 429s, errors,
throttles, stuck retries, recursive-loop stops)."""

from __future__ import annotations

from typing import Any

import pytest

from fanout_core.errors import SettingsError
from fanout_core.settings import parse_environment
from fanout_core.stages import STAGES
from stacks.constructs.alarm_topic import CLOUDWATCH, PUBLISH_KEY_ACTIONS

from .conftest import Synth, synthesize


def _topic(synth: Synth) -> dict[str, Any]:
    (topic,) = synth.resources("AWS::SNS::Topic").values()
    return topic["Properties"]


def _key_of_topic(synth: Synth) -> dict[str, Any]:
    ref = _topic(synth)["KmsMasterKeyId"]
    # A customer-managed key in this stack: a GetAtt/Ref to an AWS::KMS::Key, never an
    # alias string such as "alias/aws/sns", whose policy CloudWatch cannot be granted.
    assert isinstance(ref, dict), f"topic key is {ref!r}, not a key of this stack"
    logical_id = ref.get("Ref") or ref["Fn::GetAtt"][0]
    key = synth.doc["Resources"][logical_id]
    assert key["Type"] == "AWS::KMS::Key"
    return key["Properties"]


def test_alarm_topic_key_is_customer_managed_and_rotated(synth: Synth) -> None:
    assert _key_of_topic(synth)["EnableKeyRotation"] is True


def test_alarm_topic_key_lets_cloudwatch_publish(synth: Synth) -> None:
    statements = _key_of_topic(synth)["KeyPolicy"]["Statement"]
    granted = [
        s for s in statements if s.get("Effect") == "Allow" and s.get("Principal") == {"Service": CLOUDWATCH}
    ]
    assert granted, "no key policy statement for CloudWatch"
    actions = {a for s in granted for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert set(PUBLISH_KEY_ACTIONS) <= actions


def test_every_alarm_publishes_to_the_alarm_topic(synth: Synth) -> None:
    topic_ref = {"Ref": synth.logical_id(synth.stack.monitoring.topic)}
    alarms = synth.resources("AWS::CloudWatch::Alarm")
    assert alarms
    for name, alarm in alarms.items():
        assert alarm["Properties"]["AlarmActions"] == [topic_ref], name


def _metrics_of(props: dict[str, Any]) -> list[dict[str, Any]]:
    """Every metric an alarm reads, as ``{Namespace, MetricName, Dimensions}``."""
    if "MetricName" in props:
        return [props]
    return [q["MetricStat"]["Metric"] for q in props.get("Metrics", []) if "MetricStat" in q]


def _alarms_on(synth: Synth, metric: str) -> list[dict[str, Any]]:
    return [
        a["Properties"]
        for a in synth.resources("AWS::CloudWatch::Alarm").values()
        if any(m["MetricName"] == metric for m in _metrics_of(a["Properties"]))
    ]


@pytest.mark.parametrize(
    "metric",
    [
        "ApproximateNumberOfMessagesVisible",  # DLQ depth (and the retry queue's)
        "Failures",  # failure records written (EMF)
        "ConfigurationErrors",  # EMF
        "Throttled429",  # the 429 share
        "Errors",
        "Throttles",
        "ApproximateAgeOfOldestMessage",
        "RecursiveInvocationsDropped",
    ],
)
def test_each_stage_has_an_alarm_on(synth: Synth, metric: str) -> None:
    assert len(_alarms_on(synth, metric)) >= len(STAGES), metric


def test_emf_alarms_are_scoped_to_the_environment(synth: Synth) -> None:
    emf = [m for a in _alarms_on(synth, "Failures") for m in _metrics_of(a) if m["Namespace"] == "Fanout"]
    assert len(emf) == len(STAGES)
    for metric in emf:
        dims = {d["Name"]: d["Value"] for d in metric["Dimensions"]}
        assert dims["Environment"] == synth.env
        assert dims["Stage"] in {s.name for s in STAGES}


def test_alarm_email_subscribes_the_address(tmp_path: Any, environments_context: dict[str, Any]) -> None:
    environments_context["dev"]["alarm_email"] = "ops@example.com"
    synth = synthesize("dev", tmp_path, context={"environments": environments_context})
    subscriptions = [r["Properties"] for r in synth.resources("AWS::SNS::Subscription").values()]
    assert [(s["Protocol"], s["Endpoint"]) for s in subscriptions] == [("email", "ops@example.com")]
    assert subscriptions[0]["TopicArn"] == {"Ref": synth.logical_id(synth.stack.monitoring.topic)}


@pytest.mark.parametrize("bad", ["", "ops", "a@b", "a@b.com,c@d.com", "Ops <ops@example.com>"])
def test_alarm_email_must_be_one_address(bad: str) -> None:
    with pytest.raises(SettingsError, match="alarm_email"):
        parse_environment("dev", {"alarm_email": bad})
