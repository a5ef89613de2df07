"""The dead-letter recorder: it consumes every stage's DLQ and may only check done/
and create failed/ records."""

from __future__ import annotations

from typing import Any

import pytest

from fanout_core.settings import receives_before_dead_letter
from fanout_core.stages import STAGES
from stacks.constructs.dead_letters import HANDLER

from .conftest import Synth, render


def _recorder_id(synth: Synth) -> str:
    return synth.logical_id(synth.stack.dead_letters.function)


def _dlq_ids(synth: Synth) -> set[str]:
    if synth.stack.stage_queues:
        return {synth.logical_id(q.dlq) for q in synth.stack.stage_queues.values()}
    return {synth.logical_id(f.failure_dlq) for f in synth.stack.stage_functions.values()}


def _check_consumes_every_dlq(synth: Synth) -> None:
    mappings = [
        m["Properties"]
        for m in synth.resources("AWS::Lambda::EventSourceMapping").values()
        if m["Properties"]["FunctionName"] == {"Ref": _recorder_id(synth)}
    ]
    assert {m["EventSourceArn"]["Fn::GetAtt"][0] for m in mappings} == _dlq_ids(synth)
    assert len(mappings) == len(STAGES)
    for m in mappings:
        assert m["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


def test_the_recorder_consumes_every_stages_dead_letter_queue(synth: Synth) -> None:
    _check_consumes_every_dlq(synth)


def test_the_recorder_consumes_the_queue_engines_dead_letter_queues(synth_env: Any) -> None:
    _check_consumes_every_dlq(synth_env("dev-queue"))


def test_the_recorder_runs_the_recorder_handler_without_the_secret(synth: Synth) -> None:
    fn = synth.doc["Resources"][_recorder_id(synth)]["Properties"]
    assert fn["Handler"] == HANDLER
    # FANOUT_API: the description whose stage table names the dead letters' tasks.
    assert set(fn["Environment"]["Variables"]) == {
        "FANOUT_ENV_NAME",
        "FANOUT_BUCKET",
        "FANOUT_MAX_ATTEMPTS",
        "FANOUT_API",
    }


@pytest.mark.parametrize("env", ["dev", "prod", "dev-queue"])
def test_the_recorder_knows_how_many_receives_a_dead_letter_had(synth_env: Any, env: str) -> None:
    """Every queue feeding a stage moves a message to its DLQ after max_attempts + 1
    receives, which is what the recorder computes from the max_attempts it is given."""
    synth = synth_env(env)
    fn = synth.doc["Resources"][_recorder_id(synth)]["Properties"]
    max_attempts = int(fn["Environment"]["Variables"]["FANOUT_MAX_ATTEMPTS"])
    assert max_attempts == synth.settings.max_attempts
    counts = {
        q["Properties"]["RedrivePolicy"]["maxReceiveCount"]
        for q in synth.resources("AWS::SQS::Queue").values()
        if "RedrivePolicy" in q["Properties"]
    }
    assert counts == {receives_before_dead_letter(max_attempts)}
    assert fn["LoggingConfig"]["LogFormat"] == "JSON"


def _statements(synth: Synth) -> list[dict[str, Any]]:
    role = synth.doc["Resources"][_recorder_id(synth)]["Properties"]["Role"]["Fn::GetAtt"][0]
    policies = [
        p["Properties"]
        for p in synth.resources("AWS::IAM::Policy").values()
        if {"Ref": role} in p["Properties"]["Roles"]
    ]
    return [s for p in policies for s in p["PolicyDocument"]["Statement"]]


@pytest.mark.parametrize("action", ["s3:PutObject", "s3:ListBucket"])
def test_the_recorders_s3_access_is_done_and_failed_only(synth: Synth, action: str) -> None:
    s3 = [s for s in _statements(synth) if any(a.startswith("s3:") for a in _list(s["Action"]))]
    assert {a for s in s3 for a in _list(s["Action"])} == {"s3:PutObject", "s3:ListBucket"}
    (statement,) = [s for s in s3 if action in _list(s["Action"])]
    if action == "s3:PutObject":
        assert [str(render(r)).rpartition("/")[2] for r in _list(statement["Resource"])] == ["*"]
        assert [str(render(r)).split("/", 1)[1] for r in _list(statement["Resource"])] == ["failed/*"]
    else:
        assert statement["Condition"] == {"StringLike": {"s3:prefix": ["done/*", "failed/*"]}}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_every_dead_letter_queue_keeps_messages_longer_than_its_source(synth_env: Any) -> None:
    for env in ("dev", "prod", "dev-queue"):
        synth = synth_env(env)
        queues = synth.resources("AWS::SQS::Queue")
        sources = [q for q in queues.values() if "RedrivePolicy" in q["Properties"]]
        # queue engine: the stage queue and the retry queue share one DLQ per stage
        assert len(sources) == (2 if env.endswith("-queue") else 1) * len(STAGES)
        for source in sources:
            dlq_id = source["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
            kept = queues[dlq_id]["Properties"]["MessageRetentionPeriod"]
            assert kept > source["Properties"]["MessageRetentionPeriod"], (env, dlq_id)
