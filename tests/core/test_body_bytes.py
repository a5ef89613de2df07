"""Hermes' task bodies keep their bytes: the literals below were written by the bodies of
fanout before API descriptions (one class per stage), so a run started before the change
and one started after write the same objects."""

from __future__ import annotations

from task_bodies import data_group, data_groups_task, troop, troops_task, warriors_part

from fanout_core.bodies import manifest_body
from fanout_core.stages import STAGES

WARRIORS = b'{"run_id":"r1","warriors":["w-2","a+b","\xe6\x88\xa6\xe5\xa3\xab"]}'
TROOPS = (
    b'{"run_id":"r1","troops":[{"service":"auth","troop_id":"t 1"},{"service":"s\xc3\xb6z",'
    b'"troop_id":"\xce\xa9\xce\xbc\xce\xad\xce\xb3\xce\xb1"}],"warrior_id":"o\'brien"}'
)
DATA_GROUPS = (
    b'{"data_groups":[{"data_group_id":"g-1","name":"metrics 1"},{"data_group_id":"100%",'
    b'"name":"\xe6\x88\xa6\xe5\xa3\xab"}],"run_id":"r1","service":"billing","troop_id":"a+b","warrior_id":"w"}'
)


def test_the_warriors_part_keeps_its_bytes() -> None:
    assert warriors_part("r1", ("w-2", "a+b", "戦士")).to_bytes() == WARRIORS


def test_the_troops_task_keeps_its_bytes() -> None:
    assert troops_task("r1", "o'brien", (troop("t 1", "auth"), troop("Ωμέγα", "söz"))).to_bytes() == TROOPS


def test_the_data_groups_task_keeps_its_bytes() -> None:
    body = data_groups_task(
        "r1", "w", "a+b", "billing", (data_group("g-1", "metrics 1"), data_group("100%", "戦士"))
    )
    assert body.to_bytes() == DATA_GROUPS


def test_the_manifest_keeps_its_bytes() -> None:
    assert manifest_body(None) == b'{"warriors":"all"}'
    assert manifest_body(["w1", "a b"]) == b'{"warriors":["w1","a b"]}'


def test_each_stage_reads_back_the_bytes_it_wrote_before() -> None:
    for name, raw in (("warriors", WARRIORS), ("troops", TROOPS), ("data_groups", DATA_GROUPS)):
        assert STAGES.named(name).body.from_bytes(raw).to_bytes() == raw
